"""gunicorn settings for streaming: gevent workers holding thousands of open SSE responses.

Monkey-patching must happen before anything imports ``ssl``, ``socket`` or ``requests``:
gunicorn reads this file before it loads ``wsgi:app``, so patch here, first.
"""

import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
if worker_class == "gevent":
    from gevent import monkey

    monkey.patch_all()

import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

# Prometheus metrics (BUPPLE_METRICS) from several workers: prometheus_client's multiprocess mode.
# Each worker writes its figures to files in PROMETHEUS_MULTIPROC_DIR and /metrics, on any
# worker, adds them all up. The folder must be set before a worker imports prometheus_client,
# so it is set here, in the master, and inherited: your own folder if you set one (emptied at
# start: figures of an earlier run must not add up), else a temporary one made and removed here.
_metrics_on = os.environ.get("BUPPLE_METRICS", "").strip().lower() in ("1", "true", "yes", "on")
_own_metrics_dir = None
if _metrics_on and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bupple-metrics-")

# Graceful shutdown (SIGTERM; SIGHUP's old workers): a worker stops accepting and lets its replies finish for
# graceful_timeout seconds; BUPPLE_SHUTDOWN_NOTICE seconds before that ends, each reply still running gets a
# retryable server_shutdown error event and is stored (bupple_flask.shutdown). The default graceful time lets
# the longest reply (BUPPLE_ENGINE_MAX_DURATION) finish by itself; set GUNICORN_GRACEFUL_TIMEOUT to your
# platform's grace period (Kubernetes' terminationGracePeriodSeconds, Heroku's 30 s) when it is shorter.
from bupple_flask.shutdown import ShutdownSettings  # noqa: E402  (after patching: the package imports requests)

_shutdown = ShutdownSettings.from_environ()

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count(), 4)))
# Each open stream is one connection; gevent holds thousands per worker.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", 10000))
# gevent workers heartbeat from their own loop, so a long stream never trips this (a sync worker: it outlasts a reply).
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or _shutdown.worker_timeout(worker_class))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT") or _shutdown.graceful_timeout)
keepalive = 5
# Requests over these limits are answered by gunicorn itself (plain text) and never reach the app.
limit_request_line = int(os.environ.get("GUNICORN_LIMIT_REQUEST_LINE", 8190))
limit_request_fields = int(os.environ.get("GUNICORN_LIMIT_REQUEST_FIELDS", 100))
limit_request_field_size = int(os.environ.get("GUNICORN_LIMIT_REQUEST_FIELD_SIZE", 8190))
backlog = 4096
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # empty: no access log
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Never log query strings with secrets: the access log shows the path only.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
# gunicorn >= 24 opens a control socket at one fixed path per user; several servers
# (tests, benchmarks, blue/green deploys) would fight over it.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET", "") == ""


def post_worker_init(worker):
    """Keep garbage collection off the streaming tail, and let SIGTERM end the replies still running in time.

    With thousands of open streams the heap is large, and CPython's full collections
    (which walk all of it) were measured at 67-352 ms each at 2,000 streams: every stream
    stalls meanwhile. Objects alive after boot (modules, the app) are frozen out of
    collection, and collections run less often; reference counting still frees almost
    everything a stream allocates.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(int(os.environ.get("BUPPLE_GC_THRESHOLD", 50_000)), 50, 100)
    from bupple_flask.shutdown import watch_gunicorn_worker

    watch_gunicorn_worker(worker, _shutdown.notice)  # SIGTERM: replies still running near the end get server_shutdown


def worker_int(worker):
    """SIGINT or SIGQUIT: a quick shutdown; every reply still running ends with server_shutdown now."""
    from bupple_flask.shutdown import end_all_streams

    end_all_streams()


def on_starting(server):
    """An earlier run's metric files would add up with this one's: start from an empty folder."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server, worker):
    """A worker that exited (or was killed) no longer has open streams: drop its live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this file made (one you set yourself is left as it is)."""
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
