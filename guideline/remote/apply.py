"""Runs PlanDefinition/$apply on a FHIR server and reports recommendations in the `recommend` shape."""

from __future__ import annotations

from typing import Any

from guideline.core.errors import EngineError, ServerRejectedError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER, format_datetime
from guideline.evaluation.model import ORDER_TYPES
from guideline.evaluation.walk import PLAN_TYPE_SYSTEM
from guideline.remote.http import Client

CQF_MESSAGES = "http://hl7.org/fhir/StructureDefinition/cqf-messages"
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
    """The recommendation PlanDefinitions the server's pathway reaches, in pathway order."""
    pathway = client.get_json(f"PlanDefinition/{pathway_id}", ok=(200,))
    out: list[dict[str, Any]] = []

    def walk(actions: list[dict[str, Any]]) -> None:
        for action in actions:
            ref = action.get("definitionCanonical")
            if isinstance(ref, str) and "/PlanDefinition/" in ref:
                url, _, version = ref.partition("|")
                params = {"url": url, **({"version": version} if version else {})}
                plan = _search_one(client, "PlanDefinition", params)
                if plan is None:
                    raise ServerRejectedError(
                        f"the server's pathway {pathway_id} references {ref}, which the "
                        "server does not hold; publish the whole package"
                    )
                types = {
                    c.get("code")
                    for c in (plan.get("type") or {}).get("coding", [])
                    if c.get("system") == PLAN_TYPE_SYSTEM
                }
                if "clinical-protocol" in types:
                    walk(plan.get("action", []))
                else:
                    out.append(plan)
            walk(action.get("action", []))

    walk(pathway.get("action", []))
    return out


def _codings(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [f"{c['system']}|{c['code']}" for c in concept.get("coding", []) if "system" in c and "code" in c]


def request_codes(resource: dict[str, Any]) -> list[str]:
    """The clinical codes of a generated request (mirrors recommend.activity_codes)."""
    rt = resource.get("resourceType")
    if rt == "MedicationRequest":
        return _codings(resource.get("medicationCodeableConcept"))
    if rt == "CommunicationRequest":
        return []
    return _codings(resource.get("code"))


def engine_errors(careplan: dict[str, Any]) -> list[str]:
    """Messages of contained OperationOutcomes (cqf-messages): the engine failed somewhere."""
    contained = {c.get("id"): c for c in careplan.get("contained", [])}
    refs = [
        e.get("valueReference", {}).get("reference", "").lstrip("#")
        for e in careplan.get("extension", [])
        if e.get("url") == CQF_MESSAGES
    ]
    outcomes = [contained[r] for r in refs if r in contained]
    outcomes += [c for c in contained.values() if c.get("resourceType") == "OperationOutcome" and c not in outcomes]
    return [i.get("diagnostics", "") for o in outcomes for i in o.get("issue", [])]


def careplan_recommendation(plan: dict[str, Any], careplan: dict[str, Any]) -> dict[str, Any] | None:
    """The recommendation entry for one $apply result, or None if no action applied."""
    errors = engine_errors(careplan)
    if errors:
        raise EngineError(
            f"the server's engine reported errors applying PlanDefinition/{plan.get('id')}: " + "; ".join(errors)
        )
    contained = {c.get("id"): c for c in careplan.get("contained", [])}
    groups = [
        contained.get(a.get("reference", {}).get("reference", "").lstrip("#")) for a in careplan.get("activity", [])
    ]
    group = next((g for g in groups if g and g.get("resourceType") in ("RequestGroup", "RequestOrchestration")), None)
    if group is None or not group.get("action"):
        return None
    top = group["action"][0]
    activities: list[dict[str, Any]] = []

    def collect(actions: list[dict[str, Any]]) -> None:
        for a in actions:
            ref = (a.get("resource") or {}).get("reference", "")
            res = contained.get(ref.lstrip("#")) if ref.startswith("#") else None
            if res is not None and res.get("resourceType") in REQUEST_TYPES:
                activities.append({"resourceType": res["resourceType"], "codes": sorted(request_codes(res))})
            collect(a.get("action", []))

    collect(group["action"])
    plan_action = (plan.get("action") or [{}])[0]
    docs = plan_action.get("documentation") or []
    return {
        "id": plan.get("id"),
        "title": top.get("title") or plan_action.get("title") or plan.get("title", ""),
        "informational": not any(a["resourceType"] in ORDER_TYPES for a in activities),
        "source": docs[0].get("citation", "") if docs else "",
        "activities": activities,
    }


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
    """$apply every recommendation of the pathway for one patient; the `recommend --json` shape.

    Without `at` the server evaluates on its own clock (reported as evaluatedAt, read here, so
    seconds may differ); with `at` (ISO date-time with offset) the evaluation is as of that moment
    through the CQL parameter "Evaluation Time", whatever the server's clock says.
    """
    import datetime as dt

    plans = plans if plans is not None else recommendation_plans(client, pathway_id)
    when = at if at is not None else format_datetime(dt.datetime.now(dt.UTC).replace(microsecond=0))
    body = apply_parameters(patient, at)
    recs = []
    for plan in plans:
        cp = client.post_json(f"PlanDefinition/{plan['id']}/$apply", body)
        if not isinstance(cp, dict) or cp.get("resourceType") != "CarePlan":
            raise ServerRejectedError(f"PlanDefinition/{plan['id']}/$apply did not return a CarePlan")
        rec = careplan_recommendation(plan, cp)
        if rec is not None:
            recs.append(rec)
    return {"patient": patient, "evaluatedAt": when, "recommendations": recs}
