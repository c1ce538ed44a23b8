"""Quick checks of the benchmark tools: parsers, load client, fake upstream, sampler.

No timing assertions: these only prove the tools read what servers send and
what /proc says, so benchmark numbers can be trusted.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import gevent.socket
import pytest
from gevent.server import StreamServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: ``bench`` is not installed

from bench import fake_upstream, loadclient, sampler
from bench.sse import ChunkedDecoder, SSEParser, interpret, parse_head


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _bupple_body(ts: int) -> list[bytes]:
    ev = [b"retry: 3000\n\n",
          b'id: 1\ndata: {"type":"status","status":"started"}\n\n',
          b": ping\n\n",
          ('id: 2\ndata: {"type":"chunk","content":"<ts:%d>h\\u00e9llo","role":"assistant",'
           '"done":false,"tokens":1}\r\n\r\n' % ts).encode(),
          b'id: 3\ndata: {"type":"chunk","content":"no marker","role":"assistant","done":false}\n\n',
          b'id: 4\ndata: {"type":"completion","content":"","done":true}\n\n']
    # re-chunk the SSE bytes so HTTP chunk borders fall mid-event
    blob = b"".join(ev)
    return [blob[i:i + 7] for i in range(0, len(blob), 7)]


def test_parsers_survive_every_split_point() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + _chunked(_bupple_body(12345))
    for step in (1, 2, 3, 5, 13, 64, len(raw)):
        buf, h, dec, sse, items = b"", None, ChunkedDecoder(), SSEParser(), []
        for i in range(0, len(raw), step):
            data = raw[i:i + step]
            if h is None:
                h, data = parse_head(buf + data)
                if h is None:
                    buf += raw[i:i + step]
                    continue
            for ev in sse.feed(dec.feed(data)):
                items += interpret(ev, "bupple")
        assert h is not None and h.status == 200 and h.chunked
        assert dec.done
        kinds = [it.kind for it in items]
        assert kinds == ["other", "ping", "chunk", "chunk", "done"], (step, kinds)
        assert items[2].ts_ns == 12345 and items[2].content.endswith("héllo")
        assert items[3].ts_ns is None


def test_openai_format_interpretation() -> None:
    evs = SSEParser().feed(b'data: {"choices":[{"delta":{"content":"<ts:7>a"}}]}\n\n'
                           b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
                           b"data: [DONE]\n\n")
    items = [it for ev in evs for it in interpret(ev, "openai")]
    assert [(i.kind, i.ts_ns) for i in items] == [("chunk", 7), ("done", None)]


def _serve(handle) -> tuple[StreamServer, int]:
    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    return srv, srv.server_port


@pytest.fixture()
def upstream():
    fake_upstream.reset_stats()
    srv, port = _serve(fake_upstream.handle)
    yield port
    srv.stop()


def test_load_client_direct_path_against_fake_upstream(upstream: int) -> None:
    job = {"target": {"host": "127.0.0.1", "port": upstream, "fmt": "openai",
                      "path": "/v1/chat/completions"},
           "groups": [{"name": "g", "count": 5, "ramp_s": 0.05, "n": 4, "iv": 10}]}
    res = loadclient.run_job(job)
    streams = res["groups"]["g"]
    assert len(streams) == 5 and not res["timed_out"]
    for s in streams:
        assert s["ok"] and s["done"] and s["err"] is None, s
        assert s["chunks"] == 4 and len(s["lat_ns"]) == 4
        assert all(0 <= x < 5e9 for x in s["lat_ns"])
    assert fake_upstream.STATS["completed"] == 5


def test_upstream_records_client_hangup(upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The upstream records a hang-up in its own greenlet after the client is gone:
    # wait for both records on an event, not for a guessed time.
    both_recorded = gevent.event.Event()
    record_close = fake_upstream._record_close

    def recording(d):
        record_close(d)
        if len(fake_upstream.CLOSES) >= 2:
            both_recorded.set()

    monkeypatch.setattr(fake_upstream, "_record_close", recording)
    job = {"target": {"host": "127.0.0.1", "port": upstream, "fmt": "openai",
                      "path": "/v1/chat/completions"},
           "groups": [{"name": "gone", "count": 2, "n": 50, "iv": 20, "close_after": 2}]}
    res = loadclient.run_job(job)
    assert both_recorded.wait(30), fake_upstream.CLOSES
    assert all(s["ok"] and s["t_close"] > 0 and not s["done"] for s in res["groups"]["gone"])
    sids = {c["sid"] for c in fake_upstream.CLOSES}
    assert sids == {"gone-0-0", "gone-1-0"}
    for c in fake_upstream.CLOSES:
        assert c["chunks_sent"] >= 2


def _tiny_bupple_server(sock, addr) -> None:
    """A minimal server speaking the relay's event format, dribbling bytes."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    head, _, body = buf.partition(b"\r\n\r\n")
    n = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(body) < n:
        body += sock.recv(4096)
    assert json.loads(body)["conversation_id"] == "c1"
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           + _chunked(_bupple_body(time.monotonic_ns())))
    for i in range(0, len(raw), 5):
        sock.sendall(raw[i:i + 5])
        gevent.sleep(0)
    sock.close()


