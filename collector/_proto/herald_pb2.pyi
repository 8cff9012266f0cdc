from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmitRequest(_message.Message):
    __slots__ = ("events_json",)
    EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    events_json: bytes
    def __init__(self, events_json: _Optional[bytes] = ...) -> None: ...

class EmitError(_message.Message):
    __slots__ = ("index", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    message: str
    def __init__(self, index: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmitResponse(_message.Message):
    __slots__ = ("accepted", "errors")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    errors: _containers.RepeatedCompositeFieldContainer[EmitError]
    def __init__(self, accepted: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[EmitError, _Mapping]]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("filter_json", "limit", "page_token")
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter_json: bytes
    limit: int
    page_token: str
    def __init__(self, filter_json: _Optional[bytes] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("events_json", "total", "next_page", "total_is_lower_bound")
    EVENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_IS_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    events_json: bytes
    total: int
    next_page: str
    total_is_lower_bound: bool
    def __init__(self, events_json: _Optional[bytes] = ..., total: _Optional[int] = ..., next_page: _Optional[str] = ..., total_is_lower_bound: _Optional[bool] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("filter_json", "countable", "time_unit", "time_interval", "limit")
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    COUNTABLE_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIT_FIELD_NUMBER: _ClassVar[int]
    TIME_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    filter_json: bytes
    countable: str
    time_unit: str
    time_interval: float
    limit: int
    def __init__(self, filter_json: _Optional[bytes] = ..., countable: _Optional[str] = ..., time_unit: _Optional[str] = ..., time_interval: _Optional[float] = ..., limit: _Optional[int] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("counts_json", "groups")
    COUNTS_JSON_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    counts_json: bytes
    groups: int
    def __init__(self, counts_json: _Optional[bytes] = ..., groups: _Optional[int] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class EventResponse(_message.Message):
    __slots__ = ("event_json",)
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    event_json: bytes
    def __init__(self, event_json: _Optional[bytes] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class TraceResponse(_message.Message):
    __slots__ = ("trace_json",)
    TRACE_JSON_FIELD_NUMBER: _ClassVar[int]
    trace_json: bytes
    def __init__(self, trace_json: _Optional[bytes] = ...) -> None: ...

class TailRequest(_message.Message):
    __slots__ = ("filter_json", "backfill", "backfill_limit")
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    filter_json: bytes
    backfill: bool
    backfill_limit: int
    def __init__(self, filter_json: _Optional[bytes] = ..., backfill: _Optional[bool] = ..., backfill_limit: _Optional[int] = ...) -> None: ...

class TailMessage(_message.Message):
    __slots__ = ("event_json", "lagged")
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    LAGGED_FIELD_NUMBER: _ClassVar[int]
    event_json: bytes
    lagged: int
    def __init__(self, event_json: _Optional[bytes] = ..., lagged: _Optional[int] = ...) -> None: ...

class SqlRequest(_message.Message):
    __slots__ = ("sql", "all_rows")
    SQL_FIELD_NUMBER: _ClassVar[int]
    ALL_ROWS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    all_rows: bool
    def __init__(self, sql: _Optional[str] = ..., all_rows: _Optional[bool] = ...) -> None: ...

class SqlResponse(_message.Message):
    __slots__ = ("arrow_ipc", "truncated")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    truncated: bool
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., truncated: _Optional[bool] = ...) -> None: ...

class SqlChunk(_message.Message):
    __slots__ = ("arrow_ipc", "truncated", "rows")
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    arrow_ipc: bytes
    truncated: bool
    rows: int
    def __init__(self, arrow_ipc: _Optional[bytes] = ..., truncated: _Optional[bool] = ..., rows: _Optional[int] = ...) -> None: ...
