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
