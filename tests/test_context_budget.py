"""The history is trimmed to a token budget; the estimate is measured against what providers report."""

from __future__ import annotations

from pathlib import Path

import pytest

from bupple_flask import BuppleEngine
from bupple_flask.context_budget import estimate_tokens, fit_context, input_budget, messages_tokens
from bupple_flask.messages import Messages
from bupple_flask.testing import Script
from tests.server import Visitor

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "provider-streams"
# Recorded streams whose reported output tokens count exactly the visible text. Left out: replies with
# reasoning, tool calls or several choices (their count covers more than the text), and the ones whose usage
# does not describe their text (gemini/utf8_cjk: 4 tokens for 225 characters; openai/azure_prompt_filter:
# 100 for 105 characters; gemini/max_tokens_cjk_reframed: the text is cut).
MEASURED = {
    "openai": ["plain_text_usage.sse", "openrouter_processing.sse", "groq_x_groq_usage_length.sse"],
    "claude": ["max_tokens.sse", "sdk_basic.sse"],
    "gemini": ["basic_crlf.sse", "thought_summary.sse", "long_lf_capture.sse"],
}
FOLDER = {"openai": "openai", "claude": "anthropic", "gemini": "gemini"}


def test_the_estimate_is_within_fifteen_percent_of_reported_usage(app, fakes) -> None:
    if not RECORDINGS.exists():
        pytest.skip(f"the shared provider recordings are not on this machine ({RECORDINGS})")
    rows = []
    with app.app_context():
        engine = BuppleEngine()
        for name, files in MEASURED.items():
            for file in files:
                fakes[name].script = Script(replay=RECORDINGS / FOLDER[name] / file)
                reply = engine.ai(name).send("hi")
                usage = reply["usage"]  # output tokens include the reasoning ones: the text is the rest
                rows.append((file, estimate_tokens(reply["content"]),
                             usage["output_tokens"] - (usage.get("reasoning_tokens") or 0)))
    total_estimate, total_reported = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print("\n".join(f"{f}: estimated {e}, reported {r}" for f, e, r in rows))
    assert abs(total_estimate - total_reported) / total_reported < 0.10, rows  # measured: -4.7%
    for file, estimated, reported in rows:
        if reported >= 20:  # a few tokens either way is most of a tiny reply
            assert abs(estimated - reported) / reported < 0.15, (file, estimated, reported)


def _conversation(turns: int) -> list[dict[str, str]]:
    history = []
    for i in range(turns):
        history.append({"role": "user", "content": f"Question {i}: " + "tell me more about the sea " * (1 + i % 3)})
        history.append({"role": "assistant", "content": f"Answer {i}: " + "the sea is wide " * (1 + i % 5)})
    return history


def test_fit_context_keeps_the_system_prompt_and_the_newest_whole_turns() -> None:
    system = {"role": "system", "content": "Be brief."}
    messages = Messages([system, *_conversation(50), {"role": "user", "content": "And now?"}])
    for budget in range(60, 400, 7):
        kept = fit_context(messages, budget)
        assert kept[0] == system and kept[-1] == messages[-1]
        assert kept[1]["role"] == "user"
        assert messages_tokens(kept) <= budget
        assert list(kept[1:]) == list(messages[len(messages) - len(kept) + 1:])  # a suffix: newest kept
    assert fit_context(messages, 10**6) is messages


def test_the_default_budget_is_the_models_window_less_the_reply() -> None:
    assert input_budget("gpt-4o-mini", None, 4096) == 128_000 - 4096
    assert input_budget("claude-sonnet-4-5", None, 1024) == 200_000 - 1024
    assert input_budget("my-local-model", None, 4096) is None
    assert input_budget("gpt-4o", 3000, 4096) == 3000 and input_budget("gpt-4o", 0, 4096) is None


def test_a_300_turn_conversation_is_trimmed_to_the_budget(start_server, make_app, tmp_path, fake_openai) -> None:
    history = _conversation(300)
    server = start_server(BUPPLE_CONTEXT_TOKENS="2000", BUPPLE_SYSTEM_PROMPT="Be brief.")
    visitor = Visitor(server.url)
    conversation = visitor.new_conversation()
    seed = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'server.sqlite3'}")
    with seed.app_context():
        seed.extensions["bupple"].memory().set_parent("conversation", conversation).add_messages(history)
    fake_openai.script = Script(chunks=["ok"])
    events = visitor.stream({"message": "And now?", "provider": "openai", "conversation_id": conversation})
    assert events[-1]["type"] == "completion"
    sent = fake_openai.requests[0].json["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["role"] == "user" and sent[-1] == {"role": "user", "content": "And now?"}
    assert sent[1:-1] == history[len(history) - len(sent) + 2:]  # the newest turns, whole, in order
    assert messages_tokens(sent) <= 2000 < messages_tokens([sent[0], *history[-len(sent):], sent[-1]])
    assert 40 < len(sent) < 200


def test_a_message_over_the_budget_is_refused_before_the_upstream(start_server, fake_openai) -> None:
    server = start_server(BUPPLE_CONTEXT_TOKENS="50")
    import requests

    response = requests.post(server.url + "/api/stream", json={"message": "word " * 100, "provider": "openai"},
                             timeout=10)
    assert response.status_code == 400 and "too long" in response.json()["error"]["message"]
    assert fake_openai.requests == []
