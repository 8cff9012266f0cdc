"""Herald's one error hierarchy.

Every failure a user can cause or meet is one of these. They are mapped to gRPC status codes
and HTTP statuses once (``collector/server/status.py``) and to CLI messages once
(``cli/_errors.py``); nothing else translates errors.

    HeraldError
    ├── ConfigError            bad configuration file, env var or flag
    ├── InvalidInput           the caller sent something malformed (→ INVALID_ARGUMENT / 400)
    │   ├── InvalidEvent       an event breaks the grammar or its limits
    │   ├── InvalidFilter      an event filter or page token is wrong
    │   ├── InvalidSql         user SQL is not one read-only statement, or is refused
    │   └── InvalidAutomation  an automation, trigger, action or template is wrong
    ├── EventTooLarge          an event's JSON is over the size limit (the SDK raises this)
    ├── PayloadTooLarge        a request body is over the size limit (→ RESOURCE_EXHAUSTED / 413)
    ├── Unauthenticated        missing or wrong bearer token (→ UNAUTHENTICATED / 401)
    ├── PermissionDenied       the token lacks the scope (→ PERMISSION_DENIED / 403)
    ├── NotFound               no such event or automation (→ NOT_FOUND / 404)
    ├── Conflict               an automation name or id already exists (→ ALREADY_EXISTS / 409)
    ├── Busy                   queues are full; retry later (→ UNAVAILABLE / 503 + retry hint)
    ├── ServerUnreachable      the CLI or SDK cannot reach a server
    └── StoreError             the store failed in a way the caller cannot fix
"""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """Raised when configuration cannot be loaded: names the file, key and rule."""


class InvalidInput(HeraldError):
    """Raised when a caller sent something malformed; retrying the same input cannot help."""


class InvalidEvent(InvalidInput):
    """Raised when an event breaks the grammar (SPEC §2) or a limit."""


class InvalidFilter(InvalidInput):
    """Raised for a malformed event filter or a tampered page token."""


class InvalidSql(InvalidInput):
    """Raised when user SQL is not a single read-only statement or touches files/network."""


class InvalidAutomation(InvalidInput):
    """Raised when an automation, trigger, action or template does not validate."""


class EventTooLarge(HeraldError):
    """Raised when an event's JSON is larger than the configured maximum."""


class PayloadTooLarge(HeraldError):
    """Raised when a request body is over the receive limit (after decompression)."""


class Unauthenticated(HeraldError):
    """Raised when a request carries no bearer token or an unknown one."""


class PermissionDenied(HeraldError):
    """Raised when a known token lacks the scope the operation needs."""


class NotFound(HeraldError):
    """Raised when the requested event or automation does not exist."""


class Conflict(HeraldError):
    """Raised when creating something whose name or id is already taken."""


class Busy(HeraldError):
    """Raised when the ingest queue is full; the caller should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerUnreachable(HeraldError):
    """Raised by clients when no Herald server answers at the configured address."""


class StoreError(HeraldError):
    """Raised when the DuckDB store fails for a reason the caller cannot fix."""
