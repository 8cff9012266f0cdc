"""Global CLI options (``--address``, ``--token``), carried on ``ctx.obj``."""

from __future__ import annotations

from dataclasses import dataclass

import typer


@dataclass
class CliState:
    address: str | None = None
    token: str | None = None

    def client(self):  # type: ignore[no-untyped-def]
        # Imported lazily: grpc is heavy and `herald --help` should stay fast.
        from collector.client import HeraldClient

        return HeraldClient(self.address, self.token)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()
