"""A small HTTP/1.1 client on asyncio streams, for the indexer's few requests.

Scope: one keep-alive connection per client, one request at a time, request
bodies as bytes, responses read whole but bounded (``Content-Length``,
``chunked``, or read-to-close). Enough for ``_bulk``, ``_template`` and
``_count``; not a general client, and not meant to become one.

A request that fails on a *reused* connection before any byte of the response
arrived is retried once on a fresh connection: servers close idle keep-alive
connections whenever they like, and that race is not an error worth reporting.
Callers must therefore only send requests that are safe to repeat (the indexer
sends ``_bulk`` ``create`` actions with fixed ``_id``s, which are).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# Status line plus headers. OpenSearch sends a few hundred bytes; anything near
# this is not a server we should keep talking to.
MAX_HEAD_BYTES = 64 * 1024
# Default cap on a response body: a 1,000-item bulk response with an error per
# item is about 0.5 MB; the cap leaves room and still bounds memory.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# How long closing a TLS connection may wait for the peer's close_notify.
CLOSE_TIMEOUT_S = 1.0


class HttpError(Exception):
    """Base of this module's errors."""


class HttpConnectionError(HttpError):
    """No response: connect failed, connection lost, timeout, or TLS failure.

    The request may or may not have reached the server; retrying is the
    caller's decision.
    """


class HttpProtocolError(HttpConnectionError):
    """The server's reply is not HTTP/1.1 we accept (malformed, or over a limit)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes


class HttpClient:
    """HTTP/1.1 client for one origin (``scheme://host:port`` plus a base path).

    Args:
        url: ``http://`` or ``https://`` origin, optionally with a base path
            (e.g. behind a reverse proxy). Credentials do not belong in it.
        ssl_context: required for ``https``; ignored for ``http``.
        headers: sent with every request (e.g. ``Authorization``).
    """

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"indexer url must be http(s)://host[:port][/path], got {url!r}")
        if parts.username is not None or parts.password is not None:
            # Never echo the url: it holds a password.
            raise ValueError("indexer url must not contain credentials; use username/password")
        if parts.query or parts.fragment:
            raise ValueError(f"indexer url must not have a query or fragment: {url!r}")
        self._tls = parts.scheme == "https"
        if self._tls and ssl_context is None:
            raise ValueError("an https url needs an ssl_context")
        self._ssl = ssl_context if self._tls else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._base = parts.path.rstrip("/")
        host_header = f"[{self._host}]" if ":" in self._host else self._host
        default_port = 443 if self._tls else 80
        self._host_header = (
            host_header if self._port == default_port else f"{host_header}:{self._port}"
        )
        self.origin = f"{parts.scheme}://{self._host_header}{self._base}"
        self._headers = dict(headers or {})
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._max_response_bytes = max_response_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        Raises:
            HttpConnectionError: no (complete) response; see the class docstring.
            HttpProtocolError: the response is malformed or over a limit.
        """
        head = self._head(method, path, body, headers)
        for attempt in (0, 1):
            reused = self._writer is not None
            got_status = False
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    reader, writer = await self._connection()
                    writer.write(head)
                    if body:
                        writer.write(body)
                    await writer.drain()
                    status, resp_headers = await self._read_head(reader)
                    got_status = True
                    resp_body = await self._read_body(reader, method, status, resp_headers)
            except HttpProtocolError:
                await self._drop()
                raise
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as exc:
                await self._drop()
                stale = reused and not got_status and not isinstance(exc, TimeoutError)
                if stale and attempt == 0:
                    continue
                what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
                raise HttpConnectionError(f"{method} {self.origin}{path} {what}") from None
            if resp_headers.get("connection", "").lower() == "close":
                await self._drop()
            return HttpResponse(status, resp_headers, resp_body)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def close(self) -> None:
        await self._drop()

    # -- internals -------------------------------------------------------------

    def _head(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None
    ) -> bytes:
        lines = [f"{method} {self._base}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in self._headers.items()]
        if headers:
            lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            if not self._reader.at_eof() and not self._writer.is_closing():
                return self._reader, self._writer
            await self._drop()
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
                limit=MAX_HEAD_BYTES,
            )
        self._reader, self._writer = reader, writer
        return reader, writer

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpProtocolError(
                    f"{self.origin}: response head over {MAX_HEAD_BYTES} bytes"
                ) from None
            lines = raw[:-4].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpProtocolError(f"{self.origin}: bad status line {lines[0][:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise HttpProtocolError(f"{self.origin}: bad header line {line[:80]!r}")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            if 100 <= status < 200:
                continue  # interim response (100 Continue): the real one follows
            return status, headers

    async def _read_body(
        self, reader: asyncio.StreamReader, method: str, status: int, headers: Mapping[str, str]
    ) -> bytes:
        limit = self._max_response_bytes
        if method == "HEAD" or status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked(reader, limit)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise HttpProtocolError(f"{self.origin}: bad Content-Length {length[:40]!r}")
            n = int(length)
            if n > limit:
                raise HttpProtocolError(f"{self.origin}: response of {n} bytes is over {limit}")
            return await reader.readexactly(n)
        body = await reader.read(limit + 1)  # no length: the body ends with the connection
        while len(body) <= limit and not reader.at_eof():
            more = await reader.read(limit + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > limit:
            raise HttpProtocolError(f"{self.origin}: response over {limit} bytes")
        await self._drop()
        return body

    async def _read_chunked(self, reader: asyncio.StreamReader, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size_line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise HttpProtocolError(f"{self.origin}: chunk size line too long") from None
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpProtocolError(
                    f"{self.origin}: bad chunk size {size_text[:20]!r}"
                ) from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers, ignored
                return b"".join(chunks)
            total += size
            if total > limit:
                raise HttpProtocolError(f"{self.origin}: response over {limit} bytes")
            data = await reader.readexactly(size + 2)
            chunks.append(data[:-2])
