"""Typed configuration: defaults in code, overlaid by a TOML file, then ``HERALD_*`` environment
variables, then command-line flags. Validated once; unknown keys are errors naming the key.

Environment keys are ``HERALD_<SECTION>__<KEY>`` (e.g. ``HERALD_STORAGE__PATH``); values are
parsed as JSON when they look like JSON (lists, numbers, booleans), else taken as strings.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.errors import ConfigError


class Scope(StrEnum):
    """What a bearer token may do."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MiB = 1024 * 1024
DEFAULT_MEMORY_BUDGET = 300 * MiB
# Below this the server's fixed part (interpreter, libraries, DuckDB's code: ~190 MB measured)
# leaves too little for data.
MIN_MEMORY_BUDGET = 256 * MiB
MIN_DUCKDB_MEMORY = 64 * MiB
MIN_TAIL_BUFFER_BYTES = MiB


def budget_parts(
    budget: int, *, max_receive_bytes: int, max_tail_subscribers: int
) -> dict[str, dict[str, int]]:
    """What each part of the server gets of ``server.memory_budget_bytes`` — section → key →
    bytes — for every key left unset or 0 (docs/configuration.md#memory-budget). The budget is
    the whole process's RSS: about 190 MB of it is the server itself (code, interpreter,
    libraries), the rest is split between what grows with load."""
    share = budget // 16
    return {
        "server": {"max_inflight_bytes": max(max_receive_bytes, budget // 4)},
        # A larger WAL costs little memory here (DuckDB's memory_limit bounds what it keeps of
        # it; the rest spills to <store>.tmp) and saves checkpoints: measured under the soak,
        # 1/4 instead of 1/16 of 300 MiB gave +47 % events/s at the same RSS.
        "storage": {"checkpoint_wal_bytes": budget // 4, "queue_max_bytes": share},
        "query": {
            "sql_memory_limit": max(MIN_DUCKDB_MEMORY, budget // 5),
            "tail_buffer_bytes": max(MIN_TAIL_BUFFER_BYTES, share // max_tail_subscribers),
        },
    }


_DEFAULT_PARTS = budget_parts(
    DEFAULT_MEMORY_BUDGET, max_receive_bytes=64 * MiB, max_tail_subscribers=100
)


def _derived_default(section: str, key: str, value: Any) -> Any:
    """0 (or unset) means "derived from the budget"; a section built on its own (not inside a
    ``Config``) takes the default budget's share."""
    return _DEFAULT_PARTS[section][key] if value == 0 else value


class ServerConfig(_Section):
    grpc: str = Field("127.0.0.1:4317", description="host:port of the gRPC server (OTLP + native)")
    http: str = Field("127.0.0.1:4318", description="host:port of the HTTP server (OTLP + native)")
    max_receive_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="largest request body, after decompression"
    )
    insecure: bool = Field(
        False, description="allow a non-loopback bind without any auth tokens configured"
    )
    shutdown_grace_seconds: float = Field(5.0, ge=0, description="time to finish open requests")
    drain_delay_seconds: float = Field(
        0.0,
        ge=0,
        description="on SIGTERM, time spent answering /readyz 503 while still serving, before "
        "the listeners close (let a load balancer stop routing first)",
    )
    grpc_max_concurrent_rpcs: int = Field(
        1000, gt=0, description="gRPC calls handled at once, all methods; one more is 'busy'"
    )
    max_inflight_bytes: int = Field(
        _DEFAULT_PARTS["server"]["max_inflight_bytes"],
        gt=0,
        description="gRPC request bytes held at once; a call reserves max_receive_bytes "
        "while its request arrives (must be at least max_receive_bytes). 0 = derived from "
        "memory_budget_bytes: a quarter of it, at least max_receive_bytes",
    )
    memory_budget_bytes: int = Field(
        DEFAULT_MEMORY_BUDGET,
        ge=MIN_MEMORY_BUDGET,
        description="the server's memory ('300MiB' or bytes): its RSS under any load, split "
        "between the parts that grow with it — every key of them left at 0 is derived from "
        "it (docs/configuration.md#memory-budget)",
    )

    @field_validator("memory_budget_bytes", mode="before")
    @classmethod
    def _budget_size(cls, v: Any) -> Any:
        return parse_size(v)

    @field_validator("max_inflight_bytes", mode="before")
    @classmethod
    def _inflight_derived(cls, v: Any) -> Any:
        return _derived_default("server", "max_inflight_bytes", parse_size(v))

    @model_validator(mode="after")
    def _inflight_holds_one_request(self) -> ServerConfig:
        if self.max_inflight_bytes < self.max_receive_bytes:
            raise ValueError(
                f"server.max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                f"server.max_receive_bytes ({self.max_receive_bytes}), or no request fits"
            )
        return self


class TokenConfig(_Section):
    token: str = Field(min_length=8, description="the bearer token value")
    scopes: list[Scope] = Field(description="what the token may do: ingest, read, admin")
    name: str = Field("", description="a label for logs")


class AuthConfig(_Section):
    tokens: list[TokenConfig] = Field(
        default_factory=list, description="bearer tokens; empty = no auth (loopback only)"
    )


class TlsConfig(_Section):
    cert_file: str = Field("", description="PEM certificate; empty = plaintext")
    key_file: str = Field("", description="PEM private key for cert_file")


class StorageConfig(_Section):
    path: str = Field("herald.duckdb", description="DuckDB file")
    batch_max_events: int = Field(50_000, gt=0, description="most events in one group commit")
    queue_max_events: int = Field(
        100_000, gt=0, description="events waiting for commit before ingest answers 'busy'"
    )
    queue_max_bytes: int = Field(
        _DEFAULT_PARTS["storage"]["queue_max_bytes"],
        gt=0,
        description="memory of the events waiting for commit before ingest answers 'busy' "
        "(as queue_max_events). 0 = derived: 1/16 of server.memory_budget_bytes",
    )
    checkpoint_wal_bytes: int = Field(
        _DEFAULT_PARTS["storage"]["checkpoint_wal_bytes"],
        gt=0,
        description="WAL size that forces a checkpoint while ingest is busy (idle: 16 MiB); "
        "DuckDB keeps what its memory_limit allows of it in memory until then. 0 = derived: "
        "1/4 of server.memory_budget_bytes",
    )
    retention_days: float = Field(7.0, gt=0, description="delete events older than this")
    retention_overrides: dict[str, float] = Field(
        default_factory=dict, description="event name → retention days, overriding the default"
    )
    retention_interval_seconds: float = Field(3600.0, gt=0, description="how often retention runs")
    backend: str = Field(
        "duckdb",
        description="'duckdb': the single file at `path` (one collector); 'ducklake': a lake "
        "shared by several collectors (`catalog` + `data_path`, docs/scale-out.md)",
    )
    catalog: str = Field(
        "",
        description="the DuckLake catalog: 'postgres:<libpq key=value string>' (several "
        "collectors), 'sqlite:PATH' or 'duckdb:PATH' (one host)",
    )
    data_path: str = Field(
        "",
        description="where the lake's Parquet files go: a directory every collector shares "
        "(a shared filesystem path; s3:// is DuckLake's cloud option)",
    )
    lake_follow_interval_seconds: float = Field(
        0.25,
        gt=0,
        le=5,
        description="how often a collector looks for other collectors' new lake snapshots "
        "(the live tail's lag behind them)",
    )
    lake_upkeep_interval_seconds: float = Field(
        300.0, gt=0, description="how often the lake is compacted and old snapshots expired"
    )
    lake_snapshot_keep_seconds: float = Field(
        3600.0,
        ge=60,
        description="lake snapshots younger than this are kept, and files replaced by "
        "compaction too: a query in flight may still read them (longer than the longest "
        "query or export); older ones expire and their files are deleted",
    )

    @field_validator("queue_max_bytes", "checkpoint_wal_bytes", mode="before")
    @classmethod
    def _storage_derived(cls, v: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return _derived_default("storage", info.field_name, parse_size(v))

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in {"duckdb", "ducklake"}:
            raise ValueError("must be 'duckdb' or 'ducklake'")
        return v

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, v: str) -> str:
        if v and v.split(":", 1)[0] not in {"postgres", "sqlite", "duckdb"}:
            raise ValueError("must start with 'postgres:', 'sqlite:' or 'duckdb:'")
        return v

    @model_validator(mode="after")
    def _lake_located(self) -> StorageConfig:
        if self.backend == "ducklake" and not (self.catalog and self.data_path):
            raise ValueError(
                "backend 'ducklake' needs storage.catalog and storage.data_path"
            )
        return self


class IngestConfig(_Section):
    mapping_workers: int = Field(
        2,
        ge=0,
        le=64,
        description="worker processes that decode and map OTLP requests, started by the first "
        "one (0 = in the server's own process); see docs/benchmarks.md, OTLP mapping workers",
    )
    mapping_queue_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="request bytes handed to the mapping workers and not answered yet; past "
        "it (or 4 requests per worker) OTLP requests are answered busy",
    )


class LimitsConfig(_Section):
    max_labels_per_resource: int = Field(500, gt=0)
    max_related_resources: int = Field(100, ge=0)
    max_event_name_length: int = Field(1024, gt=0)
    max_event_bytes: int = Field(1_500_000, gt=0)
    max_future_seconds: float = Field(
        86_400.0, ge=0, description="how far ahead of the server's clock an event's time may be"
    )


class QueryConfig(_Section):
    page_size: int = Field(50, gt=0, le=1000, description="events per feed page")
    text_total_limit: int = Field(
        1000,
        ge=0,
        description="a feed page with a text search counts its total exactly up to this many "
        "matches, then answers this number as a lower bound (total_is_lower_bound); the count "
        "reads the newest events until it gets there. 0 = always exact (a full scan)",
    )
    sql_timeout_seconds: float = Field(10.0, gt=0, description="user SQL is interrupted after this")
    sql_max_rows: int = Field(
        10_000, gt=0, description="rows one SQL call shows (exports with --output write all)"
    )
    sql_export_timeout_seconds: float = Field(
        3600.0, ge=0, description="an export (herald sql --output) is stopped after this; 0 = never"
    )
    tail_buffer_events: int = Field(1000, gt=0, description="per-subscriber live-tail buffer")
    tail_buffer_bytes: int = Field(
        _DEFAULT_PARTS["query"]["tail_buffer_bytes"],
        gt=0,
        description="the same buffer's bound in bytes (wire JSON); whichever is reached first. "
        "0 = derived: 1/16 of server.memory_budget_bytes over max_tail_subscribers, at "
        "least 1 MiB (it guards against large events; tail_buffer_events bounds small ones "
        "first)",
    )
    max_tail_subscribers: int = Field(
        100, gt=0, description="live-tail streams open at once; one more is answered 'busy'"
    )
    sql_concurrency: int = Field(
        0,
        ge=0,
        le=256,
        description="user SQL statements (and exports) running at once, on threads of their "
        "own; one more is answered 'busy' (retry later). 0 = half the CPU cores, at least 1",
    )
    sql_max_result_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="most bytes (Arrow) of result one SQL call shows; cut like sql_max_rows "
        "(exports write every row)",
    )
    sql_memory_limit: int = Field(
        _DEFAULT_PARTS["query"]["sql_memory_limit"],
        ge=MIN_DUCKDB_MEMORY,
        description="DuckDB's memory limit for the store ('2GiB' or bytes): its hash tables, "
        "sorts and cached blocks, shared by user SQL and ingest; a query past it spills "
        "to disk or fails. Not a bound on one huge value (docs/sql.md). 0 = derived: 1/5 "
        "of server.memory_budget_bytes, at least 64 MiB",
    )
    sql_spill_limit: int = Field(
        8 * 1024**3,
        ge=0,
        description="disk a query larger than memory may use ('8GiB' or bytes, in "
        "<store>.tmp); one past it fails",
    )

    @field_validator("sql_memory_limit", "sql_spill_limit", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return parse_size(v)

    @field_validator("sql_memory_limit", "tail_buffer_bytes", mode="before")
    @classmethod
    def _query_derived(cls, v: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return _derived_default("query", info.field_name, parse_size(v))


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any) -> Any:
    """``"2GiB"``/``"512MB"``/``"1000"`` as bytes (an int); anything else is left for the
    field's own validation to refuse."""
    if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    return value


class AutomationsConfig(_Section):
    enabled: bool = Field(True, description="run the background evaluator")
    evaluation_interval_seconds: float = Field(1.0, gt=0, description="proactive evaluation tick")
    allow_commands: bool = Field(False, description="allow the run-command action")
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_retries: int = Field(3, ge=0)
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description="hosts call-webhook may reach ('host', 'host:port', globs); empty = any. "
        "Set it when events come from untrusted senders: templates can steer a URL",
    )
    template_timeout_seconds: float = Field(
        2.0, gt=0, description="time limit for rendering one action's templates"
    )
    secrets_file: str = Field(
        "",
        description="file with secrets for {{ secrets.NAME }} (TOML, or dotenv NAME=value); "
        "HERALD_SECRET_<NAME> environment variables are used first",
    )
    max_queued_actions: int = Field(
        1000,
        ge=1,
        description="action runs one automation may have waiting to start; a firing that "
        "does not fit has its runs recorded as skipped",
    )
    rate_limit_max_firings: int = Field(
        60,
        ge=0,
        le=100_000,
        description="default rate limit for automations with call-webhook or run-command "
        "actions and no rate_limit of their own: at most this many firings run their actions "
        "per rate_limit_within_seconds (0 = no default limit)",
    )
    rate_limit_within_seconds: float = Field(
        60.0, gt=0, le=604800, description="the window of the default rate limit"
    )


class LoggingConfig(_Section):
    level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR")
    format: str = Field("text", description="text | json")

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return v.upper()

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in {"text", "json"}:
            raise ValueError("must be 'text' or 'json'")
        return v


class Config(_Section):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    tls: TlsConfig = TlsConfig()
    storage: StorageConfig = StorageConfig()
    ingest: IngestConfig = IngestConfig()
    limits: LimitsConfig = LimitsConfig()
    query: QueryConfig = QueryConfig()
    automations: AutomationsConfig = AutomationsConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="before")
    @classmethod
    def _derive_from_budget(cls, data: Any) -> Any:
        """Fill every budget-derived key that is unset or 0 with its share of
        ``server.memory_budget_bytes`` (``budget_parts``), before the sections are validated;
        a value set explicitly stays. A budget that is not a valid size is left for the
        field's own error."""
        if not isinstance(data, Mapping):
            return data
        data = {
            name: section.model_dump(exclude_unset=True)
            if isinstance(section, BaseModel)
            else section
            for name, section in data.items()
        }
        sections = {name: data.get(name, {}) for name in ("server", "storage", "query")}
        if not all(isinstance(section, Mapping) for section in sections.values()):
            return data
        budget = parse_size(sections["server"].get("memory_budget_bytes", DEFAULT_MEMORY_BUDGET))
        receive = parse_size(sections["server"].get("max_receive_bytes", 64 * MiB))
        subscribers = sections["query"].get("max_tail_subscribers", 100)
        values = (budget, receive, subscribers)
        if not all(type(v) is int and v > 0 for v in values) or budget < MIN_MEMORY_BUDGET:
            return data
        parts = budget_parts(budget, max_receive_bytes=receive, max_tail_subscribers=subscribers)
        for name, derived in parts.items():
            section = dict(sections[name])
            for key, value in derived.items():
                if parse_size(section.get(key, 0)) == 0:
                    section[key] = value
            data[name] = section
        return data


ENV_PREFIX = "HERALD_"
# Client-side variables that are not config keys of the server.
_CLIENT_ENV = {
    "HERALD_ADDRESS",
    "HERALD_TOKEN",
    "HERALD_CONFIG",
    "HERALD_HTTP_ADDRESS",
    "HERALD_DB",
}
# HERALD_SECRET_<NAME>: values for {{ secrets.NAME }} in automation templates, not config.
_SECRET_ENV_PREFIX = "HERALD_SECRET_"


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_overlay(env: Mapping[str, str]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    for name, raw in env.items():
        if (
            not name.startswith(ENV_PREFIX)
            or name in _CLIENT_ENV
            or name.startswith(_SECRET_ENV_PREFIX)
        ):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) != 2 or not all(path):
            raise ConfigError(f"{name}: expected HERALD_<SECTION>__<KEY>")
        overlay.setdefault(path[0], {})[path[1]] = _env_value(raw)
    return overlay


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: {loc}: unknown key"
    return f"{source}: {loc}: {first['msg']}"


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the Config: defaults < file < ``HERALD_*`` env < ``overrides`` (from flags)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    data = _merge(data, _env_overlay(env))
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "environment")) from None
    if overrides:
        data = _merge(data, {k: dict(v) for k, v in overrides.items() if v})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "command line")) from None
