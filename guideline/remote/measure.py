"""A server's `Measure/$evaluate-measure` (HAPI clinical reasoning) for the package's indicators, as Tallies."""

from __future__ import annotations

from typing import Any

from guideline.core.errors import NotFoundError, ServerRejectedError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER
from guideline.evaluation.measures import MeasureDef, Period, Tally, from_report
from guideline.remote.http import Client


def evaluate_request(period: Period, subject: str | None = None) -> dict[str, Any]:
    """The Parameters body: the period as dates, a population report, and GLCommon's evaluation time at its end.

    HAPI (CR 4.4.0 `MeasureOperationsProvider`) takes periodStart, periodEnd, reportType, subject and a
    `parameters` Parameters resource for CQL parameters; unqualified CQL parameter names reach included
    libraries, so "Evaluation Time" pins GLCommon's windows to the period's end as the local run does.
    Without `subject` (e.g. "Group/ID") the report covers every Patient on the server.
    """
    body: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "periodStart", "valueString": period.start.isoformat()},
            {"name": "periodEnd", "valueString": period.end.isoformat()},
            {"name": "reportType", "valueString": "population"},
            {
                "name": "parameters",
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": EVALUATION_TIME_PARAMETER, "valueDateTime": period.end_time}],
                },
            },
        ],
    }
    if subject is not None:
        body["parameter"].append({"name": "subject", "valueString": subject})
    return body


def evaluate_on_server(
    client: Client, defs: list[MeasureDef], period: Period, subject: str | None = None
) -> list[tuple[Tally, dict[str, Any]]]:
    """Each Measure evaluated by the server over the patients loaded there (or `subject`'s): its Tally and report.

    A Measure the server does not hold fails with a NotFoundError saying to publish the package first;
    any other refusal carries the server's OperationOutcome text (Client).
    """
    out: list[tuple[Tally, dict[str, Any]]] = []
    body = evaluate_request(period, subject)
    for d in defs:
        path = f"Measure/{d.id}/$evaluate-measure"
        try:
            report = client.post_json(path, body, ok=(200,))
        except NotFoundError as e:
            raise NotFoundError(
                f"{e}; the server has no Measure/{d.id}: publish the package first (guideline publish)",
                status=e.status,
                outcome=e.outcome,
            ) from None
        if not isinstance(report, dict) or report.get("resourceType") != "MeasureReport":
            got = report.get("resourceType") if isinstance(report, dict) else type(report).__name__
            raise ServerRejectedError(f"{client.url(path)} answered with a {got}, not a MeasureReport")
        if report.get("status") == "error":
            # CR keeps answering 200 when the CQL fails: the reasons are in a contained OperationOutcome.
            texts = [
                str(i.get("diagnostics") or i.get("details", {}).get("text") or "")
                for c in report.get("contained") or []
                if c.get("resourceType") == "OperationOutcome"
                for i in c.get("issue") or []
            ]
            raise ServerRejectedError(
                f"{client.url(path)}: the server's evaluation of Measure/{d.id} failed",
                sorted(set(t for t in texts if t))[:5] or ["(no OperationOutcome text)"],
            )
        out.append((from_report(d, report), report))
    return out
