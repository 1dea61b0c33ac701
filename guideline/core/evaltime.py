"""The evaluation time: the moment an evaluation is 'as of', as ISO 8601 with an offset; FHIR dates read one way."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any


def format_datetime(when: dt.datetime) -> str:
    """ISO 8601 with its offset (`Z` for UTC), to the second unless there are microseconds."""
    spec = "microseconds" if when.microsecond else "seconds"
    out = when.isoformat(timespec=spec)
    return out[:-6] + "Z" if out.endswith("+00:00") else out


# A FHIR date with its day (YYYY-MM-DD); YYYY and YYYY-MM are dates too, but partial ones.
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date_time(text: str) -> dt.date | dt.datetime | None:
    """A FHIR date (a `date`) or dateTime (a `datetime`, naive when it has no offset), or None.

    None for a partial date (YYYY, YYYY-MM: no day to place it on) and for anything that is
    not a date. `Z` reads as UTC (Python 3.11 `fromisoformat`).
    """
    try:
        if _FULL_DATE.match(text):
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text) if "T" in text else None
    except ValueError:
        return None


def now_utc() -> str:
    """This machine's clock now, in UTC, to the second (the default evaluation time)."""
    return format_datetime(dt.datetime.now(dt.UTC).replace(microsecond=0))


# The CQL parameter (GLCommon) that fixes the moment an evaluation is "as of". HAPI's engine always
# runs on the server clock, so `apply --at` can only pin the time through this parameter; the local
# engine sets it too (besides its clock) so that both engines take the same path through the CQL.
EVALUATION_TIME_PARAMETER = "Evaluation Time"


def time_parameters(at: str) -> dict[str, Any]:
    """The local engine's parameters for an evaluation as of `at` (ISO date-time with offset)."""
    return {EVALUATION_TIME_PARAMETER: {"type": "DateTime", "value": at}}
