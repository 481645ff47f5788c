"""One HTTP/1.1 client connection: h11's protocol state machine on asyncio's streams.

h11 is the HTTP/1.1 parser httpcore itself wraps. Used directly, a request costs one h11
exchange and a few stream reads: httpcore's connection put AnyIO locks (each yielding to the
event loop on every uncontended acquire), trace hooks and seven async generators around the
same exchange, and with httpx's request and response models they were over a third of the CPU
of a burst of calls.

A connection carries one request at a time. Its response's body is read (or the response
closed) before the connection can carry the next: `Response.close` hands it back to its
pool when the message ended cleanly and both sides keep the connection alive, and closes it
otherwise. What may go wrong is named by the exceptions below, which the callers turn into
their own one-line errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11

READ_SIZE = 64 * 1024
OriginKey = tuple[str, str, int]  # scheme, host, port


class TransportError(Exception):
    """The request could not be completed; the class name says at which step."""


class TransportTimeout(TransportError):
    pass


class PoolTimeout(TransportTimeout):
    pass


class ConnectTimeout(TransportTimeout):
    pass


class WriteTimeout(TransportTimeout):
    pass


class ReadTimeout(TransportTimeout):
    pass


class ConnectError(TransportError):
    pass


class WriteError(TransportError):
    pass


class ReadError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    """The server's answer is not well-formed HTTP/1.1, or it closed the connection early."""


class LocalProtocolError(TransportError):
    """The request cannot be sent as HTTP/1.1 (e.g. a body longer than its Content-Length)."""


class BodyTooLarge(Exception):
    """The response body is longer than the reader's cap."""


class Connection:
    """One open connection; `usable` says whether an idle one may carry another request."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        origin: OriginKey,
        keepalive_expiry: float,
    ) -> None:
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._protocol = h11.Connection(h11.CLIENT)
        self._keepalive_expiry = keepalive_expiry
        self._idle_until = 0.0
        self.closed = False

    def usable(self, now: float) -> bool:
        """An idle connection may be reused: not expired, not closed by its server meanwhile
        (a server closing an idle keep-alive connection is the common case), and sent nothing
        since its last answer: bytes that arrive unasked would be read as the answer to the
        next request, which may be another user's."""
        return (
            not self.closed
            and now < self._idle_until
            and not self._reader.at_eof()
            and not self._writer.transport.is_closing()
            # asyncio offers no peek; the reader's buffer is what it has received unread
            and not getattr(self._reader, "_buffer", b"")
        )

    async def send(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        phase: Callable[[str], None],
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Send the request and wait for the response's status and headers. `phase` is told
        when the wait moves from writing to reading (the caller times each)."""
        events: list[h11.Event] = [h11.Request(method=method, target=target, headers=headers)]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        try:
            data = b"".join(self._protocol.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        phase("write")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: written after close
            raise WriteError(str(exc) or type(exc).__name__) from None
        phase("read")
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                return event.status_code, list(event.headers)
            if not isinstance(event, h11.InformationalResponse):  # 1xx: the answer follows
                raise RemoteProtocolError(f"unexpected {type(event).__name__} from the server")

    async def read_body(self, cap: int) -> bytes:
        """The rest of the response's body, at most `cap` bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if type(event) is h11.Data:
                size += len(event.data)
                if size > cap:
                    raise BodyTooLarge(size)
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                return b"".join(chunks)
            else:
                raise RemoteProtocolError(f"unexpected {type(event).__name__} from the server")

    def body_already_read(self) -> bool:
        """Whether the whole body has already arrived (a small answer usually comes in the
        same packet as its headers): consumed without waiting, so the connection can be kept
        even when nobody reads the body."""
        try:
            while True:
                event = self._protocol.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return False
                if type(event) is h11.EndOfMessage:
                    return True
                if type(event) is not h11.Data:
                    return False
        except h11.RemoteProtocolError:
            return False

    def reusable(self, now: float) -> bool:
        """After a complete exchange: start the next cycle if both sides keep the connection
        alive; whether it may go back to the pool."""
        protocol = self._protocol
        both_done = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
        # Bytes after the end of the answer (a second, unasked answer; a body after a 204)
        # would be taken for the next request's answer.
        if self.closed or not both_done or protocol.trailing_data[0]:
            return False
        protocol.start_next_cycle()
        self._idle_until = now + self._keepalive_expiry
        return True

    async def _next_event(self) -> h11.Event:
        protocol = self._protocol
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                if event is h11.PAUSED or type(event) is h11.ConnectionClosed:
                    raise RemoteProtocolError("the server closed the connection")
                return event  # type: ignore[return-value]
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as exc:
                raise ReadError(str(exc) or type(exc).__name__) from None
            if not data and protocol.their_state is h11.SEND_RESPONSE:
                raise RemoteProtocolError("the server closed the connection without answering")
            protocol.receive_data(data)

    def close(self) -> None:
        """Drop the connection at once. Never a graceful close: that waits until the server
        has read what is still buffered (forever, for a server that stops reading) or, on TLS,
        for its close_notify (30 s), and a connection is closed only when it is done or
        broken."""
        if not self.closed:
            self.closed = True
            self._writer.transport.abort()


class Response:
    """A response's status and headers; its body is read with `read`, at most once. Closing
    it (always, in a finally) gives its connection back to the pool or closes it."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        connection: Connection,
        release: Callable[[Connection, bool], None],
    ) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._release = release
        self._ended = False  # the whole message was read
        self._closed = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` in lower case, as h11 gives them)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self, cap: int) -> bytes:
        try:
            body = await self._connection.read_body(cap)
        except BaseException:
            self.close()
            raise
        self._ended = True
        self.close()
        return body

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ended = self._ended or self._connection.body_already_read()
        self._release(self._connection, ended)
