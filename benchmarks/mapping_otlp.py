"""Micro-benchmark of the OTLP → event mapping alone (no network, no store).

Requests are shaped like the reference measurement (reference/otlp.md §4.5): 512 spans, each
with 10 string attributes + 1 int, a parent, and one ``exception`` event; 5 resource
attributes. Each span gives two events. Also measured, for calibration on this machine: the
reference "walk to row tuples" loop, and a logs request of the same size.

    .venv/bin/python benchmarks/mapping_otlp.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._header import print_header
from collector.domain.events import Limits
from collector.mapping.otlp_logs import logs_to_events
from collector.mapping.otlp_traces import traces_to_events

N = 512
RESOURCE = [
    ("service.name", "checkout"),
    ("service.namespace", "shop"),
    ("service.instance.id", "a1b2c3"),
    ("host.name", "node-7"),
    ("k8s.pod.name", "checkout-5d9f"),
]


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def trace_request(n: int = N, n_attrs: int = 10) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kv(k, v) for k, v in RESOURCE)
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    ss.scope.version = "1.0"
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = os.urandom(16)
        sp.span_id = os.urandom(8)
        sp.parent_span_id = os.urandom(8)
        sp.name = f"GET /api/item/{i % 50}"
        sp.kind = Span.SPAN_KIND_SERVER
        sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i * 1000
        sp.end_time_unix_nano = sp.start_time_unix_nano + 12_345
        sp.attributes.extend(
            kv(f"attr.key{a}", f"value-{random.randint(0, 999)}-{a}") for a in range(n_attrs)
        )
        sp.attributes.append(kv("http.response.status_code", 200))
        ev = sp.events.add()
        ev.name = "exception"
        ev.time_unix_nano = sp.start_time_unix_nano + 10
        ev.attributes.append(kv("exception.type", "ValueError"))
        sp.status.code = Status.STATUS_CODE_OK
    return req


def logs_request(n: int = N, n_attrs: int = 10) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(kv(k, v) for k, v in RESOURCE)
    sl = rl.scope_logs.add()
    sl.scope.name = "bench"
    for i in range(n):
        rec = sl.log_records.add()
        rec.time_unix_nano = 1_700_000_000_000_000_000 + i * 1000
        rec.observed_time_unix_nano = rec.time_unix_nano + 5
        rec.severity_number = SEVERITY_NUMBER_INFO
        rec.severity_text = "INFO"
        rec.body.string_value = f"request {i} handled"
        rec.trace_id = os.urandom(16)
        rec.span_id = os.urandom(8)
        rec.attributes.extend(
            kv(f"attr.key{a}", f"value-{random.randint(0, 999)}-{a}") for a in range(n_attrs)
        )
        rec.attributes.append(kv("http.response.status_code", 200))
    return req


def reference_walk(req: ExportTraceServiceRequest) -> list[tuple[Any, ...]]:
    """The reference note's walk (bench.py, with orjson): spans → row tuples, attrs → JSON."""

    def any_to_py(v: AnyValue) -> object:
        w = v.WhichOneof("value")
        if w is None:
            return None
        if w == "array_value":
            return [any_to_py(x) for x in v.array_value.values]
        if w == "kvlist_value":
            return {x.key: any_to_py(x.value) for x in v.kvlist_value.values}
        if w == "bytes_value":
            return v.bytes_value.hex()
        return getattr(v, w)

    rows = []
    for rs in req.resource_spans:
        res = {a.key: any_to_py(a.value) for a in rs.resource.attributes}
        res_json = orjson.dumps(res)
        svc = res.get("service.name", "")
        for ss in rs.scope_spans:
            for sp in ss.spans:
                attrs = {a.key: any_to_py(a.value) for a in sp.attributes}
                rows.append(
                    (
                        sp.trace_id.hex(),
                        sp.span_id.hex(),
                        sp.parent_span_id.hex(),
                        sp.name,
                        sp.kind,
                        sp.start_time_unix_nano,
                        sp.end_time_unix_nano,
                        svc,
                        ss.scope.name,
                        res_json,
                        orjson.dumps(attrs),
                        sp.status.code,
                    )
                )
    return rows


def rate(fn: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second over repeated calls, best of three rounds (less noise from neighbours)."""
    best = 0.0
    for _ in range(3):
        calls, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds / 3 or calls == 0:
            fn()
            calls += 1
        best = max(best, calls * items / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    print_header()
    limits = Limits()
    received = time.time_ns() // 1000  # the requests' times must lie before it (+ a day)
    traces, logs = trace_request(), logs_request()
    data = traces.SerializeToString()
    result = traces_to_events(traces, received, limits)
    assert len(result.columns) == 2 * N and not result.rejected, result.reasons

    def parse_and_map() -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(data)
        traces_to_events(req, received, limits)

    print(f"request: {N} spans x 11 attributes + 1 event, {len(data):,} bytes")
    measurements = [
        ("reference walk to rows (calibration)", lambda: reference_walk(traces), "spans/s"),
        ("traces_to_events", lambda: traces_to_events(traces, received, limits), "spans/s"),
        ("parse + traces_to_events", parse_and_map, "spans/s"),
        ("logs_to_events", lambda: logs_to_events(logs, received, limits), "records/s"),
    ]
    for label, fn, unit in measurements:
        print(f"{label:<38} {rate(fn, N, args.seconds):>10,.0f} {unit}")


if __name__ == "__main__":
    main()
