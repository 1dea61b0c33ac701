"""`Measure/$evaluate-measure` on a server: the request, the answer read as counts, and the errors."""

from __future__ import annotations

import datetime as dt

import pytest

from guideline.core.errors import NotFoundError, ServerRejectedError
from guideline.evaluation import measures as m
from guideline.remote.http import Client, RetryPolicy
from guideline.remote.measure import evaluate_on_server
from tests.unit.remote.stub import Reply, Stub, outcome

PERIOD = m.Period(dt.date(2026, 1, 1), dt.date(2026, 12, 31))
DEF = m.MeasureDef(
    "GLIndX",
    "http://example.org/Measure/GLIndX|0.3.0",
    "GLIndX",
    "main",
    {"initial-population": "Initial Population", "denominator": "Denominator", "numerator": "Numerator"},
    (m.Stratifier("age-group", "Age group", "Age Group"),),
    {},
)
PATH = "/Measure/GLIndX/$evaluate-measure"


def _pop(code: str, count: int) -> dict[str, object]:
    return {"code": {"coding": [{"system": m.MEASURE_POPULATION_SYSTEM, "code": code}]}, "count": count}


REPORT = {
    "resourceType": "MeasureReport",
    "group": [
        {
            "population": [_pop("initial-population", 3), _pop("denominator", 2), _pop("numerator", 1)],
            "measureScore": {"value": 0.5},
            "stratifier": [
                {
                    "stratum": [
                        {
                            "value": {"text": "adult"},
                            "population": [_pop("initial-population", 3), _pop("denominator", 2), _pop("numerator", 1)],
                        }
                    ]
                }
            ],
        }
    ],
}


def _client(stub: Stub) -> Client:
    return Client(stub.url, retry=RetryPolicy(attempts=1))


def test_the_request_carries_the_period_a_population_report_and_the_evaluation_time(stub: Stub) -> None:
    """Verify the Parameters body, and that the answer becomes the counts the local run would compare."""
    stub.routes[f"POST {PATH}"] = Reply(200, REPORT)
    with _client(stub) as client:
        [(t, raw)] = evaluate_on_server(client, [DEF], PERIOD)
    body = {p["name"]: p for p in stub.seen[0].json()["parameter"]}
    assert body["periodStart"]["valueString"] == "2026-01-01" and body["periodEnd"]["valueString"] == "2026-12-31"
    assert body["reportType"]["valueString"] == "population" and "subject" not in body
    inner = body["parameters"]["resource"]["parameter"]
    assert inner == [{"name": "Evaluation Time", "valueDateTime": "2026-12-31T23:59:59Z"}]
    assert raw is not REPORT or raw == REPORT
    assert m.comparable(t)["overall"] == {
        "initial-population": 3,
        "denominator": 2,
        "numerator": 1,
        "score": "0.500000",
    }
    assert m.comparable(t)["strata"]["age-group=adult"]["numerator"] == 1


def test_a_measure_missing_on_the_server_says_to_publish(stub: Stub) -> None:
    """Verify that a 404 names the Measure and says to publish the package first."""
    stub.routes[f"POST {PATH}"] = Reply(404, outcome("HAPI-2001: Resource Measure/GLIndX is not known"))
    with _client(stub) as client, pytest.raises(NotFoundError, match="publish the package first"):
        evaluate_on_server(client, [DEF], PERIOD)


def test_the_servers_operationoutcome_text_is_in_the_error(stub: Stub) -> None:
    """Verify that a refusal carries the server's OperationOutcome diagnostics."""
    stub.routes[f"POST {PATH}"] = Reply(400, outcome("Measurement Period parameter is wrong"))
    with _client(stub) as client, pytest.raises(ServerRejectedError, match="Measurement Period parameter is wrong"):
        evaluate_on_server(client, [DEF], PERIOD)


def test_an_answer_that_is_not_a_measurereport_is_a_rejection(stub: Stub) -> None:
    """Verify that a 200 with another resource is refused, naming what came back."""
    stub.routes[f"POST {PATH}"] = Reply(200, {"resourceType": "Bundle"})
    with _client(stub) as client, pytest.raises(ServerRejectedError, match="Bundle, not a MeasureReport"):
        evaluate_on_server(client, [DEF], PERIOD)
