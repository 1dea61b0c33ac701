"""The one capability check: is this a FHIR R4 server that can do what we ask of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guideline.core.errors import ServerRejectedError
from guideline.remote.http import Client

# The FHIR release this package is written for; every caller needs it.
FHIR_R4 = "4.0"


@dataclass(frozen=True)
class Needs:
    """What one caller needs of a server beyond FHIR R4, and what for (both go into the error).

    `interactions` are system-level interaction codes (rest.interaction, e.g. "transaction");
    `operations` are (resource type, operation name) pairs listed under rest.resource.operation,
    where HAPI lists PlanDefinition/$apply. `why` ends the message when something is missing.
    """

    purpose: str
    interactions: tuple[str, ...] = ()
    operations: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def elements(self) -> str:
        """The `_elements` subset holding everything this check reads, and nothing else.

        HAPI's full CapabilityStatement is ~1.5 MB (every search parameter of every type) and took
        0.3-0.55 s, more than half of a no-op publish; subsetted for publishing it is ~350 bytes.
        """
        parts = ["fhirVersion", "rest.mode"]
        if self.interactions:
            parts.append("rest.interaction")
        if self.operations:
            # Only the type and operation names of each resource entry, not its search parameters.
            parts += ["rest.resource.type", "rest.resource.operation.name"]
        return ",".join(parts)


PUBLISH = Needs(
    "publishing", interactions=("transaction",), why=" to write the package all-or-nothing; use a server that does"
)
APPLY = Needs(
    "`guideline apply`",
    operations=(("PlanDefinition", "apply"),),
    why=": use a server with the FHIR Clinical Reasoning operations (this project's server/ has them), "
    "or evaluate locally with `guideline recommend`",
)
CDS_PREFETCH = Needs("resolving CDS Hooks prefetch")

# How a missing interaction reads in a message.
_INTERACTION_NAMES = {"transaction": "transaction Bundles", "batch": "batch Bundles"}


@dataclass(frozen=True)
class Capabilities:
    """The parts of a CapabilityStatement the check reads."""

    version: str
    interactions: frozenset[str]
    operations: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, cs: dict[str, Any]) -> Capabilities:
        """Read them from a (possibly subsetted) CapabilityStatement; absent parts are empty."""
        rests = [r for r in cs.get("rest") or [] if isinstance(r, dict)]
        interactions = {str(i.get("code")) for r in rests for i in r.get("interaction") or [] if isinstance(i, dict)}
        operations = {
            (str(res.get("type")), str(op.get("name", "")).lstrip("$"))
            for r in rests
            for res in r.get("resource") or []
            if isinstance(res, dict)
            for op in res.get("operation") or []
            if isinstance(op, dict)
        }
        return cls(str(cs.get("fhirVersion", "")), frozenset(interactions), frozenset(operations))

    def is_r4(self) -> bool:
        """True for FHIR 4.0.x."""
        return self.version == FHIR_R4 or self.version.startswith(FHIR_R4 + ".")

    def missing(self, needs: Needs) -> list[str]:
        """What `needs` asks for that these capabilities lack, as phrases for a message."""
        out = [
            _INTERACTION_NAMES.get(c, f"the {c} interaction") for c in needs.interactions if c not in self.interactions
        ]
        out += [f"{rtype}/${name}" for rtype, name in needs.operations if (rtype, name) not in self.operations]
        return out


def _statement(client: Client, params: dict[str, str] | None) -> dict[str, Any]:
    # cached: HAPI rebuilds the statement (0.65 s) when asked with no-cache; it does not change with writes.
    cs = client.get_json("metadata", params=params, cached=True)
    if not isinstance(cs, dict) or cs.get("resourceType") != "CapabilityStatement":
        what = cs.get("resourceType") if isinstance(cs, dict) else type(cs).__name__
        raise ServerRejectedError(
            f"{client.url('metadata')} answered a {what or 'JSON object'}, not a CapabilityStatement; "
            "is --server the FHIR base URL (e.g. http://127.0.0.1:8080/fhir)?"
        )
    return cs


def _subsetted(cs: dict[str, Any]) -> bool:
    return any(t.get("code") == "SUBSETTED" for t in (cs.get("meta") or {}).get("tag", []) if isinstance(t, dict))


def missing_capabilities(client: Client, needs: Needs) -> tuple[dict[str, Any], list[str]]:
    """(the statement read last, what `needs` asks for that it lacks); ServerRejectedError if not FHIR R4.

    One request for only the elements it checks (`_elements`); only a server that answers a
    subset without them (it cannot subset nested elements) is asked again, for the whole statement.
    """
    cs = _statement(client, {"_elements": needs.elements()})
    caps = Capabilities.of(cs)
    # A version other than R4 is an answer, subset or not; anything else missing may be the subsetting's doing.
    if not caps.version or (caps.is_r4() and caps.missing(needs) and _subsetted(cs)):
        cs = _statement(client, None)
        caps = Capabilities.of(cs)
    if not caps.is_r4():
        raise ServerRejectedError(
            f"{client.base_url} is FHIR {caps.version or 'unknown'}; {needs.purpose} needs FHIR "
            "R4 (4.0.x): point --server at an R4 endpoint"
        )
    return cs, caps.missing(needs)


def check_server(client: Client, needs: Needs = PUBLISH) -> dict[str, Any]:
    """Check the CapabilityStatement: FHIR 4.0.x plus what `needs` asks for, else ServerRejectedError.

    Returns the statement read last (see missing_capabilities).
    """
    cs, missing = missing_capabilities(client, needs)
    if missing:
        raise ServerRejectedError(
            f"{client.base_url} does not support {' or '.join(missing)} (not in its CapabilityStatement), "
            f"which {needs.purpose} needs{needs.why}"
        )
    return cs
