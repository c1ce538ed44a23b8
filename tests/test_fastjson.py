"""The provider's JSON is parsed by orjson when installed, with exactly json's results and errors."""

from __future__ import annotations

import json

import pytest

from bupple_flask.fastjson import loads_with

SAME = [
    '{"choices":[{"index":0,"delta":{"content":" the"},"finish_reason":null}],"usage":null}',
    '{"a":NaN,"b":Infinity,"c":-Infinity}',  # json accepts these, orjson does not
    '{"u64":18446744073709551615,"i64":-9223372036854775808}',  # the 64-bit limits
    '{"lone":"\\ud800 x \\udfff","pair":"\\ud83d\\ude00"}',  # lone surrogate escapes
    '{"x":1.5e300,"y":-0.0,"z":0.1,"k":"\\u00e9\\n\\t","dup":1,"dup":2}',
    '[1,"two",null,true,false,{"nested":[[]]}]',
    '"just a string"',
    "  42  ",
]
BROKEN = ["", "{", '{"a":1,}', "[1 2]", "nul", '{"a":"\\x"}', '"\\ud800', "{} {}"]


def parsers():
    orjson = pytest.importorskip("orjson")
    return loads_with(orjson.loads)


@pytest.mark.parametrize("text", SAME)
def test_orjson_first_gives_what_json_gives(text: str) -> None:
    loads = parsers()
    got, expected = loads(text), json.loads(text)
    assert repr(got) == repr(expected)  # repr: NaN != NaN, and -0.0 == 0.0
    assert type(got) is type(expected)


@pytest.mark.parametrize("text", BROKEN)
def test_orjson_first_raises_what_json_raises(text: str) -> None:
    loads = parsers()
    with pytest.raises(json.JSONDecodeError) as raised:
        loads(text)
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    assert str(raised.value) == str(expected.value)


def test_the_one_difference_an_integer_beyond_64_bits_is_a_float() -> None:
    loads = parsers()
    assert loads('{"n":123456789012345678901234567890}') == {"n": 1.2345678901234568e29}


def test_without_orjson_json_parses() -> None:
    assert loads_with(None) is json.loads
