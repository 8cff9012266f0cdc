"""``SecretVault``: the real values of secrets written into automations, kept *outside* the
DuckDB file.

Why a separate file: user SQL can read every table of the store, so a secret in any table —
or in a column of one — is readable with a read token. The store is opened with external
file access disabled, so user SQL cannot open any other file (``read_text``/``read_blob``
are refused), and this file sits beside the database: ``<storage.path>.secrets``, JSON
``{"secrets": {ref: value}}``, mode 0600, replaced atomically (write, fsync, rename). The
``automations`` table holds markers ``[secret:<ref>]`` in their place
(``collector.domain.secret_markers``).

Ordering keeps the two consistent without a shared transaction: new values are added to the
vault before the automation row that refers to them is committed, and values no row refers to
any more are dropped after (``retain``). A crash in between leaves at most an unused value.
An in-memory store (``:memory:``) keeps its vault in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from collector.errors import StoreError

SUFFIX = ".secrets"


class SecretVault:
    """ref → secret value, persisted beside the store (or in memory)."""

    def __init__(self, store_path: str, *, read_only: bool = False) -> None:
        in_memory = not store_path or store_path == ":memory:"
        self.path = None if in_memory else Path(store_path + SUFFIX)
        self._read_only = read_only
        self._lock = threading.Lock()
        self._values: dict[str, str] = self._load()

    def _load(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"cannot read the secrets of automations ({self.path}): {exc}"
            ) from None
        values = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(values, dict):
            raise StoreError(f"{self.path}: not a Herald secrets file")
        return {str(k): str(v) for k, v in values.items()}

    def _save(self, values: dict[str, str]) -> None:
        if self.path is None:
            return
        if self._read_only:
            raise StoreError("the store is open read-only: automations cannot be changed")
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"secrets": values}, indent=1).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            with contextlib.suppress(OSError):  # the rename is durable once the dir is synced
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise StoreError(
                f"cannot write the secrets of automations ({self.path}): {exc}"
            ) from None

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._values)

    def get(self, ref: str) -> str | None:
        with self._lock:
            return self._values.get(ref)

    def add(self, values: Mapping[str, str]) -> None:
        """Store new values (durably) before anything refers to them."""
        with self._lock:
            if all(self._values.get(k) == v for k, v in values.items()):
                return
            merged = {**self._values, **values}
            self._save(merged)
            self._values = merged

    def retain(self, refs: Iterable[str]) -> None:
        """Drop every value whose ref is not in ``refs`` (deleted or replaced secrets)."""
        keep = set(refs)
        with self._lock:
            kept = {k: v for k, v in self._values.items() if k in keep}
            if len(kept) != len(self._values):
                self._save(kept)
                self._values = kept
