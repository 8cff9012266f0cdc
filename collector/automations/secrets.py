"""``{{ secrets.NAME }}`` in an automation's templates: secrets never written anywhere, looked
up when an action runs (docs/automations.md, "Secrets").

``SecretSource`` reads the server's environment ``HERALD_SECRET_<NAME>``, then
``automations.secrets_file``; ``SecretsView`` is ``secrets`` as a template sees it and
remembers every value it handed out, so the run's record can be scrubbed of them. Secrets
written into the automation itself (headers, URLs) and their markers are
``collector.domain.secret_markers``.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from collector.errors import ConfigError

ENV_PREFIX = "HERALD_SECRET_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# --------------------------------------------------------------------------------------------
# {{ secrets.NAME }}


class UnknownSecret(LookupError):
    """A template asked for a secret the server does not have."""


def _read_secrets_file(path: Path) -> dict[str, str]:
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        if not eq or not _NAME.match(key.strip()):
            raise ConfigError(f"{path}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class SecretSource:
    """Looks up ``{{ secrets.NAME }}``: the environment variable ``HERALD_SECRET_<NAME>``
    (upper-cased) first, then ``NAME`` in the secrets file (TOML when it ends in ``.toml``,
    else dotenv lines ``NAME=value``). The file is read again when it changes, so a rotated
    secret is used without a restart."""

    def __init__(self, secrets_file: str = "", env: Mapping[str, str] | None = None) -> None:
        self._path = Path(secrets_file).expanduser() if secrets_file else None
        self._env = env
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._values: dict[str, str] = {}
        if self._path is not None:
            self._load()  # a missing or broken file is a config error at start

    def _load(self) -> dict[str, str]:
        assert self._path is not None
        try:
            stat = self._path.stat()
        except OSError as exc:
            raise ConfigError(
                f"automations.secrets_file: cannot read {self._path}: {exc.strerror}"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._values = _read_secrets_file(self._path)
                self._stamp = stamp
            return self._values

    def get(self, name: str) -> str:
        env = os.environ if self._env is None else self._env
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            return value
        if self._path is not None:
            try:
                found = self._load().get(name)
            except ConfigError as exc:
                raise UnknownSecret(str(exc)) from None
            if found is not None:
                return found
        where = f" or add {name} to {self._path}" if self._path else ""
        raise UnknownSecret(
            f"secret {name!r} is not set on the server (set {ENV_PREFIX}{name.upper()}{where})"
        )


class SecretsView:
    """``secrets`` as a template sees it: ``secrets.NAME`` / ``secrets['NAME']``. Every value
    handed out is remembered in ``used`` so the action's record can be scrubbed of it."""

    __slots__ = ("_source", "used")

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self.used: list[str] = []

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._source.get(name)
        self.used.append(value)
        return value

    def __getitem__(self, name: str) -> str:
        return self.__getattr__(str(name))

    def __str__(self) -> str:
        return "[secrets]"

    def __iter__(self) -> Any:
        return iter(())
