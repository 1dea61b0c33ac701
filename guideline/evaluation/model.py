"""The one recommendation model: what fires for a patient and what it proposes, and its JSON document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Requests that make something happen; a recommendation with none of these is informational.
ORDER_TYPES = frozenset({"ServiceRequest", "MedicationRequest", "NutritionOrder", "DeviceRequest"})


@dataclass
class Activity:
    resource_type: str
    codes: list[str]
    definition: str  # ActivityDefinition id

    def as_json(self) -> dict[str, Any]:
        return {"resourceType": self.resource_type, "codes": self.codes}


@dataclass
class Recommendation:
    id: str
    title: str
    source: str
    detail: str
    activities: list[Activity] = field(default_factory=list)

    @property
    def informational(self) -> bool:
        return not any(a.resource_type in ORDER_TYPES for a in self.activities)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "informational": self.informational,
            "source": self.source,
            "activities": [a.as_json() for a in self.activities],
        }


def _codings(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        f"{c['system']}|{c['code']}"
        for c in concept.get("coding", [])
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    ]


def activity_codes(ad: dict[str, Any]) -> list[str]:
    """The clinical codes HAPI's $apply puts on the request it generates from this definition."""
    kind = ad.get("kind")
    if kind == "MedicationRequest":
        return _codings(ad.get("productCodeableConcept"))  # becomes medicationCodeableConcept
    if kind == "CommunicationRequest":
        return []  # R4 CommunicationRequest has no code; $apply turns code.text into the payload
    return _codings(ad.get("code"))


def document(pid: str, at: str, recs: list[Recommendation]) -> dict[str, Any]:
    return {"patient": pid, "evaluatedAt": at, "recommendations": [r.as_json() for r in recs]}
