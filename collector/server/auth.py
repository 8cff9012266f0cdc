"""Bearer-token authentication with scopes (``ingest``, ``read``, ``admin``).

With no tokens configured every request is allowed — the server then only binds to loopback
(``bind_allowed``). ``admin`` implies ``read`` and ``ingest``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable

from collector.config import AuthConfig, Scope
from collector.errors import ConfigError, PermissionDenied, Unauthenticated


class Authenticator:
    """Checks ``authorization`` header values against the configured tokens."""

    def __init__(self, config: AuthConfig) -> None:
        self._tokens = [(t.token.encode(), frozenset(t.scopes)) for t in config.tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None, scope: Scope) -> None:
        """Raise ``Unauthenticated``/``PermissionDenied`` unless the header grants ``scope``."""
        if not self._tokens:
            return
        scopes = self.scopes(authorization)
        if scope not in scopes and Scope.ADMIN not in scopes:
            raise PermissionDenied(f"this token lacks the '{scope.value}' scope")

    def authenticate(self, authorization: str | None) -> None:
        """Raise ``Unauthenticated`` unless the header carries a configured token (any scope).

        The gRPC admission step calls this before a request's message is read, so a caller
        without a token costs the server no more than its headers."""
        if self._tokens:
            self.scopes(authorization)

    def scopes(self, authorization: str | None) -> frozenset[Scope]:
        """The scopes of the header's token; ``Unauthenticated`` if it names none (auth on)."""
        if not authorization:
            raise Unauthenticated("missing bearer token (send 'authorization: Bearer <token>')")
        kind, _, value = authorization.strip().partition(" ")
        if kind.lower() == "basic" and value:
            # Prefect's client with PREFECT_API_AUTH_STRING="user:<token>" (any user name).
            return self.auth_string_scopes(_basic_credentials(value.strip()))
        if kind.lower() != "bearer" or not value:
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        return self._token_scopes(value.strip())

    def auth_string_scopes(self, auth_string: str | None) -> frozenset[Scope]:
        """The scopes of a Prefect auth string (``user:<token>``, or the bare token), as
        Prefect's client sends it in a Basic header and in its websocket handshake."""
        if not auth_string:
            raise Unauthenticated("missing token (PREFECT_API_AUTH_STRING='herald:<token>')")
        try:
            return self._token_scopes(auth_string)
        except Unauthenticated:
            _, colon, password = auth_string.partition(":")
            if not colon:
                raise
            return self._token_scopes(password)

    def _token_scopes(self, value: str) -> frozenset[Scope]:
        try:
            given = value.encode()
        except UnicodeEncodeError:
            # aiohttp hands undecodable header bytes over as lone surrogates; no configured
            # token (a str) can match them, so this is a wrong token, not a server error.
            raise Unauthenticated("the bearer token is not valid UTF-8 text") from None
        found: frozenset[Scope] | None = None
        for token, scopes in self._tokens:
            # Compare every token in constant time so timing does not reveal a prefix.
            if hmac.compare_digest(token, given):
                found = scopes
        if found is None:
            raise Unauthenticated("unknown bearer token")
        return found


def _basic_credentials(value: str) -> str:
    """``user:password`` from a Basic header's value (``Unauthenticated`` if malformed)."""
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthenticated("the Basic credentials are not valid base64 text") from None


def authorization_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The ``authorization`` value among gRPC call metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{address!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_allowed(address: str, auth: Authenticator, insecure: bool) -> None:
    """Refuse a non-loopback bind with no tokens configured unless ``insecure``."""
    host, _ = split_address(address)
    if not auth.enabled and not insecure and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {address} without auth tokens: configure [auth] tokens, "
            "or pass --insecure to accept unauthenticated traffic from the network"
        )
