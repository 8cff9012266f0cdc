"""``EventColumns``: a batch of validated events held column by column.

Every ingest path (native gRPC/HTTP, OTLP traces and logs) appends to one of these, and the
store writer turns it into an Arrow table without per-event objects. Labels are kept as flat
key/value lists with offsets so Arrow ``MapArray``s are built in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EventColumns:
    """Column-oriented events. ``occurred_us`` is microseconds since the Unix epoch (UTC)."""

    ids: list[str] = field(default_factory=list)
    occurred_us: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    resource_ids: list[str] = field(default_factory=list)
    resource_keys: list[str] = field(default_factory=list)
    resource_values: list[str] = field(default_factory=list)
    resource_offsets: list[int] = field(default_factory=lambda: [0])
    # related: per event an offset into related items; per item an offset into related labels
    related_offsets: list[int] = field(default_factory=lambda: [0])
    related_item_offsets: list[int] = field(default_factory=lambda: [0])
    related_keys: list[str] = field(default_factory=list)
    related_values: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)
    follows: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def append(
        self,
        id: str,
        occurred_us: int,
        name: str,
        resource: dict[str, str],
        related: list[dict[str, str]],
        payload_json: str,
        follows: str | None = None,
    ) -> None:
        """Add one event. The caller has validated it; ``resource`` holds prefect.resource.id."""
        self.ids.append(id)
        self.occurred_us.append(occurred_us)
        self.names.append(name)
        self.resource_ids.append(resource["prefect.resource.id"])
        self.resource_keys.extend(resource)
        self.resource_values.extend(resource.values())
        self.resource_offsets.append(len(self.resource_keys))
        if related:
            rk, rv, ro = self.related_keys, self.related_values, self.related_item_offsets
            for item in related:
                rk.extend(item)
                rv.extend(item.values())
                ro.append(len(rk))
        self.related_offsets.append(len(self.related_item_offsets) - 1)
        self.payloads.append(payload_json)
        self.follows.append(follows)

    def extend(self, other: EventColumns) -> None:
        """Append all of ``other``'s events (used to merge requests into one group commit)."""
        base_res = len(self.resource_keys)
        base_item = len(self.related_item_offsets) - 1
        base_rel = len(self.related_keys)
        self.ids += other.ids
        self.occurred_us += other.occurred_us
        self.names += other.names
        self.resource_ids += other.resource_ids
        self.resource_keys += other.resource_keys
        self.resource_values += other.resource_values
        self.resource_offsets += [o + base_res for o in other.resource_offsets[1:]]
        self.related_offsets += [o + base_item for o in other.related_offsets[1:]]
        self.related_item_offsets += [o + base_rel for o in other.related_item_offsets[1:]]
        self.related_keys += other.related_keys
        self.related_values += other.related_values
        self.payloads += other.payloads
        self.follows += other.follows

    def resource(self, i: int) -> dict[str, str]:
        """Event ``i``'s primary resource labels (for tests and the live tail)."""
        a, b = self.resource_offsets[i], self.resource_offsets[i + 1]
        return dict(zip(self.resource_keys[a:b], self.resource_values[a:b], strict=True))

    def related(self, i: int) -> list[dict[str, str]]:
        """Event ``i``'s related resources, in order."""
        out = []
        for j in range(self.related_offsets[i], self.related_offsets[i + 1]):
            a, b = self.related_item_offsets[j], self.related_item_offsets[j + 1]
            out.append(dict(zip(self.related_keys[a:b], self.related_values[a:b], strict=True)))
        return out
