"""The one recommendation model: what fires for a patient and what it proposes, and its JSON document.

`recommend` (local), population mode, `apply` (the server's $apply) and the rendered pages all
describe a recommendation with these two classes, so "informational" and "what an activity
proposes" are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guideline.core.fhir import codings

# Requests that make something happen; a recommendation with none of these is informational.
ORDER_TYPES = frozenset({"ServiceRequest", "MedicationRequest", "NutritionOrder", "DeviceRequest"})


def activity_codes(ad: dict[str, Any]) -> list[str]:
    """The clinical codes HAPI's $apply puts on the request it generates from this definition."""
    kind = ad.get("kind")
    if kind == "MedicationRequest":
        return codings(ad.get("productCodeableConcept"))  # becomes medicationCodeableConcept
    if kind == "CommunicationRequest":
        return []  # R4 CommunicationRequest has no code; $apply turns code.text into the payload
    return codings(ad.get("code"))


def request_codes(request: dict[str, Any]) -> list[str]:
    """The clinical codes of a request $apply generated: the mirror of `activity_codes`."""
    rt = request.get("resourceType")
    if rt == "MedicationRequest":
        return codings(request.get("medicationCodeableConcept"))
    if rt == "CommunicationRequest":
        return []
    return codings(request.get("code"))


def _definition_id(request: dict[str, Any]) -> str:
    """The id of the ActivityDefinition a generated request instantiates ("" if it does not say)."""
    canonical = request.get("instantiatesCanonical")
    first = canonical[0] if isinstance(canonical, list) and canonical else canonical
    return first.partition("|")[0].rsplit("/", 1)[-1] if isinstance(first, str) else ""


@dataclass(frozen=True)
class Activity:
    """One thing a recommendation proposes: the request $apply creates, with its clinical codes (sorted)."""

    resource_type: str
    codes: tuple[str, ...]
    definition: str = ""  # ActivityDefinition id

    @classmethod
    def of_definition(cls, ad: dict[str, Any]) -> Activity:
        """What an ActivityDefinition proposes (its `kind` is the request type $apply creates)."""
        return cls(str(ad.get("kind", "")), tuple(sorted(activity_codes(ad))), str(ad.get("id", "")))

    @classmethod
    def of_request(cls, request: dict[str, Any]) -> Activity:
        """What a request the server's $apply generated proposes."""
        return cls(str(request.get("resourceType", "")), tuple(sorted(request_codes(request))), _definition_id(request))

    @property
    def order(self) -> bool:
        """Whether the request makes something happen (an order), rather than informing."""
        return self.resource_type in ORDER_TYPES

    def as_json(self) -> dict[str, Any]:
        """The activity's entry in the `recommend --json` document."""
        return {"resourceType": self.resource_type, "codes": list(self.codes)}


@dataclass
class Recommendation:
    """A recommendation that fires: its card (title, source, detail) and the activities it proposes, in order."""

    id: str  # the recommendation PlanDefinition's id
    title: str
    source: str
    detail: str
    activities: list[Activity] = field(default_factory=list)

    @classmethod
    def from_action(
        cls, plan: dict[str, Any], action: dict[str, Any], detail: str | None = None, title: str | None = None
    ) -> Recommendation:
        """The recommendation `plan` makes through `action`, the first of its actions that applies.

        The card's title is `title` (a dynamic value) or else the action's (else the plan's), its
        source the action's first documentation citation, its detail `detail` (a dynamic value) or
        else the action's description. Activities are added by the caller as it walks the
        applicable actions.
        """
        docs = action.get("documentation") or []
        source = docs[0].get("citation", "") if docs and isinstance(docs[0], dict) else ""
        return cls(
            str(plan["id"]),
            str(title or action.get("title") or plan.get("title", "")),
            str(source),
            str(detail or action.get("description", "")),
        )

    @property
    def informational(self) -> bool:
        """Whether the recommendation orders nothing (only informs: a card, a message)."""
        return not any(a.order for a in self.activities)

    def as_json(self) -> dict[str, Any]:
        """The recommendation's entry in the `recommend --json` document."""
        return {
            "id": self.id,
            "title": self.title,
            "informational": self.informational,
            "source": self.source,
            "activities": [a.as_json() for a in self.activities],
        }


def document(pid: str, at: str, recs: list[Recommendation]) -> dict[str, Any]:
    """The `recommend --json` document: the patient, the evaluation time and what fired, in pathway order."""
    return {"patient": pid, "evaluatedAt": at, "recommendations": [r.as_json() for r in recs]}