def test_load_client_bupple_format() -> None:
    srv, port = _serve(_tiny_bupple_server)
    try:
        r = loadclient.run_stream(loadclient.Target("127.0.0.1", port), "hi", "s1", conv="c1")
    finally:
        srv.stop()
    assert r.ok and r.done and r.status == 200, r
    assert r.chunks == 2 and r.pings == 1 and len(r.lat_ns) == 1
    assert r.t_first_byte <= r.t_first_chunk <= r.t_end


def test_load_client_reports_http_errors() -> None:
    def bad(sock, addr):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        sock.close()
    srv, port = _serve(bad)
    try:
        r = loadclient.run_stream(loadclient.Target("127.0.0.1", port), "hi", "s1")
    finally:
        srv.stop()
    assert not r.ok and r.status == 503


def test_sampler_reads_current_process() -> None:
    pid = os.getpid()
    assert sampler.rss_bytes(pid) > 1_000_000
    assert sampler.fd_count(pid) > 0
    assert sampler.cpu_seconds(pid) > 0
    s = sampler.Sampler({"self": pid}).sample_once()
    # Not 0: earlier tests in this process may leave sockets their servers closed (test order varies);
    # test_sampler_counts_close_wait proves the count itself.
    assert s["self"].rss > 0 and s["self"].fds > 0 and s["self"].close_wait >= 0


def test_sampler_counts_close_wait() -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    srv.close()  # the peer hangs up; we deliberately never close ``cli``
    try:
        port = lst.getsockname()[1]
        # Kernel state: nothing to wait on, so poll; the deadline is generous (a bug never gets there).
        deadline = time.monotonic() + 10
        while sampler.close_wait(os.getpid(), rport=port) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sampler.close_wait(os.getpid(), rport=port) == 1
        assert sampler.close_wait(os.getpid(), rport=1) == 0
    finally:
        cli.close()
        lst.close()


def test_pool_checked_out_parsing() -> None:
    assert sampler.pool_checked_out({"status": "ok", "db_pool": {"checked_out": 3}}) == 3
    assert sampler.pool_checked_out({"status": "ok"}) is None
    assert sampler.pool_checked_out(None) is None


def test_fake_upstream_keeps_connection_alive(upstream: int) -> None:
    """A relay's pooled connection must survive a finished stream (no spurious CLOSE_WAIT)."""
    t = loadclient.Target("127.0.0.1", upstream, fmt="openai", path="/v1/chat/completions")
    sock = gevent.socket.create_connection(("127.0.0.1", upstream))
    try:
        for k in range(2):
            sock.sendall(loadclient.build_request(t, loadclient.directive(2, 5, f"ka-{k}")))
            r = loadclient.StreamResult(sid=f"ka-{k}")
            reader = loadclient._Reader("openai", r, None)
            while not reader.feed(sock.recv(65536), time.monotonic_ns()):
                pass
            assert r.done and r.chunks == 2 and r.err is None, r
    finally:
        sock.close()
    assert fake_upstream.STATS["connections"] == 1 and fake_upstream.STATS["completed"] == 2


def test_directive_parsing() -> None:
    d = fake_upstream.parse_directive("bench n=3 iv=250 jit=10 pad=4 sid=a-1 junk=9 words")
    assert (d["n"], d["iv"], d["jit"], d["pad"], d["sid"]) == (3, 250, 10, 4, "a-1")
    assert fake_upstream.parse_directive("hello")["n"] == fake_upstream.DEFAULTS["n"]


def test_steady_window_cuts_ramp_and_tail() -> None:
    a = loadclient.StreamResult("a", t_first_chunk=10, t_end=100, lat_ns=[1, 2, 3], rx_ns=[10, 50, 100])
    b = loadclient.StreamResult("b", t_first_chunk=40, t_end=90, lat_ns=[4, 5], rx_ns=[40, 90])
    st = loadclient.steady([a, b])
    assert (st["t_from"], st["t_to"]) == (40, 90) and sorted(st["lat_ns"]) == [2, 4, 5]


