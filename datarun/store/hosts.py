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


def _report(text: str | None) -> dict[str, Any]:
    try:
        report = json.loads(text or "{}")
    except ValueError:  # cut short: the check says ok or not all the same
        return {}
    return report if isinstance(report, dict) else {}


def last_checks(db: Database) -> dict[str, Check]:
    """The latest check of each host that has one."""
    return {row["name"]: Check(row["name"], bool(row["ok"]), row["checked_at"], _report(row["report"]))
            for row in db.table("hosts").rows_where(select="name, checked_at, ok, report")}


def unusable(db: Database) -> set[str]:
    """The hosts whose last check found them unfit: they get no tasks."""
    return {row["name"] for row in db.table("hosts").rows_where("ok = 0", select="name")}


def forget(db: Database, name: str) -> None:
    with transaction(db):
        db.table("hosts").delete_where("name = ?", [name])
