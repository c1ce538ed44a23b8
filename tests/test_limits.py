"""Abuse limits through real gunicorn + gevent servers sharing Redis: rate, open streams, token budget.

Every test uses its own Redis key prefix and deletes only the keys under it (never FLUSHALL).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bupple_flask.testing import Script
from tests.conftest import REDIS_URL, provider_config
from tests.server import GunicornServer, RawStream


@pytest.fixture
def servers(tmp_path: Path, fakes: dict) -> Iterator[Callable[..., GunicornServer]]:
    """``servers(workers=2, **env)``: gunicorn instances on one database, providers on the fakes."""
    started: list[GunicornServer] = []

    def start(workers: int = 1, **env: str) -> GunicornServer:
        merged = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'server.sqlite3'}",
            "BUPPLE_INSTANCE_PATH": str(tmp_path / "instance"),
            "BUPPLE_ENGINE_MAX_RETRIES": "0",
            **provider_config(fakes),
            **env,
        }
        server = GunicornServer(merged, tmp_path / f"gunicorn-{len(started)}.log", workers=workers)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    for server in started:
        assert "Traceback" not in server.read_log(), server.read_log()


def post(server: GunicornServer, message: str = "hi") -> requests.Response:
    return requests.post(server.url + "/api/stream", json={"message": message, "provider": "openai"}, timeout=20)


def assert_429(response: requests.Response, code: str, max_wait: float) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    assert 1 <= int(response.headers["Retry-After"]) <= max_wait + 1  # whole seconds, rounded up
    assert response.json()["error"]["retry_after"] == int(response.headers["Retry-After"])


def poll(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``check()`` until it is truthy or the deadline passes (the servers are other processes: poll them)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_the_start_rate_holds_across_two_workers_and_two_hosts(servers, redis_prefix, fake_openai) -> None:
    env = {"BUPPLE_RATE_LIMIT": "3/minute", "BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix}
    first, second = servers(workers=2, **env), servers(workers=2, **env)
    fake_openai.script = Script(chunks=["ok"])
    answers = [post(server) for server in (first, second, first, second, first, second)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429, 429]
    for refused in answers[3:]:
        assert_429(refused, "rate_limit_exceeded", 60)
        assert "3 per 1 minute" in refused.json()["error"]["message"]
    assert len(fake_openai.requests) == 3  # no refused request reached the upstream


def test_open_streams_per_user_hold_across_hosts_and_free_when_they_end(servers, redis_prefix, fake_openai) -> None:
    env = {"BUPPLE_MAX_STREAMS_PER_USER": "2", "BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix}
    first, second = servers(workers=2, **env), servers(**env)
    fake_openai.script = Script(chunks=["a", "b"], gated=True)
    held = [RawStream(first.url, {"message": "one", "provider": "openai"}),
            RawStream(second.url, {"message": "two", "provider": "openai"})]
    assert fake_openai.wait_for_requests(2, timeout=20)
    for server in (first, second):
        assert_429(post(server), "too_many_streams", 60)
    assert len(fake_openai.requests) == 2
    fake_openai.release(10)  # the held streams finish; their slots are freed
    for stream in held:
        assert [e["type"] for e in stream.events()][-1] == "completion"
        stream.vanish()
    fake_openai.script = Script(chunks=["ok"])
    assert poll(lambda: post(second).status_code == 200)


def test_streams_per_worker(servers, fake_openai) -> None:
    server = servers(BUPPLE_MAX_STREAMS="1", BUPPLE_MAX_STREAMS_PER_USER="0")
    fake_openai.script = Script(chunks=["a"], gated=True)
    held = RawStream(server.url, {"message": "one", "provider": "openai"})
    assert fake_openai.wait_for_requests(1, timeout=20)
    assert_429(post(server), "too_many_streams", 1)
    fake_openai.release(5)
    assert [e["type"] for e in held.events()][-1] == "completion"
    held.vanish()


def _worker_pids(server: GunicornServer) -> list[int]:
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_killed_workers_leases_expire_and_running_ones_are_renewed(servers, redis_prefix, fake_openai) -> None:
    import redis

    lease = 4
    env = {"BUPPLE_MAX_STREAMS_PER_USER": "1", "BUPPLE_STREAM_LEASE": str(lease), "BUPPLE_REDIS_URL": REDIS_URL,
           "BUPPLE_REDIS_PREFIX": redis_prefix}
    server = servers(**env)
    fake_openai.script = Script(chunks=["a", "b"], gated=True)
    held = RawStream(server.url, {"message": "one", "provider": "openai"})
    assert fake_openai.wait_for_requests(1, timeout=20)
    client = redis.Redis.from_url(REDIS_URL)
    key = f"{redis_prefix}:streams:ip:127.0.0.1"
    (member, first_expiry), = client.zrange(key, 0, -1, withscores=True)
    # A running stream renews its lease: it is still held after its first expiry passed.
    assert poll(lambda: _redis_now(client) > first_expiry + 0.5, timeout=lease * 3)
    assert client.zscore(key, member) > first_expiry
    assert_429(post(server), "too_many_streams", lease)
    # A worker killed with SIGKILL releases nothing: its lease expires on its own.
    os.kill(_worker_pids(server)[0], signal.SIGKILL)
    killed_at = time.monotonic()
    assert fake_openai.wait_for_client_close(20) is not None
    held.vanish()
    fake_openai.script = Script(chunks=["ok"])
    answers: list[int] = []

    def admitted() -> bool:
        try:
            answers.append(post(server).status_code)
        except requests.ConnectionError:  # the master is starting a new worker
            return False
        return answers[-1] == 200

    assert poll(admitted, timeout=lease * 5)
    assert set(answers) <= {200, 429} and time.monotonic() - killed_at < lease * 5


def _redis_now(client: Any) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_the_token_budget_is_charged_with_real_usage_across_hosts(servers, redis_prefix, fake_openai) -> None:
    env = {"BUPPLE_TOKEN_BUDGET": "100/hour", "BUPPLE_REDIS_URL": REDIS_URL, "BUPPLE_REDIS_PREFIX": redis_prefix}
    first, second = servers(**env), servers(**env)
    fake_openai.script = Script(chunks=["ok"], input_tokens=60, output_tokens=30)
    assert post(first).status_code == 200
    assert post(second).status_code == 200  # 90 of 100 used: still under
    assert poll(lambda: post(first).status_code == 429)  # 180 used once the second stream was charged
    refused = post(second)
    assert_429(refused, "budget_exhausted", 3600)
    assert "100/hour" in refused.json()["error"]["message"]
    assert len(fake_openai.requests) == 2


def test_redis_down_falls_back_to_each_workers_memory_without_failing(servers, fake_openai) -> None:
    server = servers(BUPPLE_REDIS_URL="redis://127.0.0.1:9/0", BUPPLE_RATE_LIMIT="2/minute",
                     BUPPLE_TOKEN_BUDGET="1000/day", BUPPLE_MAX_STREAMS_PER_USER="1")
    fake_openai.script = Script(chunks=["ok"])
    answers = [post(server) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]  # the limits still hold, per worker
    assert_429(answers[2], "rate_limit_exceeded", 60)
    assert "Redis does not answer" in server.read_log()
    assert len(fake_openai.requests) == 2


def test_the_widget_counts_down_a_429_in_chromium(start_server, fake_openai) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, send

    server = start_server(BUPPLE_RATE_LIMIT="1 per 4 seconds", BUPPLE_DEFAULT_ENGINE_DRIVER="openai")
    fake_openai.script = Script(chunks=["Hello ", "again"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(base_url=server.url).new_page()
        page.goto("/chat")
        send(page, "first")
        expect(page.get_by_test_id("message-assistant").last).to_have_text("Hello again")
        send(page, "second")
        error = page.get_by_test_id("error")
        expect(error).to_have_attribute("data-code", "rate_limit_exceeded")
        countdown = page.get_by_test_id("retry-countdown")
        expect(countdown).to_have_text(re.compile(r"Try again in [1-5] s\."))
        expect(page.get_by_test_id("retry")).to_be_disabled()
        expect(countdown).to_have_text("You can try again now.", timeout=10_000)  # it counted down to zero
        page.get_by_test_id("retry").click()
        expect(page.get_by_test_id("message-assistant").last).to_have_text("Hello again")
        browser.close()
    assert len(fake_openai.requests) == 2


def test_one_renewer_renews_every_stream_of_a_worker_and_dies_with_it(servers, redis_prefix, fake_openai) -> None:
    import redis

    lease = 3
    env = {"BUPPLE_MAX_STREAMS_PER_USER": "2", "BUPPLE_STREAM_LEASE": str(lease), "BUPPLE_REDIS_URL": REDIS_URL,
           "BUPPLE_REDIS_PREFIX": redis_prefix}
    server = servers(**env)
    fake_openai.script = Script(chunks=["a", "b"], gated=True)
    held = [RawStream(server.url, {"message": "one", "provider": "openai"})]
    assert fake_openai.wait_for_requests(1, timeout=20)
    held.append(RawStream(server.url, {"message": "two", "provider": "openai"}))
    assert fake_openai.wait_for_requests(2, timeout=20)
    client = redis.Redis.from_url(REDIS_URL)
    key = f"{redis_prefix}:streams:ip:127.0.0.1"
    first = dict(client.zrange(key, 0, -1, withscores=True))
    assert len(first) == 2

    def renewed_together() -> bool:
        scores = dict(client.zrange(key, 0, -1, withscores=True))
        # One call renews both (one Redis clock reading: one score), past the first lease's end.
        return scores.keys() == first.keys() and len(set(scores.values())) == 1 and \
            min(scores.values()) > max(first.values())

    assert poll(renewed_together, timeout=lease * 3)
    assert poll(lambda: _redis_now(client) > max(first.values()) + 0.5, timeout=lease * 3)
    assert_429(post(server), "too_many_streams", lease)  # both still held after their first lease ran out
    os.kill(_worker_pids(server)[0], signal.SIGKILL)
    assert fake_openai.wait_for_client_close(20) is not None
    for stream in held:
        stream.vanish()
    last = max(client.zscore(key, member) or 0 for member in first)
    # Nobody renews a killed worker's leases: they end at the last renewal's expiry, and the slots are free.
    assert poll(lambda: _redis_now(client) > last + 0.2, timeout=lease * 3)
    assert all((client.zscore(key, m) or 0) <= last for m in first)  # not renewed since the kill
    fake_openai.script = Script(chunks=["ok"])

    def two_admitted() -> bool:
        try:
            return [post(server).status_code for _ in range(2)] == [200, 200]
        except requests.ConnectionError:  # the master is starting a new worker
            return False

    assert poll(two_admitted, timeout=lease * 5)


def test_a_token_budget_and_a_slot_are_one_redis_call(redis_prefix) -> None:
    import redis
    from limits.storage import storage_from_string

    from bupple_flask.budget import TokenBudget
    from bupple_flask.leases import RedisLeases

    leases = RedisLeases(redis.Redis.from_url(REDIS_URL), redis_prefix)
    budget = TokenBudget(storage_from_string(REDIS_URL), redis_prefix)
    counter = budget.counter("100/hour", "user:ada")
    assert counter is not None and counter[1] == 100
    assert leases.acquire_within("user:ada", "s1", 2, 60, counter) is None  # nothing spent yet: a slot
    budget.charge("100/hour", "user:ada", 99)
    assert leases.acquire_within("user:ada", "s2", 2, 60, counter) is None  # 1 token left
    assert leases.acquire_within("user:ada", "s3", 2, 60, counter)[0] == "streams"  # two open already
    leases.release("user:ada", "s2")
    budget.charge("100/hour", "user:ada", 1)
    assert budget.wait("100/hour", "user:ada") is not None  # the library's own check agrees: used up
    kind, wait = leases.acquire_within("user:ada", "s4", 2, 60, counter)
    assert kind == "budget" and 3500 < wait <= 3600
    assert leases.client.zscore(f"{redis_prefix}:streams:user:ada", "s4") is None  # refused: no slot taken
    assert budget.counter("100/hour", "user:bob") != counter


def test_the_worker_renewer_starts_with_the_first_stream_and_stops_after_the_last() -> None:
    from bupple_flask.leases import MemoryLeases
    from bupple_flask.renewer import LeaseRenewer

    lease = 1.5
    leases = MemoryLeases()
    renewer = LeaseRenewer(lease, lambda call, fallback: call())
    assert not renewer.running
    for member in ("s1", "s2"):
        assert leases.acquire("ip:x", member, 2, lease) is None
        renewer.add(member, [(leases, leases, "ip:x")])
    assert renewer.running
    started = time.monotonic()
    # Held past two leases: renewed, so a third stream is still refused.
    assert poll(lambda: time.monotonic() > started + lease * 2, timeout=10)
    assert leases.acquire("ip:x", "s3", 2, lease) is not None
    renewer.discard("s1")
    renewer.discard("s2")
    assert poll(lambda: not renewer.running, timeout=5)  # nothing held: the renewer ended
    assert poll(lambda: leases.acquire("ip:x", "s3", 2, lease) is None, timeout=5)  # and the leases ran out
    renewer.add("s3", [(leases, leases, "ip:x")])  # the next stream starts it again
    assert renewer.running
    renewer.discard("s3")
    assert poll(lambda: not renewer.running, timeout=5)
