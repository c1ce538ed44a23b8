"""Hostile request bodies get a clear 400 JSON error before any upstream request, through gunicorn."""

from __future__ import annotations

import pytest
import requests

DEPTH = 100_000  # far past Python's recursion limit, well under the 1 MiB body limit

NESTED = {
    "arrays": "[" * DEPTH + "]" * DEPTH,
    "objects": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "inside a field": '{"message": "hi", "messages": ' + "[" * DEPTH + "]" * DEPTH + "}",
}

SURROGATE = '"\\ud800"'  # a lone surrogate, as JSON can spell it and Python then decodes it

BAD_STRINGS = {
    "conversation_id": '{"message": "hi", "conversation_id": ' + SURROGATE + "}",
    "message": '{"message": ' + SURROGATE + "}",
    "messages": '{"messages": [{"role": "user", "content": "a' + SURROGATE[1:] + "}]}",
    "model": '{"message": "hi", "model": ' + SURROGATE + "}",
    "conversation_id with NUL": '{"message": "hi", "conversation_id": "a\\u0000b"}',
    "conversation_id with a slash": '{"message": "hi", "conversation_id": "a/b"}',
}


@pytest.fixture
def server(start_server):
    return start_server()


def _post(server, body: str) -> requests.Response:
    return requests.post(
        server.url + "/api/stream", data=body.encode(), headers={"Content-Type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize("shape", list(NESTED))
def test_deeply_nested_json_is_a_400_not_a_500(server, fake_openai, shape) -> None:
    response = _post(server, NESTED[shape])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert fake_openai.requests == []


@pytest.mark.parametrize("field", list(BAD_STRINGS))
def test_strings_that_cannot_be_stored_or_sent_are_a_400_before_the_upstream(server, fake_openai, field) -> None:
    response = _post(server, BAD_STRINGS[field])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert fake_openai.requests == []
    # The worker is fine afterwards.
    ok = requests.post(server.url + "/api/stream", json={"message": "hi"}, timeout=30)
    assert ok.status_code == 200 and '"type":"completion"' in ok.text
