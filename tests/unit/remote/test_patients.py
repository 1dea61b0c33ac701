"""Verify patient test data helpers: date rolling, days until today, and the loading transaction."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from guideline.core.errors import UsageError
from guideline.remote.http import Client
from guideline.remote.patients import as_transaction, days_until, load_patient, roll_dates
from tests.unit.remote.stub import Reply, stub_server

BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "2010-02-28", "gender": "female"}},
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "effectiveDateTime": "2026-05-31T23:30:00+02:00",
                "issued": "2026-05-31T22:00:00.123Z",
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": 1.5, "unit": "mmol/L"},
                "component": [{"valuePeriod": {"start": "2026-01-01", "end": "2026-02"}}],
            }
        },
    ],
}


def test_roll_dates_moves_full_dates_and_date_times_by_whole_days() -> None:
    """Verify that dates and date-times move by whole days, keeping the time of day, offset and fraction."""
    rolled = roll_dates(BUNDLE, 3)
    patient, obs = (e["resource"] for e in rolled["entry"])
    assert patient["birthDate"] == "2010-03-03"  # across the end of February
    assert obs["effectiveDateTime"] == "2026-06-03T23:30:00+02:00"
    assert obs["issued"] == "2026-06-03T22:00:00.123Z"
    assert obs["component"][0]["valuePeriod"] == {"start": "2026-01-04", "end": "2026-02"}  # partial date kept
    assert obs["valueQuantity"] == {"value": 1.5, "unit": "mmol/L"}


def test_roll_dates_moves_partial_dates_with_the_evaluation_month_and_year() -> None:
    """Verify that, given the original evaluation time, a partial date under a date key moves by the whole
    months (years) the evaluation date moves, so it stays before, in or after that month (year)."""
    node = {
        "deceasedDateTime": "2026-06",
        "birthDate": "2026",
        "end": "2026-07",
        "onsetDateTime": "2027",
        "code": "1760",
        "postalCode": "2000",
    }
    # 2026-06-01 + 189 days = 2026-12-07: six months later, the same year.
    assert roll_dates(node, 189, "2026-06-01T12:00:00Z") == {
        "deceasedDateTime": "2026-12",
        "birthDate": "2026",
        "end": "2027-01",
        "onsetDateTime": "2027",
        "code": "1760",
        "postalCode": "2000",
    }
    assert roll_dates({"deceasedDateTime": "2026-12", "date": "2026"}, 1, "2026-12-31") == {
        "deceasedDateTime": "2027-01",
        "date": "2027",
    }
    assert roll_dates({"deceasedDateTime": "2026-07"}, -40, "2026-06-01T12:00:00Z") == {"deceasedDateTime": "2026-05"}


def test_roll_dates_backwards_and_across_years() -> None:
    """Verify that negative shifts work and cross year boundaries."""
    assert roll_dates({"d": "2026-01-02"}, -5) == {"d": "2025-12-28"}
    assert roll_dates(["2024-02-28T00:00:00Z"], 1) == ["2024-02-29T00:00:00Z"]


def test_roll_dates_leaves_ids_references_codes_and_text_alone() -> None:
    """Verify that strings under id, reference, code, display, text, url and the like never move."""
    node = {
        "id": "2026-01-01",
        "reference": "2026-01-01",
        "code": "2026-01-01",
        "display": "2026-01-01",
        "text": "2026-01-01",
        "valueString": "2026-01-01",
        "url": "2026-01-01",
        "system": "2026-01-01",
        "note": ["2026-01-01"],
    }
    rolled = roll_dates(node, 1)
    assert {k: v for k, v in rolled.items() if k != "note"} == {k: v for k, v in node.items() if k != "note"}
    assert rolled["note"] == ["2026-01-02"]  # list items take the key of their list


@pytest.mark.parametrize(
    "value",
    ["2026", "2026-05", "2026-05-31T12:00", "2026-05-31T12:00:00", "2026-13-45x", "not a date", "12:00:00"],
)
def test_roll_dates_leaves_partial_or_zoneless_values(value: str) -> None:
    """Verify that partial dates, date-times without an offset and other strings are left as they are."""
    assert roll_dates({"when": value}, 10) == {"when": value}


def test_roll_dates_returns_a_copy_and_never_mutates() -> None:
    """Verify that the input is never changed and even a zero shift returns an independent copy."""
    before = copy.deepcopy(BUNDLE)
    rolled = roll_dates(BUNDLE, 0)
    assert rolled == BUNDLE and rolled is not BUNDLE
    rolled["entry"][0]["resource"]["id"] = "changed"
    roll_dates(BUNDLE, 7)
    assert before == BUNDLE


@pytest.mark.parametrize(
    ("at", "days"),
    [
        ("2026-06-01", 10),
        ("2026-06-01T12:00:00Z", 10),
        ("2026-06-01T23:30:00-05:00", 9),  # already 2 June in UTC
        ("2026-06-02T01:00:00+02:00", 10),  # still 1 June in UTC
        ("2026-06-11T00:00:00Z", 0),
        ("2026-06-20", -9),
    ],
)
def test_days_until_counts_utc_dates(at: str, days: int) -> None:
    """Verify that the shift is from the UTC date of `at` to today's date, whatever the offset."""
    assert days_until(at, today=dt.date(2026, 6, 11)) == days


def test_days_until_defaults_to_today() -> None:
    """Verify that without `today` the current UTC date is used."""
    today = dt.datetime.now(dt.UTC).date()
    assert days_until(today.isoformat()) == 0


@pytest.mark.parametrize("at", ["yesterday", "2026-02-30", ""])
def test_days_until_refuses_non_dates(at: str) -> None:
    """Verify that a value that is not an ISO date or date-time is a usage error naming it."""
    with pytest.raises(UsageError, match="is not an ISO date or date-time"):
        days_until(at)


def test_as_transaction_puts_every_resource_by_id() -> None:
    """Verify that the transaction PUTs each resource at Type/id and skips entries without one."""
    bundle = copy.deepcopy(BUNDLE)
    bundle["entry"] += [{"fullUrl": "urn:x"}, {"resource": {"resourceType": "Basic"}}, {"resource": "junk"}]
    tx = as_transaction(bundle)
    assert tx["resourceType"] == "Bundle" and tx["type"] == "transaction"
    assert [e["request"] for e in tx["entry"]] == [
        {"method": "PUT", "url": "Patient/p1"},
        {"method": "PUT", "url": "Observation/o1"},
    ]
    assert tx["entry"][0]["resource"] is bundle["entry"][0]["resource"]
    assert as_transaction({"resourceType": "Bundle"})["entry"] == []


def test_load_patient_posts_one_transaction() -> None:
    """Verify that loading a patient is one POST of the transaction to the FHIR base."""
    with stub_server({"POST /fhir": Reply(200, {"resourceType": "Bundle", "type": "transaction-response"})}) as stub:
        with Client(f"{stub.url}/fhir") as client:
            load_patient(client, BUNDLE)
    assert len(stub.seen) == 1
    assert stub.seen[0].json() == as_transaction(BUNDLE)
