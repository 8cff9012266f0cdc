"""``PrometheusMetrics`` rendered and parsed back with prometheus-client's text parser:
histogram buckets are "less than or equal", gauges are read at scrape time, and reports from
several threads at once are all counted."""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from collector.server.prometheus_metrics import COMMIT_SECONDS_BUCKETS, PrometheusMetrics


def parsed(metrics: PrometheusMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def test_buckets_are_less_than_or_equal_and_cumulative() -> None:
    metrics = PrometheusMetrics("1.2.3")
    metrics.group_commit(10, 7, COMMIT_SECONDS_BUCKETS[2])  # exactly on a bound
    metrics.group_commit(50_000, 50_000, 99.0)  # beyond every bound
    s = parsed(metrics)
    bucket = "herald_group_commit_seconds_bucket"
    assert s[(bucket, frozenset({("le", repr(COMMIT_SECONDS_BUCKETS[1]))}))] == 0
    assert s[(bucket, frozenset({("le", repr(COMMIT_SECONDS_BUCKETS[2]))}))] == 1
    assert s[(bucket, frozenset({("le", repr(COMMIT_SECONDS_BUCKETS[-1]))}))] == 1
    assert s[(bucket, frozenset({("le", "+Inf")}))] == 2
    assert s[("herald_group_commit_seconds_count", frozenset())] == 2
    assert s[("herald_group_commit_events_sum", frozenset())] == 50_010
    assert s[("herald_dedupe_hits_total", frozenset())] == 3
    assert s[("herald_events_inserted_total", frozenset())] == 50_007
    assert s[("herald_build_info", frozenset({("version", "1.2.3")}))] == 1


def test_gauges_are_read_when_scraped() -> None:
    metrics = PrometheusMetrics("x")
    depth = [3]
    metrics.gauge("herald_test_depth", "a number the test changes", lambda: depth[0])
    assert parsed(metrics)[("herald_test_depth", frozenset())] == 3
    depth[0] = 11
    assert parsed(metrics)[("herald_test_depth", frozenset())] == 11


def test_reports_from_many_threads_are_all_counted() -> None:
    metrics = PrometheusMetrics("x")

    def report() -> None:
        for _ in range(20_000):
            metrics.ingested("spans", 2, 1)
            metrics.group_commit(2, 1, 0.001)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = parsed(metrics)
    assert s[("herald_items_received_total", frozenset({("signal", "spans")}))] == 160_000
    rejected = frozenset({("signal", "spans"), ("reason", "invalid")})
    assert s[("herald_items_rejected_total", rejected)] == 80_000
    assert s[("herald_group_commit_events_count", frozenset())] == 80_000
    assert s[("herald_dedupe_hits_total", frozenset())] == 80_000
