"""A spinner on stderr while a read runs long: the user sees that Herald is working.

Shown only when stderr is a terminal, and only once the read has taken ``delay`` seconds, so
quick commands never flicker and pipes and logs never get spinner frames. It is transient: it
leaves nothing behind on the screen.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Most reads answer well within this; past it a silent terminal looks stuck.
DELAY_SECONDS = 1.0


@contextmanager
def waiting(message: str, delay: float = DELAY_SECONDS) -> Iterator[None]:
    """Show ``message`` with a spinner on a terminal's stderr if the block outlasts ``delay``."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    status = Console(stderr=True).status(message)
    lock = threading.Lock()
    done = False

    def start() -> None:
        with lock:
            if not done:
                status.start()

    timer = threading.Timer(delay, start)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done = True
            timer.cancel()
            status.stop()
