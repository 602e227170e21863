"""Host checks in the database: the last `host check` report of each host."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from datarun.store.db import Database, transaction


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    checked_at: float | None
    report: dict[str, Any]


def record(db: Database, name: str, checked_at: float, ok: bool, report: dict[str, Any]) -> None:
    with transaction(db):
        db.table("hosts").upsert({"name": name, "checked_at": checked_at, "ok": int(ok),
                                  "report": json.dumps(report)}, pk="name")


@dataclass(frozen=True)
class Floor:
    """What an empty task measured on a host: the least memory limit its tasks may have."""

    name: str
    floor: int
    measured_at: float
    measured_by: str


def record_floor(db: Database, name: str, floor: int, measured_at: float, measured_by: str) -> None:
    with transaction(db):
        db.execute("INSERT INTO hosts (name, memory_floor, memory_floor_at, memory_floor_by) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET memory_floor = excluded.memory_floor, "
                   "memory_floor_at = excluded.memory_floor_at, memory_floor_by = excluded.memory_floor_by",
                   [name, int(floor), measured_at, measured_by])


def floors(db: Database) -> dict[str, Floor]:
    """The measured floor of each host that has one."""
    return {row["name"]: Floor(row["name"], int(row["memory_floor"]), row["memory_floor_at"],
                               row["memory_floor_by"] or "")
            for row in db.table("hosts").rows_where(
                "memory_floor IS NOT NULL", select="name, memory_floor, memory_floor_at, memory_floor_by")}


def _report(text: str | None) -> dict[str, Any]:
    try:
        report = json.loads(text or "{}")
    except ValueError:  # cut short: the check says ok or not all the same
        return {}
    return report if isinstance(report, dict) else {}


def last_checks(db: Database) -> dict[str, Check]:
    """The latest check of each host that has one."""
    return {row["name"]: Check(row["name"], bool(row["ok"]), row["checked_at"], _report(row["report"]))
            for row in db.table("hosts").rows_where("checked_at IS NOT NULL", select="name, checked_at, ok, report")}


def unusable(db: Database) -> set[str]:
    """The hosts whose last check found them unfit: they get no tasks."""
    return {row["name"] for row in db.table("hosts").rows_where("ok = 0", select="name")}


def forget(db: Database, name: str) -> None:
    with transaction(db):
        db.table("hosts").delete_where("name = ?", [name])
