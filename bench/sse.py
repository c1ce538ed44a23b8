"""Incremental HTTP/1.1 response, chunked-encoding and SSE parsers.

Pure functions over bytes, so the load client can parse thousands of raw
sockets without an HTTP library in the hot path, and tests can feed byte
streams split at awkward boundaries.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

TS_RE = re.compile(r"<ts:(\d+)>")


class ProtocolError(Exception):
    """The peer sent bytes that are not valid HTTP/chunked framing."""


@dataclass
class ResponseHead:
    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        v = self.headers.get("content-length")
        return int(v) if v is not None else None


def parse_head(buf: bytes) -> tuple[ResponseHead | None, bytes]:
    """Return (head, rest) once the header block is complete, else (None, buf)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise ProtocolError("header block too large")
        return None, buf
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return ResponseHead(int(parts[1]), headers), buf[end + 4:]


class ChunkedDecoder:
    """Decode Transfer-Encoding: chunked incrementally; ``done`` after the 0 chunk."""

    def __init__(self) -> None:
        self._buf = b""
        self._need = -1  # -1: reading size line; >=0: bytes of data left; -2: CRLF after data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = []
        buf = self._buf
        while not self.done:
            if self._need == -1:
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                size_s = buf[:i].split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError as e:
                    raise ProtocolError(f"bad chunk size {size_s!r}") from e
                buf = buf[i + 2:]
                if size == 0:
                    self.done = True  # trailers ignored
                    break
                self._need = size
            elif self._need == -2:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ProtocolError("missing CRLF after chunk")
                buf = buf[2:]
                self._need = -1
            else:
                take = buf[: self._need]
                out.append(take)
                buf = buf[len(take):]
                self._need -= len(take)
                if self._need == 0:
                    self._need = -2
                else:
                    break
        self._buf = buf
        return b"".join(out)


@dataclass
class SSEEvent:
    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


class SSEParser:
    """Split an SSE byte stream into events (LF, CRLF or CR line ends)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[SSEEvent]:
        buf = self._buf + data
        hold = False
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
            # a lone CR at the very end may be the first half of CRLF: keep it
            hold = buf.endswith(b"\r")
            if hold:
                buf = buf[:-1]
            buf = buf.replace(b"\r", b"\n")
        events = []
        while True:
            i = buf.find(b"\n\n")
            if i < 0:
                break
            block, buf = buf[:i], buf[i + 2:]
            ev = _parse_block(block.decode("utf-8", "replace"))
            if ev is not None:
                events.append(ev)
        self._buf = buf + (b"\r" if hold else b"")
        return events


def _parse_block(block: str) -> SSEEvent | None:
    ev = SSEEvent()
    data: list[str] = []
    seen = False
    for line in block.split("\n"):
        if line.startswith(":"):
            ev.comments.append(line[1:].strip())
            seen = True
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        seen = True
        if name == "data":
            data.append(value)
        elif name == "event":
            ev.event = value
        elif name == "id":
            ev.id = value
        elif name == "retry" and value.isdigit():
            ev.retry = int(value)
    if data:
        ev.data = "\n".join(data)
    return ev if seen else None


@dataclass
class Item:
    """One decoded stream item: kind is chunk, done, error, ping or other."""

    kind: str
    content: str = ""
    ts_ns: int | None = None


def interpret(ev: SSEEvent, fmt: str) -> list[Item]:
    """Map an SSE event to items for the ``bupple`` or ``openai`` wire format."""
    items = [Item("ping") for c in ev.comments if c.startswith("ping")]
    if ev.data is None:
        return items
    if fmt == "openai":
        if ev.data.strip() == "[DONE]":
            return items + [Item("done")]
        try:
            obj = json.loads(ev.data)
        except ValueError:
            return items + [Item("error", ev.data[:200])]
        if "error" in obj:
            return items + [Item("error", json.dumps(obj["error"])[:200])]
        for ch in obj.get("choices") or []:
            content = (ch.get("delta") or {}).get("content")
            if content:
                items.append(_chunk(content))
        return items
    try:
        obj = json.loads(ev.data)
    except ValueError:
        return items + [Item("error", ev.data[:200])]
    typ = obj.get("type")
    if typ == "chunk":
        items.append(_chunk(obj.get("content") or ""))
    elif typ == "completion" or obj.get("done") is True:
        items.append(Item("done"))
    elif typ == "error":
        items.append(Item("error", str(obj.get("error") or obj.get("message") or obj)[:200]))
    else:
        items.append(Item("other", str(typ)))
    return items


def _chunk(content: str) -> Item:
    m = TS_RE.search(content)
    return Item("chunk", content, int(m.group(1)) if m else None)
