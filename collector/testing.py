"""Test support shipped with the package: run a real Herald server in a background thread.

``running_herald(config)`` starts the server on its own event loop in a thread and yields only
after ``start()`` returned (ports bound, store open), so synchronous tests — CliRunner, the OTel
SDK exporters, httpx — talk to a real server. Teardown always calls ``stop()``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.app import Herald
from collector.config import Config


def test_config(db_path: Path | str, **sections: dict[str, Any]) -> Config:
    """A Config on ``db_path`` with both ports on 127.0.0.1:0, plus section overrides."""
    data: dict[str, Any] = {
        "server": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "storage": {"path": str(db_path)},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@contextmanager
def running_herald(config: Config) -> Iterator[Herald]:
    """A started ``Herald`` served from a background event loop; stopped on exit."""
    loop = asyncio.new_event_loop()
    herald = Herald(config)
    thread = threading.Thread(target=loop.run_forever, name="herald-test-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(herald.start(), loop).result(timeout=30)
        yield herald
    finally:
        asyncio.run_coroutine_threadsafe(herald.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
