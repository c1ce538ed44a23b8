"""A writer round's starts cost a few statements whatever their number, and a round writes a bounded number.

Measured at 2,000 streams (bench T6): a start written as two statements in a row made rounds of
16 starts take 1.8 s in a busy gevent worker, and a round of 2,000 starts hit the database timeout.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from psycopg.pq import TransactionStatus
from sqlalchemy import event, select

from bupple_flask.engine import get_state
from bupple_flask.errors import ConversationNotFoundError
from bupple_flask.memory import ConversationMemory
from bupple_flask.reply_writer import Reply, ReplyWriter
from bupple_flask.turn_starts import ConversationChange, TurnStart, write_starts


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, make_app: Any, tmp_path: Any) -> Iterator[Flask]:
    """The app on a fresh SQLite file, or on PostgreSQL with tables of this test's own (dropped after)."""
    suffix = uuid.uuid4().hex[:10]
    url = (f"sqlite:///{tmp_path / 'starts.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))  # fmt: skip
    app = make_app(SQLALCHEMY_DATABASE_URI=url, BUPPLE_MEMORY_TABLE=f"starts_m_{suffix}",
                   BUPPLE_CONVERSATIONS_TABLE=f"starts_c_{suffix}")  # fmt: skip
    yield app
    with app.app_context():
        state = get_state(app)
        state.table.metadata.drop_all(state.sql_engine(), [state.table, state.conversations_table])


def a_turn(app: Flask, conversation_id: str, *, new: bool, owner: str = "user:1", question: str = "Hi") -> TurnStart:
    """The start the turn of ``/api/stream`` hands the writer: question and empty reply rows, the conversation."""
    state = get_state(app)
    memory = ConversationMemory(state.sql_engine(), state.table).set_parent("conversation", conversation_id)
    rows = memory.message_rows([{"role": "user", "content": question}, {"role": "assistant", "content": ""}])
    change = ConversationChange(state.conversations_table, conversation_id, owner, new, question, "openai", "m")
    return TurnStart(state.table, rows, change)


def statements_of(app: Flask, starts: list[TurnStart]) -> int:
    """Write ``starts`` in one transaction; the number of statements sent (an executemany is one)."""
    engine = get_state(app).sql_engine()
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as connection:
            write_starts(connection, [(start, {"ending": "streaming"}) for start in starts])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def stored(app: Flask, conversation_id: str) -> list[tuple[str, str, Any]]:
    state = get_state(app)
    m = state.table
    with state.sql_engine().connect() as connection:
        rows = connection.execute(select(m.c.role, m.c.content, m.c["metadata"]).where(
            m.c.parent_id == conversation_id).order_by(m.c.id)).all()  # fmt: skip
    return [(role, content, metadata) for role, content, metadata in rows]


def test_many_starts_cost_as_many_statements_as_a_few(app: Flask) -> None:
    with app.app_context():
        get_state(app).ensure_tables()
        existing = [f"old{i}" for i in range(40)]
        statements_of(app, [a_turn(app, c, new=True) for c in existing])  # conversations to touch later
        few = statements_of(app, [a_turn(app, "new0", new=True), a_turn(app, "old0", new=False)])
        many = statements_of(app, [a_turn(app, f"new{i}", new=True) for i in range(1, 41)]
                             + [a_turn(app, c, new=False, question=f"again {c}") for c in existing])  # fmt: skip
        assert many == few <= 3  # new conversations, touched ones, messages: one statement each
        assert stored(app, "new7") == [("user", "Hi", None), ("assistant", "", {"ending": "streaming"})]
        assert [row[1] for row in stored(app, "old3")] == ["Hi", "", "again old3", ""]
        c = get_state(app).conversations_table
        with get_state(app).sql_engine().connect() as connection:
            titles = dict(connection.execute(select(c.c.id, c.c.title)).all())
        assert len(titles) == 81 and titles["old3"] == "Hi"  # a touch keeps the title it has


def test_a_conversation_gone_meanwhile_fails_only_its_own_turn(app: Flask) -> None:
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        statements_of(app, [a_turn(app, "kept", new=True), a_turn(app, "gone", new=True)])
        with state.sql_engine().begin() as connection:
            connection.execute(state.conversations_table.delete().where(state.conversations_table.c.id == "gone"))
        with pytest.raises(ConversationNotFoundError), state.sql_engine().begin() as connection:
            write_starts(connection, [(a_turn(app, "gone", new=False), {})])
        # In the writer: the round fails, each reply is retried alone; the others are stored.
        three_replies_one_gone(app, ReplyWriter(state.sql_engine, state.table, interval=60, lease=60, timeout=10))
        assert [row[1] for row in stored(app, "kept")] == ["Hi", "", "to kept", "answer kept"]
        assert [row[1] for row in stored(app, "fresh")] == ["to fresh", "answer fresh"]
        assert stored(app, "gone") == [("user", "Hi", None), ("assistant", "", {"ending": "streaming"})]


def test_two_turns_of_one_conversation_in_one_round_are_both_stored(app: Flask) -> None:
    """Two tabs asking in one conversation at once: a round touches it twice (one row of the document, once)."""
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        statements_of(app, [a_turn(app, "shared", new=True)])
        statements_of(app, [a_turn(app, "shared", new=False, question="tab one"),
                            a_turn(app, "shared", new=False, question="tab two")])  # fmt: skip
        assert [row[1] for row in stored(app, "shared")] == ["Hi", "", "tab one", "", "tab two", ""]
        with pytest.raises(ConversationNotFoundError), state.sql_engine().begin() as connection:
            write_starts(connection, [(a_turn(app, "shared", new=False), {}),
                                      (a_turn(app, "shared", new=False, owner="user:2"), {})])  # not user 2's
        assert len(stored(app, "shared")) == 6  # nothing of that round was kept


def test_a_regenerated_turn_replaces_the_rows_it_names_in_its_own_conversation_only(app: Flask) -> None:
    """useChat's regenerate: the old question and answer go in the transaction that stores the new ones."""
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        statements_of(app, [a_turn(app, "mine", new=True), a_turn(app, "theirs", new=True, owner="user:2")])
        m = state.table
        with state.sql_engine().connect() as connection:
            ids = dict(connection.execute(select(m.c.id, m.c.parent_id)).all())
        again = dataclasses.replace(a_turn(app, "mine", new=False), replaces=tuple(ids))  # theirs named too
        statements_of(app, [again])
        assert stored(app, "mine") == [("user", "Hi", None), ("assistant", "", {"ending": "streaming"})]
        with state.sql_engine().connect() as connection:
            assert connection.execute(select(m.c.id).where(m.c.parent_id == "mine")).scalars().all() != [
                i for i, parent in ids.items() if parent == "mine"]  # the new rows, not the old ones
        assert [row[1] for row in stored(app, "theirs")] == ["Hi", ""]  # another conversation's rows stay
        with pytest.raises(ConversationNotFoundError), state.sql_engine().begin() as connection:
            stranger = dataclasses.replace(a_turn(app, "mine", new=False, owner="user:2"), replaces=tuple(ids))
            write_starts(connection, [(stranger, {})])  # not user 2's: nothing deleted
        assert len(stored(app, "mine")) == 2


def test_a_long_interval_does_not_make_the_writer_rewrite_every_reply_at_every_round(app: Flask) -> None:
    """``BUPPLE_PERSIST_INTERVAL`` at or above a third of the lease (fewer writes asked for): a streaming reply is
    written when its lease is due, not in every round that other replies' starts and ends cause."""
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        writer = ReplyWriter(state.sql_engine, state.table, interval=600, lease=600, timeout=10)
        long = a_turn(app, "long", new=True)
        reply = Reply(long.rows[-1]["message_id"], long, {"ending": "streaming"}, "long")
        updates: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE") and reply.message_id in str(parameters):
                updates.append(statement)

        engine = state.sql_engine()
        event.listen(engine, "before_cursor_execute", count)
        try:
            writer.begin(reply)
            for i in range(8):  # each end is written (and waited for) in a round of its own
                other = a_turn(app, f"other{i}", new=True)
                turn = Reply(other.rows[-1]["message_id"], other, {"ending": "streaming"}, f"other{i}")
                writer.begin(turn)
                writer.end(turn, {"content": "done", "metadata": {"ending": "complete"}, "driver": "openai"})
            assert [row[1] for row in stored(app, "long")] == ["Hi", ""]  # its start went with the first round
            assert updates == []  # its lease is not due for 100 s (a third of 600, less the 100 s tick)
            writer.end(reply, {"content": "long done", "metadata": {"ending": "complete"}, "driver": "openai"})
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(updates) == 1 and [row[1] for row in stored(app, "long")] == ["Hi", "long done"]


def three_replies_one_gone(app: Flask, writer: ReplyWriter) -> None:
    """Three replies through ``writer``, started and ended; the conversation "gone" was deleted."""
    turns = {name: a_turn(app, name, new=name != "kept", question=f"to {name}") for name in ("kept", "fresh")}
    turns["gone"] = a_turn(app, "gone", new=False)
    replies = {name: Reply(start.rows[-1]["message_id"], start, {"ending": "streaming"}, name)
               for name, start in turns.items()}  # fmt: skip
    for reply in replies.values():
        writer.begin(reply)
    for name, reply in replies.items():
        writer.end(reply, {"content": f"answer {name}", "metadata": {"ending": "complete"}, "driver": "openai"})


def test_a_round_writes_a_bounded_number_of_replies_and_the_rest_follow(app: Flask, monkeypatch: Any) -> None:
    monkeypatch.setattr("bupple_flask.reply_writer.MAX_REPLIES", 2)
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        engine = state.sql_engine()
        sizes: list[int] = []

        def count(connection: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
            if not statement.startswith("INSERT INTO " + state.conversations_table.name):
                return
            if isinstance(parameters, dict) and "bulk_rows" in parameters:  # PostgreSQL: one document of rows
                sizes.append(len(json.loads(parameters["bulk_rows"])))
            else:
                sizes.append(len(parameters) if isinstance(parameters, list) else 1)

        event.listen(engine, "before_cursor_execute", count)
        try:
            writer = ReplyWriter(state.sql_engine, state.table, interval=60, lease=60, timeout=10)
            starts = [a_turn(app, f"c{i}", new=True) for i in range(5)]
            replies = [Reply(s.rows[-1]["message_id"], s, {"ending": "streaming"}, f"c{i}") for i, s in enumerate(starts)]
            writer._running = True  # all five pending before its first round: then it runs
            for reply in replies:
                writer.begin(reply)
            threading.Thread(target=writer._run, daemon=True).start()
            for i, reply in enumerate(replies):
                writer.end(reply, {"content": f"answer {i}", "metadata": {"ending": "complete"}, "driver": "openai"})
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert max(sizes) <= 2 and sum(sizes) == 5  # five starts, in rounds of two at most
        assert all([row[1] for row in stored(app, f"c{i}")] == ["Hi", f"answer {i}"] for i in range(5))


def test_a_round_sends_only_the_text_added_and_writing_it_twice_stores_it_once(app: Flask) -> None:
    """Rounds send each reply's new text, not all of it again (at 2,000 streams of long replies, megabytes a
    second); a round retried after a commit whose answer was lost leaves the text as it was, not doubled."""
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        writer = ReplyWriter(state.sql_engine, state.table, interval=1, lease=60, timeout=10)
        writer._running = True  # rounds run here, one by one, not in the writer's own thread
        start = a_turn(app, "growing", new=True)
        reply = Reply(start.rows[-1]["message_id"], start, {"ending": "streaming"}, "growing")
        reply.parts = ["Hé", "llo 🙂"]
        sent: list[str] = []

        def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE") and reply.message_id in str(parameters):
                sent.append(json.dumps(parameters, ensure_ascii=False, default=str))

        engine = state.sql_engine()
        event.listen(engine, "before_cursor_execute", keep)
        try:
            writer.begin(reply)
            writer._round(1000.0)
            assert [row[1] for row in stored(app, "growing")] == ["Hi", "Héllo 🙂"]
            reply.parts.extend([" wor", "ld\x00", "!"])
            writer._round(1002.0)
            assert [row[1] for row in stored(app, "growing")] == ["Hi", "Héllo 🙂 world\ufffd!"]  # NUL: not storable
            assert " world\ufffd!" in sent[-1] and "Héllo" not in sent[-1]  # only what was added went
            reply.parts.append(" Bye")
            job = writer._job(reply, 1004.0)
            writer._write([job])
            writer._write([job])  # the same round again: its first commit was not heard of
            assert [row[1] for row in stored(app, "growing")] == ["Hi", "Héllo 🙂 world\ufffd! Bye"]
            writer._written(job, 1004.0)
            threading.Thread(target=writer._run, daemon=True).start()
            writer.end(reply, {"content": "Héllo 🙂 world! Bye.", "metadata": {"ending": "complete"}, "driver": "openai"})
        finally:
            event.remove(engine, "before_cursor_execute", keep)
        assert stored(app, "growing")[1][:2] == ("assistant", "Héllo 🙂 world! Bye.")  # the end writes it whole


def writer_following(app: Flask, prefix: str, parts: list[list[str]]) -> tuple[ReplyWriter, list[Reply]]:
    """A writer whose rounds the test runs itself, following one new turn per ``parts`` (its text so far)."""
    state = get_state(app)
    state.ensure_tables()
    writer = ReplyWriter(state.sql_engine, state.table, interval=1, lease=60, timeout=10)
    writer._running = True  # the rounds run here, not in the writer's own thread
    replies = []
    for i, text in enumerate(parts):
        start = a_turn(app, f"{prefix}{i}", new=True)
        replies.append(Reply(start.rows[-1]["message_id"], start, {"ending": "streaming"}, f"{prefix}{i}"))
        replies[-1].parts = text
        writer.begin(replies[-1])
    return writer, replies


def test_rounds_that_follow_a_full_one_take_what_it_left_and_the_ends_first(app: Flask, monkeypatch: Any) -> None:
    """With more replies due than a round holds, the rounds that follow take the rest without looking at every
    reply again (at 2,000 streams that look held the loop longer than the round's own work), and an end that came
    meanwhile is written before them (its stream waits for it)."""
    monkeypatch.setattr("bupple_flask.reply_writer.MAX_REPLIES", 2)
    with app.app_context():
        writer, replies = writer_following(app, "r", [[f"text {i}"] for i in range(5)])
        looks = []
        look = writer._wanted
        monkeypatch.setattr(writer, "_wanted", lambda replies, at: looks.append(len(replies)) or look(replies, at))
        assert writer._round(1000.0) and looks == [5]  # two written, three left
        assert [row[1] for row in stored(app, "r0")] == ["Hi", "text 0"] and stored(app, "r4") == []
        replies[4].final = {"content": "text 4, ended", "metadata": {"ending": "complete"}, "driver": "openai"}
        writer._ended.append(replies[4])  # as ReplyWriter.end does
        assert writer._round(1000.1)  # the end and r2; r3 left
        assert [row[1] for row in stored(app, "r4")] == ["Hi", "text 4, ended"]
        assert [row[1] for row in stored(app, "r2")] == ["Hi", "text 2"] and stored(app, "r3") == []
        assert not writer._round(1000.2) and looks == [5]  # r3: the rest, still without a look at every reply
        assert [row[1] for row in stored(app, "r3")] == ["Hi", "text 3"]
        replies[1].parts.append(" more")
        writer._round(1001.5)  # a round of its own looks at every reply again
        assert looks == [5, 4] and [row[1] for row in stored(app, "r1")] == ["Hi", "text 1 more"]


def test_rounds_of_text_alone_are_smaller_than_rounds_of_starts_and_ends(app: Flask, monkeypatch: Any) -> None:
    """Starts and ends go in large rounds (a burst's CPU); text and leases in small ones (each round holds every
    stream's next chunk while it builds)."""
    monkeypatch.setattr("bupple_flask.reply_writer.MAX_REPLIES", 4)
    monkeypatch.setattr("bupple_flask.reply_writer.MAX_TEXT_REPLIES", 2)
    with app.app_context():
        writer, replies = writer_following(app, "t", [[] for _ in range(5)])
        sizes = []
        write = writer._write
        monkeypatch.setattr(writer, "_write", lambda jobs: sizes.append(len(jobs)) or write(jobs))
        while writer._round(1000.0):
            pass
        for reply in replies:
            reply.parts.append("text")
        while writer._round(1002.0):
            pass
        assert sizes == [4, 1, 2, 2, 1]  # five starts: 4 + 1; then five texts: 2 + 2 + 1
        assert all([row[1] for row in stored(app, f"t{i}")] == ["Hi", "text"] for i in range(5))


def test_text_rounds_send_the_metadata_only_when_the_lease_is_pushed(app: Flask) -> None:
    """Between two pushes of the lease (every third of it) a round sends a reply's new text alone, and the row keeps
    its metadata and driver: rewriting them each second was most of what a round sent per reply."""
    with app.app_context():
        writer, (reply,) = writer_following(app, "m", [["one"]])  # lease 60 s, tick 1 s: pushed after 19 s
        reply.metadata = {"ending": "streaming", "provider": "openai", "model": "m"}
        sent: list[str] = []

        def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE") and reply.message_id in str(parameters):
                sent.append(json.dumps(parameters, ensure_ascii=False, default=str))

        def row() -> tuple[str, Any, str | None]:
            m = get_state(app).table
            with get_state(app).sql_engine().connect() as connection:
                return tuple(connection.execute(select(m.c.content, m.c["metadata"], m.c.driver).where(
                    m.c.message_id == reply.message_id)).one())  # fmt: skip

        engine = get_state(app).sql_engine()
        event.listen(engine, "before_cursor_execute", keep)
        try:
            writer._round(1000.0)  # the start (its metadata, with the lease) and the text so far
            started = row()[1]
            assert started["ending"] == "streaming" and started["lease_until"] > 0
            reply.parts.append(" two")
            writer._round(1002.0)
            assert sent[-1].count("two") == 1 and "lease_until" not in sent[-1] and "streaming" not in sent[-1]
            assert row() == ("one two", started, None)  # metadata kept as the start wrote it (not JSON null)
            reply.parts.append(" three")
            writer._round(1019.5)  # a third of the lease less a tick after the start: pushed, with the text
            content, pushed, _ = row()
            assert content == "one two three" and "lease_until" in sent[-1]
            assert pushed["lease_until"] > started["lease_until"] and pushed["model"] == "m"
            writer._round(1025.0)  # nothing added, the lease not due: nothing sent
            assert sent[-1].count("three") == 1 and len(sent) == 3
        finally:
            event.remove(engine, "before_cursor_execute", keep)


def test_a_round_of_one_statement_on_postgresql_sends_no_begin_and_no_commit(app: Flask) -> None:
    """A round of text alone is one statement: on PostgreSQL it runs outside a transaction (two round trips fewer,
    each a turn of a busy worker's loop); a round with a start runs its statements in one. SQLite: a transaction."""
    with app.app_context():
        writer, (reply,) = writer_following(app, "s", [["one"]])
        postgresql = get_state(app).sql_engine().dialect.name == "postgresql"
        seen: list[bool] = []

        def in_transaction(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE"):
                dbapi = conn.connection.dbapi_connection
                seen.append(dbapi.info.transaction_status != TransactionStatus.IDLE if postgresql else dbapi.in_transaction)

        engine = get_state(app).sql_engine()
        event.listen(engine, "after_cursor_execute", in_transaction)
        try:
            writer._round(1000.0)  # the start and its text: one transaction
            reply.parts.append(" two")
            writer._round(1002.0)  # the text alone
        finally:
            event.remove(engine, "after_cursor_execute", in_transaction)
        assert seen == ([True, False] if postgresql else [True, True])
        assert [row[1] for row in stored(app, "s0")] == ["Hi", "one two"]


def test_a_start_between_two_ticks_is_written_alone_and_the_tick_writes_the_text(app: Flask, monkeypatch: Any) -> None:
    """A round woken by a new stream's start (its upstream answered) writes that start without looking at every
    reply for text due: at 2,000 streams each look held the loop for milliseconds, once per new stream. The text
    of the others goes at the next tick, as it would without the new stream."""
    with app.app_context():
        writer, (first, second) = writer_following(app, "w", [["one"], ["uno"]])
        writer._round(1000.0)  # a tick: both starts, with their text so far
        first.parts.append(" two")
        second.parts.append(" dos")
        looked: list[int] = []
        monkeypatch.setattr(writer, "_wanted", lambda replies, at: looked.append(len(replies)) or
                            ReplyWriter._wanted(writer, replies, at))  # fmt: skip
        start = a_turn(app, "w2", new=True)
        third = Reply(start.rows[-1]["message_id"], start, {"ending": "streaming"}, "w2")
        third.parts = ["tres"]
        writer.begin(third)
        writer.wake(third)
        writer._round(1000.5, ticked=False)  # woken half a tick after a tick's look
        assert looked == []  # not every reply: the start alone
        assert [row[1] for row in stored(app, "w2")] == ["Hi", "tres"]
        assert [row[1] for row in stored(app, "w0")] == ["Hi", "one"]  # its text waits for the tick
        writer._round(1001.0)  # the tick
        assert looked == [3]
        assert [row[1] for row in stored(app, "w0")] == ["Hi", "one two"]
        assert [row[1] for row in stored(app, "w1")] == ["Hi", "uno dos"]
        writer.wake(third)  # a wake a tick after the last look looks again (wakes that never stop)
        writer._round(1002.5, ticked=False)
        assert looked == [3, 3]
