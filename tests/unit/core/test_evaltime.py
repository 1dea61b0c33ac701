"""Verify how FHIR dates and date-times are read and evaluation times written."""

from __future__ import annotations

import datetime as dt

import pytest

from guideline.core.evaltime import format_datetime, parse_date_time

UTC = dt.UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-01", dt.date(2026, 6, 1)),
        ("2026-06-01T12:00:00Z", dt.datetime(2026, 6, 1, 12, tzinfo=UTC)),
        ("2026-06-01T12:00:00+02:00", dt.datetime(2026, 6, 1, 10, tzinfo=UTC)),
        ("2026-06-01T12:00:00", dt.datetime(2026, 6, 1, 12)),
        ("2026", None),  # partial dates have no day to place them on
        ("2026-06", None),
        ("2026-02-30", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_fhir_dates_and_date_times(text: str, expected: dt.date | None) -> None:
    """Verify that full dates read as dates, date-times as (aware or naive) datetimes, anything else as None."""
    got = parse_date_time(text)
    assert got == expected and type(got) is type(expected)


def test_evaluation_times_print_utc_as_z() -> None:
    """Verify that an evaluation time prints with its offset, UTC as Z, to the second."""
    assert format_datetime(dt.datetime(2026, 6, 1, 12, tzinfo=UTC)) == "2026-06-01T12:00:00Z"
    assert format_datetime(dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))).endswith("+02:00")
