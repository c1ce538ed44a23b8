"""The per-stream timer that replaces a gevent timeout per read (run under gevent, in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import socket, time, gevent
    from bupple_flask.socket_reader import Alarm, AlarmExpired

    a, b = socket.socketpair()
    alarm = Alarm()

    def read(timeout):
        alarm.start(timeout)
        try:
            return b.recv(100)
        except AlarmExpired:
            return None
        finally:
            alarm.stop()

    started = time.monotonic()
    assert read(0.2) is None                      # nothing came: the wait ends when due
    waited = time.monotonic() - started
    assert 0.15 < waited < 5, waited              # generous: only a timer far too late (a bug) takes 5 s

    gevent.spawn_later(0.05, a.send, b"x")
    assert read(0.3) == b"x"                      # data before the due time
    time.sleep(0.5)                               # the timer fires meanwhile: it must not land here
    gevent.spawn_later(0.3, a.send, b"y")
    assert read(1.0) == b"y"                      # an early timer re-arms instead of cutting this wait short

    def other():                                  # one Alarm, waits in another greenlet (open here, read there)
        return read(0.1)
    assert gevent.spawn(other).get() is None
    alarm.close()
    print("ok")
    """
)


def test_alarm_fires_only_into_a_due_wait() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
