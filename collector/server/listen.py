"""Binding the two listening ports, before the store opens, with errors a user can act on.

A port that cannot be bound is a ``ConfigError`` naming the address, the config key and the
flag (``cannot listen on 127.0.0.1:4317 for gRPC (server.grpc, --grpc): address already in
use``); ``herald serve`` prints it as one line and exits 2. gRPC's C-core also logs a failed
bind itself, as a raw ``E1203 … add_port.cc:83] Failed to add port …`` line on stderr: that
line is captured while the port is added and dropped when the bind failed (our error says it
better), or written back unchanged when it succeeded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import grpc

from collector.errors import ConfigError
from collector.server.auth import split_address

_KEYS = {"gRPC": "server.grpc, --grpc", "HTTP": "server.http, --http"}


def _cannot_listen(address: str, surface: str, reason: str) -> ConfigError:
    return ConfigError(f"cannot listen on {address} for {surface} ({_KEYS[surface]}): {reason}")


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    return (exc.strerror or str(exc)).lower()


def _tcp_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not listening) to every address ``host`` resolves to, as asyncio's
    ``create_server`` binds them: SO_REUSEADDR, IPv6 sockets IPv6-only. With port 0 they
    share the port the first one got."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        seen = set()
        for family, kind, proto, _, addr in infos:
            if (family, addr[:2]) in seen:
                continue
            seen.add((family, addr[:2]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_http(address: str) -> list[socket.socket]:
    """Bound sockets for the HTTP server (aiohttp serves them with ``SockSite``)."""
    host, port = split_address(address)
    try:
        return _tcp_sockets(host, port)
    except OSError as exc:
        raise _cannot_listen(address, "HTTP", _reason(exc)) from None


def bind_grpc(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    """Add ``address`` to ``server`` (binding it now) and return the bound port."""
    with _stderr_captured() as captured:
        try:
            if credentials is not None:
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)
        except RuntimeError:
            captured.keep = False  # C-core's own log of this failure: the error below says it
    reason = _probe(address) or _last_log_message(captured.text) or "gRPC could not bind it"
    raise _cannot_listen(address, "gRPC", reason)


def _probe(address: str) -> str | None:
    """Why ``address`` cannot be bound, asked of the OS (C-core's exception only says
    "Failed to bind"); gRPC binds with SO_REUSEADDR too, so the answers agree. None if the
    OS would bind it."""
    try:
        host, port = split_address(address)
        for sock in _tcp_sockets(host, port):
            sock.close()
    except OSError as exc:
        return _reason(exc)
    return None


def _last_log_message(text: str) -> str | None:
    """The message of C-core's last log line (``E1203 04:26:44.81 16122 file.cc:83] msg``)."""
    lines = [line.partition("] ")[2] for line in text.splitlines() if "] " in line]
    return lines[-1].strip() if lines else None


class _Captured:
    def __init__(self) -> None:
        self.keep = True
        self.text = ""


@contextlib.contextmanager
def _stderr_captured() -> Iterator[_Captured]:
    """Send file descriptor 2 to a temporary file for the block (C-core writes its log there,
    not through Python), then write what was captured back unless ``clear()`` was called."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read()
            captured.text = text.decode(errors="replace")
            if captured.keep and text:
                os.write(2, text)
