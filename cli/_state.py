"""Global CLI options (``--address``, ``--token``), carried on ``ctx.obj``, and the server
clients built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collector.client.automations import AutomationsClient
    from collector.client.remote import HeraldClient


@dataclass
class CliState:
    address: str | None = None
    token: str | None = None

    def client(self) -> HeraldClient:
        # Imported lazily: grpc is heavy and `herald --help` should stay fast.
        from collector.client.remote import HeraldClient

        return HeraldClient(self.address, self.token)

    def automations_client(self) -> AutomationsClient:
        from collector.client.automations import AutomationsClient

        return AutomationsClient(self.address, self.token)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliState) else CliState()
