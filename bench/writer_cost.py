"""What storing replies while they stream costs, alone, in one process (``python -m bench.writer_cost``).

The reply writer (``bupple_flask/reply_writer.py``) writes every streaming reply's text each
``BUPPLE_PERSIST_INTERVAL`` (1 s by default) in rounds of up to 200 replies. Here ``--replies``
replies grow as in T1 (5 chunks a second of the bench upstream's 24 characters) for ``--seconds``
simulated seconds; after each second every reply is due and the writer's rounds run one after the
other (no event loop, no HTTP), so the figures are the writer's own:

- **worker CPU** per reply written (the process's CPU time of the rounds: building the rows,
  the driver, the kernel's send, which on loopback also carries the database's receive), in
  the first tenth of the run (after the first second, which also writes the starts) and the
  last: a cost that grows with the reply's length shows;
- **sent**: the statements' parameters, in bytes per reply per round;
- **database CPU**: the PostgreSQL backends' CPU time (``/proc``) per reply written.

PostgreSQL at ``--db`` (tables of the run's own, dropped after) or SQLite. ``--checkout PATH``
measures the ``bupple_flask`` of another checkout (e.g. a worktree of main) for an A/B.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = "<ts:1764633600123456789>"  # what the bench upstream sends per chunk (24 characters, no padding)


def backend_cpu(pids: set[int]) -> float:
    """CPU seconds of the database backends this run opened (0 where /proc cannot tell)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run(db: str | None, replies: int, seconds: int) -> dict[str, Any]:
    from sqlalchemy import event, text

    from bupple_flask.app import create_app
    from bupple_flask.engine import get_state
    from bupple_flask.memory import ConversationMemory
    from bupple_flask.reply_writer import Reply, ReplyWriter
    from bupple_flask.turn_starts import TurnStart

    workdir = tempfile.mkdtemp(prefix="bupple-writer-")
    suffix = secrets.token_hex(4)
    app = create_app({"SQLALCHEMY_DATABASE_URI": db or f"sqlite:///{workdir}/writer.sqlite3", "SECRET_KEY": "bench",
                      "BUPPLE_INSTANCE_PATH": workdir, "BUPPLE_MEMORY_TABLE": f"bench_writer_m_{suffix}",
                      "BUPPLE_CONVERSATIONS_TABLE": f"bench_writer_c_{suffix}"})  # fmt: skip
    sent, backends = [0], set()
    with app.app_context():
        state = get_state(app)
        state.ensure_tables()
        engine = state.sql_engine()

        def count(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
            sent[0] += len(str(parameters))

        @event.listens_for(engine, "connect")
        def backend(dbapi_connection: Any, record: Any) -> None:
            if engine.dialect.name == "postgresql":
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    backends.add(cursor.fetchone()[0])

        engine.dispose()  # connections opened from here on are seen by ``backend``
        try:
            writer = ReplyWriter(state.sql_engine, state.table, interval=1, lease=600, timeout=30)
            writer._running = True  # the rounds run here, one after the other
            all_replies = []
            for i in range(replies):
                memory = ConversationMemory(engine, state.table).set_parent("conversation", f"w{suffix}{i}")
                rows = memory.message_rows([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}])
                reply = Reply(rows[-1]["message_id"], TurnStart(state.table, rows), {"ending": "streaming"}, f"r{i}")
                reply.parts = []
                writer.begin(reply)
                all_replies.append(reply)
            event.listen(engine, "before_cursor_execute", count)
            per_second = []
            for second in range(seconds):
                for reply in all_replies:
                    reply.parts.extend([CHUNK] * 5)
                cpu0, db0, sent0, at = time.process_time(), backend_cpu(backends), sent[0], 1000.0 + 2 * second
                while writer._round(at):
                    pass
                per_second.append((time.process_time() - cpu0, backend_cpu(backends) - db0, sent[0] - sent0))
            stored = {len(r.parts) for r in all_replies}
            with engine.connect() as connection:
                longest = connection.execute(text(f"SELECT max(length(content)) FROM {state.table.name}")).scalar()
        finally:
            event.remove(engine, "before_cursor_execute", count)
            state.table.metadata.drop_all(engine, [state.table, state.conversations_table])
    tenth = max(1, seconds // 10)

    def part(rows: list[tuple[float, float, int]]) -> dict[str, float]:
        n = len(rows) * replies
        return {"worker_us_per_reply": round(sum(r[0] for r in rows) / n * 1e6, 1),
                "db_us_per_reply": round(sum(r[1] for r in rows) / n * 1e6, 1),
                "sent_bytes_per_reply": round(sum(r[2] for r in rows) / n)}  # fmt: skip

    return {"replies": replies, "seconds": seconds, "chunks_per_reply": stored.pop(), "longest_stored": longest,
            "first_tenth": part(per_second[1:1 + tenth]), "last_tenth": part(per_second[-tenth:]),
            "all": part(per_second)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                    help="SQLAlchemy URL ('' for SQLite in a temp folder)")  # fmt: skip
    ap.add_argument("--replies", type=int, default=2000)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--checkout", help="measure the bupple_flask of this checkout")
    args = ap.parse_args(argv)
    if args.checkout:
        sys.path.insert(0, args.checkout)
    import bupple_flask

    out = {"bupple_flask": bupple_flask.__file__, **run(args.db or None, args.replies, args.seconds)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
