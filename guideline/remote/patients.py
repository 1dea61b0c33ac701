"""Patient test data on a server: date rolling (so data ages with the clock) and transactional loading."""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

from guideline.core.errors import UsageError
from guideline.core.evaltime import parse_date_time
from guideline.remote.http import Client

# Full dates and date-times only; partial dates (YYYY, YYYY-MM) carry no day to shift.
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?$")
# Strings under these keys are never dates, even when they look like one.
_NOT_DATES = frozenset({"id", "reference", "code", "display", "text", "div", "valueString", "url", "system"})


def roll_dates(node: Any, days: int) -> Any:
    """A copy with every full date/dateTime moved by `days` whole days (time of day kept).

    Whole days keep calendar-based logic (ages, a 12-month lookback in days) as it was at the
    original evaluation date, which is how a test written for a pinned date runs on a server
    that evaluates on its own clock.
    """
    if days == 0:
        return copy.deepcopy(node)

    def shift(s: str) -> str:
        m = _DATE.match(s)
        if not m:
            return s
        d = dt.date.fromisoformat(m.group(1)) + dt.timedelta(days=days)
        return d.isoformat() + (m.group(2) or "")

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if isinstance(v, str) and key not in _NOT_DATES:
            return shift(v)
        return v

    return walk(node)


def days_until(at: str, today: dt.date | None = None) -> int:
    """Whole days from the date of `at` (ISO date-time) to today's UTC date."""
    parsed = parse_date_time(at)
    if parsed is None:
        raise UsageError(f"'{at}' is not an ISO date or date-time")
    if not isinstance(parsed, dt.datetime):
        when = parsed
    else:
        when = parsed.astimezone(dt.UTC).date() if parsed.tzinfo else parsed.date()
    return ((today or dt.datetime.now(dt.UTC).date()) - when).days


def as_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """A transaction that PUTs every resource of a patient bundle by its id."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": e["resource"],
                "request": {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"},
            }
            for e in bundle.get("entry", [])
            if isinstance(e.get("resource"), dict) and e["resource"].get("id")
        ],
    }


def load_patient(client: Client, bundle: dict[str, Any]) -> None:
    """Write one patient's resources in one transaction (all or nothing)."""
    client.post_json("", as_transaction(bundle))
