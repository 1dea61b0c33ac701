"""The evaluation time: the moment an evaluation is 'as of', as ISO 8601 with an offset."""

from __future__ import annotations

import datetime as dt
from typing import Any


def format_datetime(when: dt.datetime) -> str:
    """ISO 8601 with its offset (`Z` for UTC), to the second unless there are microseconds."""
    spec = "microseconds" if when.microsecond else "seconds"
    out = when.isoformat(timespec=spec)
    return out[:-6] + "Z" if out.endswith("+00:00") else out


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
