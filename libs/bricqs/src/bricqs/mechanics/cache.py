"""Per-process cache of compiled rule sets, refreshed when definitions change.

Each process keeps one `RuleSet` per tenant and, at most every `refresh_seconds`, asks
PostgreSQL for the tenant's definition version (one indexed read); only when it moved are
the definitions loaded and compiled again. So a definition change reaches every running
processor, ingest worker and api worker within `refresh_seconds`, without a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec

from bricqs.mechanics.definitions import SCHEMA_BY_KIND, Definition
from bricqs.mechanics.ruleset import RuleSet
from bricqs.storage.definitions import DefinitionRow, definitions_version, list_definitions
from bricqs.storage.tenants import Conn, Tenant


def decode_definition(row: DefinitionRow) -> Definition:
    """The schema object of a stored definition (stored bodies were validated on write)."""
    return msgspec.convert(row.body, SCHEMA_BY_KIND[row.kind])


@dataclass
class _Entry:
    rules: RuleSet
    checked: float


class RuleCache:
    """Compiled rules per tenant; call it as the engine's `rules_for`."""

    def __init__(self, refresh_seconds: float = 2.0) -> None:
        self._refresh = refresh_seconds
        self._entries: dict[Tenant, _Entry] = {}

    async def __call__(self, conn: Conn, tenant: Tenant) -> RuleSet:
        """The tenant's current rules."""
        now = time.monotonic()
        entry = self._entries.get(tenant)
        if entry is not None and now - entry.checked < self._refresh:
            return entry.rules
        version = await definitions_version(conn, tenant)
        if entry is None or entry.rules.version != version:
            rows = await list_definitions(conn, tenant, include_archived=False)
            rules = RuleSet.compile([decode_definition(row) for row in rows], version)
            entry = _Entry(rules, now)
            self._entries[tenant] = entry
        entry.checked = now
        return entry.rules
