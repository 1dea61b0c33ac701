"""Runs PlanDefinition/$apply on a FHIR server and reports recommendations in the `recommend` shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from guideline.core.errors import EngineError, ServerRejectedError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER, now_utc
from guideline.core.fhir import engine_messages, iter_actions, walk_pathway
from guideline.evaluation.model import Activity, Recommendation, document
from guideline.remote.http import Client

# What $apply may generate from an ActivityDefinition (R4 request resources and Task).
REQUEST_TYPES = (
    "ServiceRequest",
    "MedicationRequest",
    "CommunicationRequest",
    "NutritionOrder",
    "DeviceRequest",
    "Task",
)


def _search_one(client: Client, rtype: str, params: dict[str, str]) -> dict[str, Any] | None:
    bundle = client.get_json(rtype, params=params)
    entries = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    return entries[0] if entries else None


def recommendation_plans(client: Client, pathway_id: str) -> list[dict[str, Any]]:
    """The recommendation PlanDefinitions the server's pathway reaches, in pathway order.

    Nested pathways are followed; a pathway that reaches itself raises ContentError at the
    definitionCanonical that closes the loop. A referenced plan the server lacks is a
    ServerRejectedError.
    """
    pathway = client.get_json(f"PlanDefinition/{pathway_id}", ok=(200,))
    found: dict[str, dict[str, Any]] = {}  # one search per canonical, though the walk asks twice

    def plan_for(ref: str) -> dict[str, Any]:
        if ref not in found:
            url, _, version = ref.partition("|")
            params = {"url": url, **({"version": version} if version else {})}
            plan = _search_one(client, "PlanDefinition", params)
            if plan is None:
                raise ServerRejectedError(
                    f"the server's pathway {pathway_id} references {ref}, which the "
                    "server does not hold; publish the whole package"
                )
            found[ref] = plan
        return found[ref]

    def plan_named(ref: str) -> dict[str, Any] | None:
        # Only PlanDefinitions are searched: an action naming an ActivityDefinition leads nowhere here.
        return plan_for(ref) if "/PlanDefinition/" in ref else None

    return [r.recommendation for r in walk_pathway(pathway, plan_named) if r.recommendation is not None]


def _request_group(careplan: dict[str, Any], contained: dict[Any, dict[str, Any]]) -> dict[str, Any] | None:
    """The RequestGroup (R4) or RequestOrchestration (R5) the CarePlan's activities point to."""
    for activity in careplan.get("activity", []):
        group = contained.get(activity.get("reference", {}).get("reference", "").lstrip("#"))
        if group and group.get("resourceType") in ("RequestGroup", "RequestOrchestration"):
            return group
    return None


def careplan_recommendation(plan: dict[str, Any], careplan: dict[str, Any]) -> Recommendation | None:
    """The recommendation one $apply result makes, or None if no action applied.

    The card is the plan's, as `recommend` reports it, with the title of the action the server
    applied; the activities are the requests it generated, in the order of its actions.
    """
    errors = engine_messages(careplan)
    if errors:
        raise EngineError(
            f"the server's engine reported errors applying PlanDefinition/{plan.get('id')}: " + "; ".join(errors)
        )
    contained = {c.get("id"): c for c in careplan.get("contained", [])}
    group = _request_group(careplan, contained)
    if group is None or not group.get("action"):
        return None
    activities: list[Activity] = []
    for step in iter_actions(group):
        ref = (step.action.get("resource") or {}).get("reference", "")
        res = contained.get(ref.lstrip("#")) if ref.startswith("#") else None
        if res is not None and res.get("resourceType") in REQUEST_TYPES:
            activities.append(Activity.of_request(res))
    top = group["action"][0]
    card = Recommendation.from_action(plan, (plan.get("action") or [{}])[0], str(top.get("description") or ""))
    return replace(card, title=str(top.get("title") or card.title), activities=activities)


def apply_parameters(patient: str, at: str | None) -> dict[str, Any]:
    """The $apply input: the subject and, when `at` is given, the CQL evaluation-time parameter."""
    params: list[dict[str, Any]] = [{"name": "subject", "valueString": f"Patient/{patient}"}]
    if at is not None:
        cql_params = {
            "resourceType": "Parameters",
            "parameter": [{"name": EVALUATION_TIME_PARAMETER, "valueDateTime": at}],
        }
        params.append({"name": "parameters", "resource": cql_params})
    return {"resourceType": "Parameters", "parameter": params}


def apply_patient(
    client: Client,
    pathway_id: str,
    patient: str,
    plans: list[dict[str, Any]] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """$apply every recommendation of the pathway for one patient; the `recommend --json` document.

    Without `at` the server evaluates on its own clock (reported as evaluatedAt, read here, so
    seconds may differ); with `at` (ISO date-time with offset) the evaluation is as of that moment
    through the CQL parameter "Evaluation Time", whatever the server's clock says.
    """
    plans = plans if plans is not None else recommendation_plans(client, pathway_id)
    when = at if at is not None else now_utc()
    body = apply_parameters(patient, at)
    recs: list[Recommendation] = []
    for plan in plans:
        cp = client.post_json(f"PlanDefinition/{plan['id']}/$apply", body)
        if not isinstance(cp, dict) or cp.get("resourceType") != "CarePlan":
            raise ServerRejectedError(f"PlanDefinition/{plan['id']}/$apply did not return a CarePlan")
        rec = careplan_recommendation(plan, cp)
        if rec is not None:
            recs.append(rec)
    return document(patient, when, recs)
