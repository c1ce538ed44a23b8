"""The ``flask bupple`` commands, registered on every app by ``init_app``.

``init-db`` creates the memory and conversations tables, ``chat`` streams one turn to the terminal, ``providers``
shows what is configured (never a key), ``doctor`` checks what breaks streams in production.
Exit codes: 0 success, 1 failure (a provider or database error, a failed doctor check),
2 a usage error (an unknown provider, a temperature out of range, a bad option), 130 Ctrl-C.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import click
from flask.cli import AppGroup
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from .builder import ChatRequestBuilder
from .database import bounded, describe_error
from .doctor import Check, UsageProblem, run_checks
from .engine import EngineState, get_state
from .errors import BuppleError, InvalidRequestError, UnknownProviderError
from .memory import ConversationMemory
from .messages import Messages, normalize_messages
from .reply_writer import writer_of
from .stream_probe import stream_check
from .terminal_chat import run_turn
from .turns import ConversationTurn

PARENT_CLASS = "conversation"  # the blueprint's: a conversation continues from the browser or the terminal

bupple = AppGroup("bupple", help="Bupple AI engine: create the table, chat, list providers, check the setup.")


class Failure(click.ClickException):
    """The command could not do its job: exit code 1, the message on standard error."""

    exit_code = 1


@bupple.command("init-db")
def init_db() -> None:
    """Create the memory and conversations tables in the app's database (each kept if it exists)."""
    state = get_state()
    tables = (state.table.name, state.conversations_table.name)
    try:
        engine = state.sql_engine()
        with bounded(state.settings.db_timeout):
            existed = {name: inspect(engine).has_table(name) for name in tables}
        state.create_tables()
    except SQLAlchemyError as exc:
        raise Failure(f"cannot create the table {state.table.name}: {describe_error(exc)}") from None
    where = engine.url.render_as_string(hide_password=True)
    for name in tables:
        click.echo(f"{name}: {'already exists' if existed[name] else 'created'} in {where}")


@bupple.command("chat")
@click.argument("message")
@click.option("-p", "--provider", help="Provider name (default: the app's default provider).")
@click.option("-m", "--model", help="Model (default: the provider's configured model).")
@click.option("-t", "--temperature", type=float, help="Sampling temperature.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest reply, in tokens.")
@click.option("-c", "--conversation", "conversation_id", help="Continue (or start) this stored conversation.")
def chat(
    message: str, provider: str | None, model: str | None, temperature: float | None, max_tokens: int | None,
    conversation_id: str | None,
) -> None:  # fmt: skip
    """Stream a reply to MESSAGE; usage, time to first token and tokens/s follow on standard error."""
    state = get_state()
    builder = _builder(state, provider, model, temperature, max_tokens)
    try:
        question = normalize_messages(message)
        turn = _turn(state, builder, question, conversation_id)
        report = run_turn(builder, question, turn, lambda text: click.echo(text, nl=False))
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the upstream request was closed", err=True)
        raise click.exceptions.Exit(130) from None
    except InvalidRequestError as exc:
        raise click.UsageError(exc.message) from None
    except SQLAlchemyError as exc:
        raise Failure(f"conversation memory is unavailable: {describe_error(exc)}") from None
    click.echo()
    for line in report.lines():
        click.echo(line, err=True)
    if conversation_id is not None:
        click.echo(f"conversation: {conversation_id}", err=True)
    if report.outcome.ending != "complete":
        raise click.exceptions.Exit(1)


def _builder(
    state: EngineState, provider: str | None, model: str | None, temperature: float | None, max_tokens: int | None
) -> ChatRequestBuilder:
    try:
        builder = ChatRequestBuilder(state=state, provider=state.provider(provider).name)
    except UnknownProviderError as exc:
        raise click.BadParameter(exc.message, param_hint="'--provider'") from None
    try:
        builder = builder.with_model(model).with_temperature(temperature).with_max_tokens(max_tokens)
    except InvalidRequestError as exc:
        raise click.UsageError(exc.message) from None
    try:
        return builder.require_configured()
    except BuppleError as exc:
        raise Failure(exc.message) from None


def _turn(
    state: EngineState, builder: ChatRequestBuilder, question: Messages, conversation_id: str | None
) -> ConversationTurn | None:
    if conversation_id is None:
        return None
    memory: ConversationMemory = state.memory().set_parent(PARENT_CLASS, conversation_id).set_driver(builder.provider)
    limit = state.settings.max_history_chars
    return ConversationTurn(memory, question, writer=writer_of(state), max_history_chars=limit)


@bupple.command("providers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def providers(as_json: bool) -> None:
    """List the providers: configured or not, default model, base URL host; never a key."""
    state = get_state()
    rows = provider_rows(state)
    if as_json:
        click.echo(json.dumps({"default": state.default_provider, "providers": rows}, indent=2))
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        status = "configured" if row["configured"] else "no key"
        click.echo(f"{mark} {row['name']:<10} {status:<11} {row['default_model']:<28} {row['host']}")
    click.echo("* default provider")


def provider_rows(state: EngineState) -> list[dict[str, Any]]:
    """Each provider's name, label, whether configured, default model and base URL host (when safe to show)."""
    default = state.default_provider
    rows = []
    for described in state.describe_providers():
        instance = state.provider(described["name"])
        host = "-" if instance.is_mock else safe_host(instance.base_url, state)
        rows.append({**described, "default": described["name"] == default, "host": host})
    return rows


def safe_host(url: str, state: EngineState) -> str:
    """``scheme://host:port`` of ``url``; hidden when the URL carries credentials (user info, a query, a key)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return "-"
    if parts.username or parts.password or parts.query or state.redactor(url) != url:
        return "(hidden: the URL carries credentials)"
    return f"{parts.scheme}://{parts.netloc}"


@bupple.command("doctor", context_settings={"ignore_unknown_options": True})
@click.option("--url", help="Also stream a mock reply from this running deployment (through its proxy).")
@click.argument("gunicorn_options", nargs=-1, type=click.UNPROCESSED)
def doctor(url: str | None, gunicorn_options: tuple[str, ...]) -> None:
    """Check what breaks streams in production; GUNICORN_OPTIONS are the options gunicorn is started with.

    Exit code 1 when any check fails (warnings do not fail).
    """
    try:
        checks = run_checks(get_state(), list(gunicorn_options))
    except UsageProblem as exc:
        raise click.UsageError(f"gunicorn options: {exc}") from None
    if url:
        checks.append(stream_check(url))
    for check in checks:
        click.echo(format_check(check))
    counts = {status: sum(c.status == status for c in checks) for status in ("ok", "warn", "fail")}
    click.echo(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    if counts["fail"]:
        raise click.exceptions.Exit(1)


def format_check(check: Check) -> str:
    """``OK    name: message`` (coloured on a terminal)."""
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}[check.status]
    return f"{click.style(check.status.upper().ljust(5), fg=colour)} {check.name}: {check.message}"
