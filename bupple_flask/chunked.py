"""HTTP/1.1 ``Transfer-Encoding: chunked``, decoded incrementally: any split of the bytes gives the same body."""

from __future__ import annotations

_MAX_LINE = 64 * 1024

# ChunkedDecoder states
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class FramingError(ValueError):
    """The body broke HTTP/1.1 chunked framing."""


class ChunkedDecoder:
    """``Transfer-Encoding: chunked``, decoded incrementally: any split of the bytes gives the same body."""

    __slots__ = ("_buffer", "_left", "_state")

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        self._state = _SIZE

    @property
    def done(self) -> bool:
        """The last (zero-size) chunk and the trailer section have been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """Return the body bytes that ``data`` completes (possibly none)."""
        if self._state == _SIZE and not self._buffer:
            # Per relayed chunk: data is usually exactly one whole chunk ("<size>\r\n<bytes>\r\n").
            newline = data.find(b"\n", 0, 18)
            if newline > 0 and data[newline - 1] == 13:
                try:
                    size = int(data[: newline - 1], 16)
                except ValueError:
                    size = 0  # an extension or a bad line: the general path below decides
                if size > 0 and len(data) == newline + size + 3 and data.endswith(b"\r\n"):
                    return data[newline + 1 : newline + 1 + size]
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and self._state != _DONE:
            if self._state == _DATA:
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                if end - pos > _MAX_LINE:
                    raise FramingError("chunk header line too long")
                self._buffer = data[pos:]
                break
            self._line(data[pos:newline].rstrip(b"\r"))
            pos = newline + 1
        if self._state == _DONE and pos < end:
            raise FramingError("bytes after the last chunk")
        return out[0] if len(out) == 1 else b"".join(out)

    def _line(self, line: bytes) -> None:
        if self._state == _SIZE:
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FramingError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise FramingError("negative chunk size")
            self._left = size
            self._state = _DATA if size else _TRAILER
        elif self._state == _DATA_END:
            if line:
                raise FramingError("chunk data longer than its size")
            self._state = _SIZE
        elif not line:  # _TRAILER: an empty line ends the trailer section
            self._state = _DONE