def test_report_renders_a_minimal_run(tmp_path) -> None:
    from bench import report
    lat = {"n": 1, "p50": 1.0, "p90": 1.0, "p99": 2.0, "max": 2.0}
    pt = {"streams": 2000, "errors": 0, "direct_errors": 0, "relay": lat, "direct": lat, "all_relay": lat,
          "all_direct": lat, "added_p50": 0.0, "added_p99": 0.0, "all_added_p99": 0.0, "rss": 2**27,
          "up_rss": 2**26, "kib_per_stream": 40.0, "up_kib_per_stream": 20.0}
    raw = {"sweep": [dict(pt, streams=1), pt],
           "T5": {"streams": 1000, "relay": {"rate": 900.0, "errors": 0}, "direct": {"rate": 2000.0}}}
    rows = report.verdicts(raw, has_db=False)
    assert {r["key"] for r in rows} >= {"T1", "T3", "T3s", "T5", "T6"}
    assert all(r["met"] for r in rows if r["key"] in ("T1", "T5", "T6"))
    data = {"meta": {k: "x" for k in ("date", "nproc", "cpu", "python", "gevent", "gunicorn", "flask",
                                      "kernel", "commit")}, "quick": True,
            "systems": {"bupple": {"raw": raw, "rows": rows}, "litellm": {"skipped": "offline"}}}
    md = report.markdown(data)
    assert "| T1 2000 streams x 5/s |" in md and "offline" in md
    assert "T5 burst of 1000" in report.table(rows)


def test_report_prints_the_cpu_budget_and_the_scale_out_side_by_side() -> None:
    from bench import report
    lat = {"n": 1, "p50": 1.0, "p90": 1.0, "p99": 2.0, "max": 2.0}
    pt = {"streams": 2000, "errors": 0, "direct_errors": 0, "relay": lat, "direct": lat, "all_relay": lat,
          "all_direct": lat, "added_p50": 0.0, "added_p99": 0.0, "all_added_p99": 0.0, "rss": 2**27,
          "up_rss": 2**26, "kib_per_stream": 40.0, "up_kib_per_stream": 20.0}

    def raw(chunk_us: float, stream_us: float) -> dict:
        return {"sweep": [dict(pt, streams=1), dict(pt, steady_cpu_us_per_chunk=chunk_us)],
                "T5": {"streams": 1000, "relay": {"rate": 900.0, "errors": 0, "cpu_us_per_stream": stream_us},
                       "direct": {"rate": 2000.0}}}

    level = {"streams": 2000, "errors": 0, "added_p99": 3.0, "direct_p99": 1.0, "chunks_per_s": 9990.0,
             "worker_cpu_pct": [70.0], "held": True}
    t11 = {"target_added_p99_ms": 10.0, "ratio": 2.0,
           "workers": {"1": {"levels": [level], "held": 2000},
                       "2": {"levels": [dict(level, streams=4000, worker_cpu_pct=[60.0, 65.0])], "held": 4000}}}
    bupple, naive = raw(61.0, 1500.0), raw(66.0, 2700.0)
    bupple["T11"] = t11
    bupple["sweep"][1]["db_us_per_chunk"] = 24.0
    bupple["T5"]["relay"]["db_us_per_stream"] = 900.0
    meta = {k: "x" for k in ("date", "nproc", "cpu", "python", "gevent", "gunicorn", "flask", "kernel", "commit")}
    data = {"meta": meta, "quick": False, "systems": {
        "bupple": {"raw": bupple, "rows": report.verdicts(bupple, has_db=True)},
        "naive": {"raw": naive, "rows": report.verdicts(naive, has_db=False)}}}
    md = report.markdown(data)
    assert "## CPU budget" in md
    assert "| bupple | 61 | 1500 |" in md and "| naive | 66 | 2700 |" in md
    assert "| bupple: its database (whole rounds) | 24 | 900 |" in md and "naive: its database" not in md
    assert "| 2 | 4000 | 0 | +3.0 ms (direct p99 1.0) | 9990 | 60% + 65% | yes |" in md
    assert "one worker 2000, two workers 4000 (x2.00)" in md


def test_writer_cost_stores_every_chunk_and_sends_rounds_that_do_not_grow_with_the_reply() -> None:
    from bench.writer_cost import CHUNK, run

    out = run(None, 20, 12)  # SQLite: 20 replies, 12 simulated seconds of 5 chunks
    assert out["chunks_per_reply"] == 60 and out["longest_stored"] == 60 * len(CHUNK)
    first, last = out["first_tenth"]["sent_bytes_per_reply"], out["last_tenth"]["sent_bytes_per_reply"]
    assert 0 < last <= first * 1.2  # only the text added each round, however long the reply is


def test_the_database_is_pinned_to_the_load_core_and_its_cpu_counted(postgres_url: str) -> None:
    """bench/database_core.py on the machine's PostgreSQL: a new backend lands on the given core; restored after."""
    import psycopg

    from bench.database_core import database_cpu_seconds, database_on_core, database_pids

    pids = database_pids()
    assert pids, "no process of the postgres user: the bench could not pin or measure the database"
    before = {pid: os.sched_getaffinity(pid) for pid in pids}
    with database_on_core(0) as note:
        assert note.startswith("PostgreSQL pinned to core 0"), note
        spent = database_cpu_seconds()
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as connection:
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert os.sched_getaffinity(backend) == {0}  # forked by the pinned postmaster
            connection.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        assert database_cpu_seconds() > spent
    after = {pid: os.sched_getaffinity(pid) for pid in pids if pid in database_pids()}
    assert after == {pid: cores for pid, cores in before.items() if pid in after}
