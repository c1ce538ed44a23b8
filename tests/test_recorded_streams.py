"""Every recorded provider stream, replayed from a loopback fake, reaches the user truthfully.

The recordings (``../shared/fixtures/provider-streams``, provenance in its ``SOURCES.md``) are real
provider responses. Each is sent whole-event by whole-event, in small pieces, and in awkward pieces
(cut inside every multi-byte UTF-8 character and between every CR and LF), through the Python API
and through ``/api/stream``. The answer text and the reasoning are read from the recording here,
independently of the provider code; finish reason, usage, refusals and in-stream errors are what
each recording says, written out below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from bupple_flask import BuppleEngine, BuppleError
from bupple_flask.chunks import estimate_tokens
from bupple_flask.testing import Script

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "provider-streams"
PROVIDER = {"openai": "openai", "anthropic": "claude", "gemini": "gemini"}
QUESTION = "Why is the sky blue?"
REFUSED = {"reason": "refusal", "stage": "response"}


@dataclass(frozen=True)
class Says:
    """What a recording says about how the reply ended (``usage`` None: it reports none, so it is estimated)."""

    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    declined: dict[str, str] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def used(i: int, o: int, **more: int) -> dict[str, Any]:
    return {"input_tokens": i, "output_tokens": o, **more}


SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."
EXPECTED: dict[str, Says] = {
    "openai/plain_text_usage.sse": Says("stop", used(14, 30)),
    "openai/length_usage.sse": Says("length", used(79, 1)),
    "openai/refusal.sse": Says("refusal", used(79, 11), declined=REFUSED),
    "openai/tool_calls.sse": Says("tool_calls", used(76, 24)),
    "openai/n3_choices.sse": Says("stop", used(79, 42)),
    "openai/azure_prompt_filter.sse": Says("stop", used(424, 100)),
    "openai/xai_reasoning_content.sse": Says("stop", None),
    "openai/groq_x_groq_usage_length.sse": Says("length", used(417, 12)),
    "openai/deepseek_reasoner.sse": Says("stop", used(6, 169, reasoning_tokens=117)),
    "openai/openrouter_processing.sse": Says("stop", used(15, 10)),
    "openai/error_in_200_stream.sse": Says(error="provider_error"),
    "anthropic/sdk_basic.sse": Says("end_turn", used(11, 6)),
    "anthropic/sdk_tool_use.sse": Says("tool_use", used(377, 65)),
    "anthropic/recorded_thinking_text.sse": Says("end_turn", used(18, 240)),
    "anthropic/docs_thinking_text.sse": Says("end_turn", None, extra={"reasoning_signature": SIGNATURE}),
    "anthropic/max_tokens.sse": Says("max_tokens", used(1596, 30)),
    "anthropic/recorded_api_error.sse": Says(error="provider_error"),
    "anthropic/docs_overloaded_midstream.sse": Says(error="provider_unavailable"),
    "gemini/basic_crlf.sse": Says("STOP", used(7, 10)),
    "gemini/thought_summary.sse": Says("STOP", used(10, 48 + 540, reasoning_tokens=540)),
    "gemini/prompt_blocked.sse": Says("SAFETY", None, declined={"reason": "SAFETY", "stage": "prompt"}),
    "gemini/finish_safety.sse": Says("SAFETY", used(10, 66), declined={"reason": "SAFETY", "stage": "response"}),
    "gemini/error_mid_stream.sse": Says(error="provider_error"),
    "gemini/utf8_cjk.sse": Says("STOP", None),
    "gemini/long_lf_capture.sse": Says("STOP", used(4, 5947 + 2042, reasoning_tokens=2042)),
    "gemini/max_tokens_cjk_reframed.sse": Says("MAX_TOKENS", used(18967, 8219)),
}


def recording(relative: str) -> bytes:
    path = RECORDINGS / relative
    if not path.exists():
        pytest.skip(f"the shared provider recordings are not on this machine ({RECORDINGS})")
    return path.read_bytes()


def test_every_recording_is_expected() -> None:
    if not RECORDINGS.exists():
        pytest.skip(f"the shared provider recordings are not on this machine ({RECORDINGS})")
    found = {str(p.relative_to(RECORDINGS)) for p in RECORDINGS.rglob("*.sse")}
    assert found == set(EXPECTED)


# -- an independent reading of what each recording carries ----------------------------------------


def answer_and_reasoning(folder: str, raw: bytes) -> tuple[str, str]:
    """The answer text (refusal text included) and the reasoning, read from the ``data:`` lines."""
    text, thinking = [], []
    for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
        payload = line[5:].strip() if line.startswith("data:") else ""
        if not payload.startswith("{"):
            continue
        event = json.loads(payload)
        if folder == "openai":
            for choice in event.get("choices") or ():
                if choice.get("index", 0) == 0:
                    delta = choice.get("delta") or {}
                    text += [delta.get("content") or "", delta.get("refusal") or ""]
                    thinking.append(delta.get("reasoning_content") or "")
        elif folder == "anthropic" and event.get("type") == "content_block_delta":
            delta = event["delta"]
            text.append(delta.get("text", "") if delta["type"] == "text_delta" else "")
            thinking.append(delta.get("thinking", "") if delta["type"] == "thinking_delta" else "")
        elif folder == "gemini":
            for part in (event.get("candidates") or [{}])[0].get("content", {}).get("parts", ()):
                (thinking if part.get("thought") else text).append(part.get("text", ""))
    return "".join(text), "".join(thinking)


def expected_usage(says: Says, text: str, reasoning: str) -> dict[str, Any]:
    if says.usage is not None:
        return says.usage
    return {"input_tokens": estimate_tokens(len(QUESTION)),
            "output_tokens": estimate_tokens(len(text) + len(reasoning)), "estimated": True}


# -- how the bytes are cut ------------------------------------------------------------------------


def small_pieces(raw: bytes) -> list[bytes]:
    return [raw[i:i + 7] for i in range(0, len(raw), 7)]


def awkward_pieces(raw: bytes) -> list[bytes]:
    """Cut inside every multi-byte UTF-8 character and between every CR and its LF."""
    cuts = [i for i in range(1, len(raw)) if raw[i] & 0xC0 == 0x80 or (raw[i - 1] == 13 and raw[i] == 10)]
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in pairwise(bounds)]


def replay(relative: str, cut: str) -> Script:
    raw = recording(relative)
    pieces = {"events": raw, "small": small_pieces(raw), "awkward": awkward_pieces(raw)}[cut]
    return Script(replay=pieces)


CASES = [pytest.param(name, cut, id=f"{name}-{cut}") for name in EXPECTED for cut in ("events", "small", "awkward")]


def test_the_awkward_cuts_do_cut_inside_characters_and_crlf() -> None:
    pieces = awkward_pieces("data: é\r\n\r\n".encode())
    assert pieces == [b"data: \xc3", b"\xa9\r", b"\n\r", b"\n"]


# -- through the Python API -----------------------------------------------------------------------


@pytest.mark.parametrize("name,cut", CASES)
def test_a_recording_through_the_engine(app, fakes, name: str, cut: str) -> None:
    folder = name.split("/")[0]
    says, (text, reasoning) = EXPECTED[name], answer_and_reasoning(folder, recording(name))
    fakes[PROVIDER[folder]].script = replay(name, cut)
    got_text, got_reasoning, final, error = [], [], None, None
    with app.app_context():
        try:
            for chunk in BuppleEngine().ai(PROVIDER[folder]).with_reasoning().stream(QUESTION):
                if chunk.get("type") == "reasoning":
                    got_reasoning.append(chunk["content"])
                elif chunk["done"]:
                    final = chunk
                else:
                    got_text.append(chunk["content"])
        except BuppleError as exc:
            error = exc.code
    assert "".join(got_text) == text
    assert "".join(got_reasoning) == reasoning
    if says.error is not None:
        assert (error, final) == (says.error, None)
        return
    assert error is None and final is not None
    assert final["finish_reason"] == says.finish_reason
    assert final["usage"] == expected_usage(says, text, reasoning)
    assert final.get("declined") == says.declined
    for key, value in says.extra.items():
        assert final[key] == value


def test_reasoning_is_kept_apart_and_not_yielded_unless_asked(app, fake_openai) -> None:
    name = "openai/deepseek_reasoner.sse"
    text, reasoning = answer_and_reasoning("openai", recording(name))
    fake_openai.script = replay(name, "events")
    with app.app_context():
        stream = BuppleEngine().ai("openai").stream(QUESTION)
        chunks = list(stream)
    assert all("type" not in chunk for chunk in chunks)
    assert "".join(c["content"] for c in chunks) == stream.content == text
    assert stream.reasoning == reasoning and reasoning not in text


# -- through /api/stream ----------------------------------------------------------------------------


def sse_payloads(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("name,cut", CASES)
def test_a_recording_through_api_stream(make_app, fakes, name: str, cut: str) -> None:
    folder = name.split("/")[0]
    says, (text, reasoning) = EXPECTED[name], answer_and_reasoning(folder, recording(name))
    fakes[PROVIDER[folder]].script = replay(name, cut)
    client = make_app(BUPPLE_STREAM_REASONING="on").test_client()
    response = client.post("/api/stream", json={"message": QUESTION, "provider": PROVIDER[folder]})
    events = sse_payloads(response.get_data(as_text=True))
    assert "".join(e["content"] for e in events if e["type"] == "chunk") == text
    assert "".join(e["content"] for e in events if e["type"] == "reasoning") == reasoning
    last = events[-1]
    if says.error is not None:
        assert (last["type"], last["code"]) == ("error", says.error)
        return
    assert last["type"] == "completion"
    assert last["finish_reason"] == says.finish_reason
    assert last["usage"] == expected_usage(says, text, reasoning)
    assert last.get("declined") == says.declined


def test_reasoning_over_http_follows_the_setting_and_the_request(make_app, fake_openai) -> None:
    name = "openai/xai_reasoning_content.sse"

    def kinds(app, **body: Any) -> tuple[int, set[str]]:
        fake_openai.script = replay(name, "events")
        response = app.test_client().post("/api/stream", json={"message": QUESTION, **body})
        if response.status_code != 200:
            return response.status_code, set()
        return 200, {e["type"] for e in sse_payloads(response.get_data(as_text=True))}

    off, on, on_request = (make_app(BUPPLE_STREAM_REASONING=mode) for mode in ("off", "on", "request"))
    assert kinds(off) == (200, {"status", "chunk", "completion"})
    assert kinds(off, reasoning=True)[0] == 400
    assert "reasoning" in kinds(on)[1] and "reasoning" not in kinds(on, reasoning=False)[1]
    assert "reasoning" not in kinds(on_request)[1] and "reasoning" in kinds(on_request, reasoning=True)[1]


def test_the_stored_reply_keeps_reasoning_only_when_configured(make_app, fake_anthropic) -> None:
    name = "anthropic/docs_thinking_text.sse"
    _, reasoning = answer_and_reasoning("anthropic", recording(name))
    for store in (False, True):
        fake_anthropic.script = replay(name, "events")
        client = make_app(BUPPLE_STORE_REASONING=store).test_client()
        body = {"message": QUESTION, "provider": "claude"}  # a new conversation
        response = client.post("/api/stream", json=body)
        assert "completion" in response.get_data(as_text=True)
        conversation = response.headers["X-Bupple-Conversation-Id"]
        stored = client.get(f"/api/conversations/{conversation}/messages").get_json()["messages"][-1]
        assert stored["content"].startswith("The greatest common divisor")
        if store:
            assert stored["metadata"]["reasoning"] == reasoning
            assert stored["metadata"]["reasoning_signature"] == SIGNATURE
        else:
            assert "reasoning" not in stored["metadata"] and reasoning not in json.dumps(stored)


def test_a_declined_reply_is_stored_as_declined(client, fake_gemini) -> None:
    fake_gemini.script = replay("gemini/prompt_blocked.sse", "events")
    body = {"message": QUESTION, "provider": "gemini"}
    events = sse_payloads(client.post("/api/stream", json=body).get_data(as_text=True))
    assert events[-1]["declined"] == {"reason": "SAFETY", "stage": "prompt"}
    stored = client.get(f"/api/conversations/{events[0]['conversation_id']}/messages").get_json()["messages"][-1]
    assert stored["metadata"]["declined"] == {"reason": "SAFETY", "stage": "prompt"}


def test_usage_of_a_cut_stream_is_an_estimate_and_says_so(app, fake_anthropic) -> None:
    fake_anthropic.script = Script(replay=recording("anthropic/recorded_thinking_text.sse"), drop_after=8)
    with app.app_context():
        stream = BuppleEngine().ai("claude").stream(QUESTION)
        with pytest.raises(BuppleError):
            for _ in stream:
                pass
    seen = len(stream.content) + len(stream.reasoning)
    assert seen > 0
    assert stream.usage == {"input_tokens": 18, "output_tokens": estimate_tokens(seen), "estimated": True}
