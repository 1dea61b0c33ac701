"""Patient test data on a server: date rolling (so data ages with the clock) and transactional loading."""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

from guideline.core.errors import UsageError
from guideline.core.evaltime import parse_date_time
from guideline.remote.http import Client

# Full dates and date-times: moved by whole days.
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?$")
# Partial dates (YYYY, YYYY-MM): no day to shift; moved by whole months or years (see roll_dates).
_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?$")
# Strings under these keys are never dates, even when they look like one.
_NOT_DATES = frozenset({"id", "reference", "code", "display", "text", "div", "valueString", "url", "system"})
# A partial date looks like a number ("2026"), so it is only read under the names FHIR gives date and dateTime
# elements (deceasedDateTime, birthDate, Period.start, ...).
_PARTIAL_DATE_KEYS = frozenset({"date", "start", "end", "authoredOn", "recorded"})


def _is_date_key(key: str) -> bool:
    return key.endswith(("DateTime", "Date")) or key in _PARTIAL_DATE_KEYS


def roll_dates(node: Any, days: int, at: str | None = None) -> Any:
    """A copy with every full date/dateTime moved by `days` whole days (time of day kept).

    Whole days keep calendar-based logic (ages, a 12-month lookback in days) as it was at the
    original evaluation date, which is how a test written for a pinned date runs on a server
    that evaluates on its own clock. Given `at`, the original evaluation time, a partial date
    ("2026-06", "2026") moves by the whole months (years) by which the evaluation date's month
    (year) moves, so it stays before, in or after that month (year) exactly as written; without
    `at` partial dates stay as they are.
    """
    months = years = 0
    if at is not None:
        start = parse_date_time(at)
        if start is None:
            raise UsageError(f"'{at}' is not an ISO date or date-time")
        if isinstance(start, dt.datetime):
            start = start.astimezone(dt.UTC).date() if start.tzinfo else start.date()
        end = start + dt.timedelta(days=days)
        years = end.year - start.year
        months = years * 12 + end.month - start.month
    if days == 0:
        return copy.deepcopy(node)

    def shift(s: str, key: str) -> str:
        m = _DATE.match(s)
        if m:
            d = dt.date.fromisoformat(m.group(1)) + dt.timedelta(days=days)
            return d.isoformat() + (m.group(2) or "")
        p = _PARTIAL.match(s) if _is_date_key(key) else None
        if p is None:
            return s
        if p.group(2) is None:
            return f"{int(p.group(1)) + years:04d}"
        y, mo = divmod(int(p.group(1)) * 12 + int(p.group(2)) - 1 + months, 12)
        return f"{y:04d}-{mo + 1:02d}"

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if isinstance(v, str) and key not in _NOT_DATES:
            return shift(v, key)
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
