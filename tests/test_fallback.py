"""Provider fallback before the first token, through gunicorn + gevent with the fake providers."""

from __future__ import annotations

import pytest
from flask import Flask

from bupple_flask import BuppleEngine, ChatPolicy, ProviderUnavailableError
from bupple_flask.testing import Script
from tests.conftest import provider_config
from tests.server import Visitor


def sent_history(name: str, body: dict) -> list[tuple[str, str]]:
    """The (role, text) turns a fake received, read from its own wire format."""
    if name == "gemini":
        return [("assistant" if c["role"] == "model" else c["role"], "".join(p["text"] for p in c["parts"]))
                for c in body["contents"]]  # fmt: skip
    turns = []
    for message in body["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(block.get("text", "") for block in content)
        turns.append((message["role"], text))
    return turns


HISTORY = [("user", "First question"), ("assistant", "Hello there!"), ("user", "Second question")]


def _first_turn(start_server, first: str, second: str) -> tuple[Visitor, str]:
    """A server falling back from ``first`` to ``second``, and a conversation with one turn answered by ``first``."""
    server = start_server(BUPPLE_FALLBACKS=f"{first}>{second}")
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    visitor.stream({"message": "First question", "conversation_id": conversation, "provider": first})
    return visitor, conversation


def _assert_second_answered_and_stored(visitor, conversation, fakes, completion, first: str, second: str) -> None:
    """``second`` got the same history in its own format, and the stored reply says it answered for ``first``."""
    assert sent_history(second, fakes[second].requests[-1].json) == HISTORY
    stored = visitor.messages(conversation)
    assert [(m["role"], m["content"]) for m in stored][-2:] == [("user", "Second question"), ("assistant", "Second answer")]
    metadata = stored[-1]["metadata"]
    assert metadata["ending"] == "complete" and metadata["provider"] == second
    assert metadata["model"] == completion["model"] and metadata["fallback"]["from"] == first


@pytest.mark.parametrize("first,second", [("openai", "claude"), ("claude", "gemini"), ("gemini", "openai")])
def test_fallback_on_503_before_the_first_token(start_server, fakes, first, second) -> None:
    visitor, conversation = _first_turn(start_server, first, second)
    fakes[first].script = Script(fail_before=503)
    fakes[second].script = Script(chunks=["Second", " answer"])
    payloads = visitor.stream({"message": "Second question", "conversation_id": conversation, "provider": first})
    assert [p["type"] for p in payloads] == ["status", "chunk", "chunk", "completion"]
    completion = payloads[-1]
    assert completion["provider"] == second and completion["model"]
    assert completion["fallback"]["from"] == first and completion["fallback"]["reason"] == "provider_unavailable"
    assert completion["fallback"]["failed"][0]["status"] == 503
    _assert_second_answered_and_stored(visitor, conversation, fakes, completion, first, second)


# The code of the error each fake sends inside its 200 stream (Script.fail_mid_after): OpenAI's server_error,
# Anthropic's overloaded_error, Gemini's 503 UNAVAILABLE.
IN_STREAM_CODE = {"openai": "provider_error", "claude": "provider_unavailable", "gemini": "provider_unavailable"}


@pytest.mark.parametrize("first,second", [("openai", "gemini"), ("claude", "openai"), ("gemini", "claude")])
def test_fallback_on_an_in_stream_error_before_the_first_text(start_server, fakes, first, second) -> None:
    visitor, conversation = _first_turn(start_server, first, second)
    fakes[first].script = Script(chunks=["never", " sent"], fail_mid_after=0)  # a 200, then its error event
    fakes[second].script = Script(chunks=["Second", " answer"])
    payloads = visitor.stream({"message": "Second question", "conversation_id": conversation, "provider": first})
    assert [p["type"] for p in payloads] == ["status", "chunk", "chunk", "completion"]
    assert "".join(p["content"] for p in payloads if p["type"] == "chunk") == "Second answer"
    completion = payloads[-1]
    assert completion["provider"] == second and completion["model"]
    assert completion["fallback"]["from"] == first and completion["fallback"]["reason"] == IN_STREAM_CODE[first]
    assert completion["fallback"]["failed"][0]["provider"] == first
    assert fakes[first].streams[-1].completed  # the failing stream was a 200 that sent its error, not a refusal
    _assert_second_answered_and_stored(visitor, conversation, fakes, completion, first, second)


def test_an_in_stream_error_then_an_open_error_exhausts_the_chain(start_server, fakes) -> None:
    server = start_server(BUPPLE_FALLBACKS="claude>gemini>openai")
    fakes["claude"].script = Script(fail_mid_after=0)
    fakes["gemini"].script = Script(fail_before=503)
    fakes["openai"].script = Script(chunks=["third", " time"])
    payloads = Visitor(server.url).stream({"message": "Hi", "provider": "claude"})
    completion = payloads[-1]
    assert completion["type"] == "completion" and completion["provider"] == "openai"
    assert [f["provider"] for f in completion["fallback"]["failed"]] == ["claude", "gemini"]
    fakes["openai"].script = Script(fail_mid_after=0)
    payloads = Visitor(server.url).stream({"message": "Hi", "provider": "claude"})
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "provider_error"  # the last one's error
    assert [p["type"] for p in payloads].count("chunk") == 0


@pytest.mark.parametrize("provider", ["claude", "gemini"])
def test_no_fallback_after_the_first_text_on_an_in_stream_error(start_server, fakes, provider) -> None:
    other = "openai"
    server = start_server(BUPPLE_FALLBACKS=f"{provider}>{other}")
    fakes[provider].script = Script(chunks=["seen", " not seen"], fail_mid_after=1)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    payloads = visitor.stream({"message": "Hi", "conversation_id": conversation, "provider": provider})
    assert [p["type"] for p in payloads] == ["status", "chunk", "error"]
    assert payloads[-1]["code"] == IN_STREAM_CODE[provider]
    assert fakes[other].requests == []
    stored = visitor.messages(conversation)[-1]
    assert stored["content"] == "seen" and stored["metadata"]["ending"] == "error"
    assert stored["metadata"]["provider"] == provider and "fallback" not in stored["metadata"]


def test_no_fallback_after_the_first_token(start_server, fakes) -> None:
    server = start_server(BUPPLE_FALLBACKS="openai>claude")
    fakes["openai"].script = Script(chunks=["partial", " text", " more"], fail_mid_after=2)
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    payloads = visitor.stream({"message": "Hi", "conversation_id": conversation, "provider": "openai"})
    assert [p["type"] for p in payloads] == ["status", "chunk", "chunk", "error"]
    assert fakes["claude"].requests == []
    stored = visitor.messages(conversation)[-1]
    assert stored["content"] == "partial text" and stored["metadata"]["ending"] == "error"
    assert stored["metadata"]["provider"] == "openai" and "fallback" not in stored["metadata"]


def test_exhausted_chain_reports_the_last_error(start_server, fakes) -> None:
    server = start_server(BUPPLE_FALLBACKS="openai>claude>gemini")
    fakes["openai"].script = Script(fail_before=503)
    fakes["claude"].script = Script(fail_before=529)
    fakes["gemini"].script = Script(fail_before=429)
    payloads = Visitor(server.url).stream({"message": "Hi", "provider": "openai"})
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "rate_limited"
    assert len(fakes["openai"].requests) == len(fakes["claude"].requests) == len(fakes["gemini"].requests) == 1


def test_a_non_retryable_error_does_not_fall_back(start_server, fakes) -> None:
    server = start_server(BUPPLE_FALLBACKS="openai>claude")
    fakes["openai"].script = Script(fail_before=401)
    payloads = Visitor(server.url).stream({"message": "Hi", "provider": "openai"})
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "provider_auth"
    assert fakes["claude"].requests == []


def test_without_fallbacks_a_503_is_an_error(start_server, fakes) -> None:
    server = start_server()
    fakes["openai"].script = Script(fail_before=503)
    payloads = Visitor(server.url).stream({"message": "Hi", "provider": "openai"})
    assert payloads[-1]["type"] == "error" and payloads[-1]["code"] == "provider_unavailable"
    assert fakes["claude"].requests == [] and fakes["gemini"].requests == []


def test_python_builder_with_fallbacks(make_app, fakes) -> None:
    app = make_app(BUPPLE_ENGINE_MAX_RETRIES=0)
    fakes["openai"].script = Script(fail_before=503)
    fakes["claude"].script = Script(fail_before=502)
    fakes["gemini"].script = Script(chunks=["from", " gemini"])
    with app.app_context():
        base = BuppleEngine().ai("openai")  # the standalone app's engine state, found in the context
        builder = base.with_fallbacks("claude", "gemini")
        assert builder is not base and base.fallbacks is None and builder.fallbacks == ("claude", "gemini")
        stream = builder.stream("Hi")
        assert "".join(chunk["content"] for chunk in stream) == "from gemini"
        assert stream.provider == "gemini" and stream.fallback is not None
        assert [failure["provider"] for failure in stream.fallback["failed"]] == ["openai", "claude"]
        assert sent_history("gemini", fakes["gemini"].requests[-1].json) == [("user", "Hi")]
        with pytest.raises(ProviderUnavailableError):
            base.with_fallbacks().stream("Hi")  # none: the first failure is the answer
        assert len(fakes["gemini"].requests) == 1


def test_python_builder_falls_back_on_an_in_stream_error(make_app, fakes) -> None:
    app = make_app(BUPPLE_ENGINE_MAX_RETRIES=0)
    fakes["claude"].script = Script(fail_mid_after=0)
    fakes["openai"].script = Script(chunks=["from", " openai"])
    with app.app_context():
        stream = BuppleEngine().ai("claude").with_fallbacks("openai").stream("Hi")
        chunks = list(stream)
        assert "".join(c["content"] for c in chunks if not c["done"]) == "from openai"
        assert chunks[-1]["done"] and chunks[-1]["provider"] == "openai"
        assert stream.provider == "openai" and stream.fallback is not None
        assert stream.fallback["from"] == "claude" and stream.fallback["reason"] == "provider_unavailable"
        assert stream.usage["output_tokens"] == 2 and "estimated" not in stream.usage  # the answering provider's


def test_a_request_policy_hook_sets_the_fallbacks_per_request(tmp_path, fakes) -> None:
    app = Flask("host")
    app.config.update(provider_config(fakes), BUPPLE_DATABASE_URI=f"sqlite:///{tmp_path / 'host.sqlite3'}",
                      BUPPLE_ENGINE_MAX_RETRIES=0, SECRET_KEY="test", BUPPLE_FALLBACKS="openai>claude")  # fmt: skip
    engine = BuppleEngine(app)
    engine.identity_loader(lambda: "ada")

    @engine.request_policy
    def fallbacks(identity, chat: ChatPolicy):
        assert chat.fallbacks == ("openai", "claude")  # BUPPLE_FALLBACKS, for the hook to change
        chat.fallbacks = ("gemini",) if "premium" in chat.messages[-1]["content"] else ()
        return None

    fakes["openai"].script = Script(fail_before=503)
    fakes["gemini"].script = Script(chunks=["gemini", " answers"])
    client = app.test_client()
    premium = client.post("/api/stream", json={"message": "premium question", "provider": "openai"}).data
    assert b'"provider":"gemini"' in premium and b'"completion"' in premium
    plain = client.post("/api/stream", json={"message": "plain question", "provider": "openai"}).data
    assert b'"provider_unavailable"' in plain and b'"completion"' not in plain
    assert fakes["claude"].requests == [] and len(fakes["gemini"].requests) == 1
