"""Structure checks for CDS Hooks 2.0 cards an EHR can act on (shared by the CDS integration tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from guideline.core.fhir import is_informational

INDICATORS = {"info", "warning", "critical"}
# The server's default for guideline.cds.informational-cards (application.yaml): informational recommendations
# (R6) are not sent as CDS cards (project safety rule 17). The test servers run with the default.
INFORMATIONAL_CARDS = False
OVERRIDE_SYSTEM_SUFFIX = "/CodeSystem/gl-cds-override-reason"


class Knowledge:
    """The published package's PlanDefinitions and ActivityDefinitions, by id and by canonical url."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        """Index `resources` (a built package's)."""
        self.plans = {r["id"]: r for r in resources if r["resourceType"] == "PlanDefinition"}
        self.activities = {r["url"]: r for r in resources if r["resourceType"] == "ActivityDefinition"}
        codes = [
            r for r in resources if r["resourceType"] == "CodeSystem" and r["url"].endswith(OVERRIDE_SYSTEM_SUFFIX)
        ]
        assert len(codes) == 1, "the package has no override-reason CodeSystem"
        self.override_system = codes[0]["url"]
        self.override_codes = {c["code"] for c in codes[0]["concept"]}

    def plan_activities(self, plan: dict[str, Any]) -> set[str]:
        """Canonical urls (no version) of the ActivityDefinitions the plan's actions reference."""
        out: set[str] = set()

        def walk(actions: list[dict[str, Any]]) -> None:
            for a in actions:
                ref = str(a.get("definitionCanonical") or "")
                if "/ActivityDefinition/" in ref:
                    out.add(ref.split("|")[0])
                walk(a.get("action") or [])

        walk(plan.get("action") or [])
        return out

    def card_plans(self, ids: Iterable[str]) -> list[str]:
        """Of the recommendations `ids` (in their order), those the CDS services answer with a card: the one place
        the tests decide it. Informational ones (proposing nothing, `core.fhir.is_informational`) only when the
        server offers them (`INFORMATIONAL_CARDS`, its default)."""
        return [i for i in ids if INFORMATIONAL_CARDS or not is_informational(self.plans[i])]

    def activities_all_conditional(self, plan: dict[str, Any]) -> bool:
        """Whether every action of the plan that proposes an activity has an applicability condition of its own."""

        def ok(actions: list[dict[str, Any]]) -> bool:
            for a in actions:
                ref = str(a.get("definitionCanonical") or "")
                conditional = any(c.get("kind") == "applicability" for c in a.get("condition") or [])
                if "/ActivityDefinition/" in ref and not conditional:
                    return False
                if not ok(a.get("action") or []):
                    return False
            return True

        return ok([sub for top in plan.get("action") or [] for sub in top.get("action") or []]) and all(
            "/ActivityDefinition/" not in str(top.get("definitionCanonical") or "") for top in plan.get("action") or []
        )


def plan_of(card: dict[str, Any]) -> str:
    """The PlanDefinition id a card comes from: its source page is rec-<id>.html (asserted)."""
    url: str = card["source"]["url"]
    page = url.rsplit("/", 1)[-1]
    assert page.startswith("rec-") and page.endswith(".html"), url
    return page[len("rec-") : -len(".html")]


def check_card(card: dict[str, Any], patient: str, knowledge: Knowledge) -> str:
    """Assert one card's CDS Hooks 2.0 shape and its suggestions' drafts; returns the PlanDefinition id it came from."""
    uuid.UUID(card["uuid"])
    assert 0 < len(card["summary"]) < 140, card["summary"]
    assert card["indicator"] in INDICATORS
    source = card["source"]
    assert source["label"] and source["topic"]["system"] and source["topic"]["code"], source
    plan_id = plan_of(card)
    plan = knowledge.plans[plan_id]
    assert any(link["url"] == source["url"] and link["type"] == "absolute" for link in card["links"])
    wanted = knowledge.plan_activities(plan)
    suggestions = card.get("suggestions") or []
    if not wanted:  # informational (R6): nothing to order
        assert not suggestions and "selectionBehavior" not in card, card
        return plan_id
    if not suggestions and knowledge.activities_all_conditional(plan):
        # Every activity has its own condition, so a card may propose none of them (R2 for a child, project safety
        # rule 10): it is then shaped like an informational card.
        assert "selectionBehavior" not in card and "overrideReasons" not in card, card
        return plan_id
    assert suggestions, f"{plan_id}: a card that proposes activities carries no suggestion"
    assert card["selectionBehavior"] == "any"
    reasons = card["overrideReasons"]
    assert {r["system"] for r in reasons} == {knowledge.override_system}
    assert {r["code"] for r in reasons} <= knowledge.override_codes and reasons
    for s in suggestions:
        uuid.UUID(s["uuid"])
        assert s["label"]
        (action,) = s["actions"]
        assert action["type"] == "create"
        check_draft(action["resource"], patient, knowledge, wanted)
    return plan_id


def check_draft(resource: dict[str, Any], patient: str, knowledge: Knowledge, wanted: set[str]) -> None:
    """The draft is status draft, intent proposal, for the patient, coded exactly as its ActivityDefinition."""
    assert resource["status"] == "draft" and resource["intent"] == "proposal", resource
    subject = resource.get("patient" if resource["resourceType"] == "NutritionOrder" else "subject")
    assert subject == {"reference": f"Patient/{patient}"}, subject
    if resource["resourceType"] == "CommunicationRequest":
        # R4 CommunicationRequest has neither instantiatesCanonical nor code: the definition's code is its category.
        got = resource["category"][0]
        matches = [u for u in wanted if knowledge.activities[u]["kind"] == "CommunicationRequest"]
        assert [u for u in matches if knowledge.activities[u]["code"]["coding"] == got["coding"]], (got, matches)
        return
    (canonical,) = resource["instantiatesCanonical"]
    url = canonical.split("|")[0]
    assert url in wanted, f"{url} is not an activity of the card's recommendation"
    definition = knowledge.activities[url]
    assert definition["kind"] == resource["resourceType"]
    if resource["resourceType"] == "MedicationRequest":
        got, want = resource["medicationCodeableConcept"], definition["productCodeableConcept"]
    else:
        got, want = resource["code"], definition["code"]
    assert got["coding"] == want["coding"], (got, want)
