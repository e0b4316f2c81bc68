"""Spending caps shared by every run that spends from the same budget, kept in the warehouse.

A backfill's partition runs (and any runs given one `MIKO_BUDGET_NAME`) run in separate
processes, so a cap kept in memory would let each of them spend it in full. Instead every LLM
batch under a cap holds a lease in `llm_budget_leases`. Before a call is sent, its worst case
must fit in what the lease was granted; a grant is set in one warehouse transaction from what
the budget has left: the cap minus what the other leases hold (an open lease at what it was
granted, a closed one at what it spent). When the batch ends its lease closes at its spend.

Grants are serialised by the warehouse: across processes the DuckDB file has one writer at a
time; on a DuckLake, a grant updates its lease row, and two transactions that write one table
while one of them deletes from it (an UPDATE does both) conflict, so one is run again by
`Warehouse.write()` after the other's grant is visible. Inserting the lease row happens in a
transaction of its own, before any grant, because two inserts into one table do not conflict.
Within one process grants take turns on a lock (DuckDB lets two transactions of one process
update different rows at once).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import duckdb

from miko_assets.clock import utc_now
from miko_assets.warehouse.schema import LLM_BUDGET_LEASES
from miko_assets.warehouse.warehouse import Warehouse

_LEASES = LLM_BUDGET_LEASES.name
_HELD = (
    "SELECT coalesce(sum(CASE WHEN status = 'open' THEN granted_usd ELSE spent_usd END), 0) "
    f"FROM {_LEASES} WHERE budget_name = ?"
)
_GRANTS = threading.Lock()


def budget_name(explicit: str | None, group: str | None, run_id: str | None) -> str | None:
    """The budget a run spends from: the name given, else its group's (its backfill), else its own."""
    return explicit or group or (f"run:{run_id}" if run_id else None)


@dataclass
class BudgetLease:
    """One LLM batch's share of a named budget: `resize` sets it, `close` records the spend."""

    warehouse: Warehouse
    name: str
    cap_usd: float
    dagster_run_id: str | None = None
    stage: str | None = None
    granted_usd: float = 0.0
    lease_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    opened: bool = False

    def resize(self, wanted_usd: float, floor_usd: float) -> float:
        """Set the grant to `wanted_usd`, or to what the budget has left if that is less, but
        never below `floor_usd` (what the batch has spent and has in flight); returns the grant."""

        def grant(con: duckdb.DuckDBPyConnection) -> float:
            held = con.execute(f"{_HELD} AND lease_id <> ?", [self.name, self.lease_id]).fetchone()[0]
            granted = max(floor_usd, min(wanted_usd, self.cap_usd - held))
            con.execute(f"UPDATE {_LEASES} SET granted_usd = ? WHERE lease_id = ?", [granted, self.lease_id])
            return granted

        with _GRANTS:
            if not self.opened:
                self.warehouse.write(self._open)
                self.opened = True
            self.granted_usd = self.warehouse.write(grant)
        return self.granted_usd

    def _open(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            f"INSERT INTO {_LEASES} (lease_id, budget_name, cap_usd, granted_usd, spent_usd, status, "
            "dagster_run_id, stage, created_at) VALUES (?, ?, ?, 0, 0, 'open', ?, ?, ?)",
            [self.lease_id, self.name, self.cap_usd, self.dagster_run_id, self.stage, utc_now()],
        )

    def close(self, spent_usd: float) -> None:
        """Record what the batch spent; the rest of the grant goes back to the budget."""
        if not self.opened:
            return

        def close(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                f"UPDATE {_LEASES} SET status = 'closed', spent_usd = ?, closed_at = ? WHERE lease_id = ?",
                [spent_usd, utc_now(), self.lease_id],
            )

        with _GRANTS:
            self.warehouse.write(close)

    def remaining_usd(self) -> float:
        """What the budget has left for other batches now (this lease included)."""
        held = self.warehouse.rows(_HELD, [self.name])[0][0]
        return max(0.0, self.cap_usd - held)
