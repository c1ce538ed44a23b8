"""The HTTP layer every provider shares: one pooled ``requests.Session``, timeouts, clean closes.

``requests`` exceptions are translated into our typed errors here, once, so provider
modules only deal with bytes and JSON. Tests and users can swap the transport the
``requests`` way: ``engine.http.mount("https://", MyAdapter())``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from .config import ca_bundle, environment_has_proxies_or_netrc
from .errors import (
    ProviderDisconnectedError,
    ProviderUnavailableError,
    StreamTimeoutError,
)
from .pooled_connections import StreamingAdapter
from .version import __version__

USER_AGENT = f"bupple-flask/{__version__}"


class _PoolFullFilter(logging.Filter):
    """Beyond ``pool_size`` concurrent streams, urllib3 warns once per stream that it will not
    keep the extra connection idle; that is the intended cap, not a problem worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Connection pool is full")


logging.getLogger("urllib3.connectionpool").addFilter(_PoolFullFilter())


def create_session(pool_size: int) -> requests.Session:
    """A session whose pool keeps up to ``pool_size`` idle keep-alive connections per host.

    urllib3's default (10) would discard and re-open connections under load, paying a TCP
    (and TLS) handshake per stream. Its pools check an idle connection without yielding
    (:mod:`.pooled_connections`).
    """
    session = requests.Session()
    adapter = StreamingAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if not environment_has_proxies_or_netrc():
        # requests re-reads every environment variable (proxies) and ~/.netrc on each request;
        # with neither in use, read the CA bundle setting once and skip that per-stream cost.
        session.trust_env = False
        session.verify = ca_bundle()
    return session


url_guards: list[Callable[[str], None]] = []
"""Called with each provider URL before it is requested (per stream); may raise to refuse it.

The pytest plugin (:mod:`bupple_flask.testing`) installs one that refuses any host but loopback.
"""


def post_stream(
    session: requests.Session,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    connect_timeout: float,
    idle_timeout: float,
    provider: str,
) -> requests.Response:
    """POST and return the response once its headers arrived; the body is left unread."""
    for guard in url_guards:
        guard(url)
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    request_headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **headers}
    try:
        pool = _direct_pool(session, url)
        if pool is not None:
            return _post_direct(pool, session, url, payload, request_headers, connect_timeout, idle_timeout)
        return session.post(
            url,
            data=payload,
            headers=request_headers,
            stream=True,
            timeout=(connect_timeout, idle_timeout),
            allow_redirects=False,
        )
    except (requests.exceptions.ConnectTimeout, ConnectTimeoutError) as exc:
        if isinstance(exc, NewConnectionError):  # urllib3 files "refused" under connect errors too
            message = f"Could not connect to {provider}: {_reason(exc)}"
            raise ProviderUnavailableError(message, provider=provider) from exc
        raise StreamTimeoutError(
            f"Timed out connecting to {provider} after {connect_timeout:g}s", kind="connect", provider=provider
        ) from exc
    except (requests.exceptions.ReadTimeout, ReadTimeoutError) as exc:
        raise StreamTimeoutError(
            f"{provider} sent no response within {idle_timeout:g}s", kind="idle", provider=provider
        ) from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ProviderUnavailableError(f"Could not connect to {provider}: {_reason(exc)}", provider=provider) from exc


def _direct_pool(session: requests.Session, url: str) -> Any:
    """The urllib3 pool of the session's own adapter for ``url``, or None when ``session.post`` must send it.

    Sending through the pool skips what a streaming POST to a provider never uses (cookie
    jars, auth and proxy look-ups, hooks, redirects): about a third of the cost of opening
    a stream. Anything a user configured on the session (a mounted adapter, proxies from
    the environment, auth, hooks, a client certificate) takes the ``requests`` path.
    """
    adapter = session.get_adapter(url)
    if not isinstance(adapter, HTTPAdapter) or type(adapter) not in (StreamingAdapter, HTTPAdapter):
        return None  # a user's own adapter (even a subclass) sends its own way
    if session.trust_env or session.proxies or session.auth or session.cert:
        return None
    if any(session.hooks.values()) or len(session.cookies):
        return None
    target = requests.PreparedRequest()
    target.url = url
    pool = adapter.get_connection_with_tls_context(target, session.verify)
    adapter.cert_verify(pool, url, session.verify, None)  # type: ignore[no-untyped-call]
    return pool


def _post_direct(
    pool: Any,
    session: requests.Session,
    url: str,
    payload: bytes,
    headers: Mapping[str, str],
    connect_timeout: float,
    idle_timeout: float,
) -> requests.Response:
    raw = pool.urlopen(
        method="POST",
        url=urllib3.util.parse_url(url).request_uri,
        body=payload,
        headers={**session.headers, **headers},
        redirect=False,
        assert_same_host=False,
        preload_content=False,
        decode_content=False,
        retries=False,
        timeout=urllib3.Timeout(connect=connect_timeout, read=idle_timeout),
    )
    response = requests.Response()
    response.status_code = raw.status
    response.headers = CaseInsensitiveDict(raw.headers)
    response.raw = raw
    response.reason = raw.reason
    response.url = url
    return response


def iter_body(response: requests.Response, *, idle_timeout: float, provider: str) -> Iterator[bytes]:
    """Network chunks as they arrive (``iter_content(None)``: no line-splitting, no lag)."""
    try:
        yield from _chunks(response, None)
    except requests.exceptions.ConnectionError as exc:
        if _is_read_timeout(exc):
            raise idle_timeout_error(provider, idle_timeout) from exc
        raise ProviderDisconnectedError(f"Connection to {provider} was lost mid-stream", provider=provider) from exc
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise ProviderDisconnectedError(f"Connection to {provider} was cut mid-stream", provider=provider) from exc


def idle_timeout_error(provider: str, idle_timeout: float) -> StreamTimeoutError:
    """The provider went quiet mid-stream for longer than the idle timeout."""
    return StreamTimeoutError(f"{provider} sent nothing for {idle_timeout:g}s", kind="idle", provider=provider)


def read_error_body(response: requests.Response, limit: int = 256 * 1024) -> bytes:
    """Read at most ``limit`` bytes of an error body; never hang on a huge one."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in _chunks(response, 16384):
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except requests.exceptions.RequestException:
        pass
    return b"".join(parts)[:limit]


def _chunks(response: requests.Response, size: int | None) -> Iterator[bytes]:
    """``iter_content``, also for a response a mounted adapter built with its body in ``content``
    and no ``raw`` stream (``requests`` itself would call ``None.read``)."""
    if response.raw is None:
        content = response.content  # the adapter's body, or None
        if content:
            yield content
        return
    yield from response.iter_content(chunk_size=size)


def hard_close(response: requests.Response) -> None:
    """Close the upstream connection now, even if another greenlet is blocked reading it.

    ``shutdown`` makes the peer see the close at once (FIN) and wakes a blocked reader; a
    plain ``close`` can wait for that reader. The connection is never returned to the pool.
    """
    sock = _socket_of(response)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    try:
        response.close()
    except Exception:  # closing must never raise into a generator's finally
        pass


def _socket_of(response: requests.Response) -> socket.socket | None:
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        fp = getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(fp, "_sock", None)
    return sock


def _is_read_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ReadTimeoutError, socket.timeout, TimeoutError)):
            return True
        if seen.args and isinstance(seen.args[0], BaseException) and seen.args[0] is not seen:
            seen = seen.args[0]
        else:
            seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host not found"
    return exc.__class__.__name__
