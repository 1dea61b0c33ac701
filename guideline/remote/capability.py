"""The one capability check: is this a FHIR R4 server that can do what we ask of it."""

from __future__ import annotations

from typing import Any

from guideline.core.errors import ServerRejectedError
from guideline.remote.http import Client

# Only what check_server reads. HAPI's full CapabilityStatement is ~1.5 MB (every search parameter of
# every type) and took 0.3-0.55 s, more than half of a no-op publish; subsetted it is ~350 bytes.
_CAPABILITY_ELEMENTS = "fhirVersion,rest.mode,rest.interaction"


def _capabilities(cs: dict[str, Any]) -> tuple[str, set[str]]:
    version = str(cs.get("fhirVersion", ""))
    interactions = {str(i.get("code")) for r in cs.get("rest", []) for i in r.get("interaction", [])}
    return version, interactions


def check_server(client: Client) -> dict[str, Any]:
    """Check the CapabilityStatement: FHIR 4.0.x with transactions, else a clear error.

    One request for only the elements it checks (`_elements`); only a server that answers a
    subset without them (it cannot subset nested elements) is asked again, for the whole statement.
    """
    # cached: HAPI rebuilds the statement (0.65 s) when asked with no-cache; it does not change with writes.
    cs: dict[str, Any] = client.get_json("metadata", params={"_elements": _CAPABILITY_ELEMENTS}, cached=True)
    version, interactions = _capabilities(cs)
    if not version.startswith("4.0") or "transaction" not in interactions:
        subsetted = any(t.get("code") == "SUBSETTED" for t in (cs.get("meta") or {}).get("tag", []))
        if subsetted or not version:
            cs = client.get_json("metadata", cached=True)
            version, interactions = _capabilities(cs)
    if not version.startswith("4.0"):
        raise ServerRejectedError(
            f"{client.base_url} is FHIR {version or 'unknown'}; this package needs FHIR "
            "R4 (4.0.x): point --server at an R4 endpoint"
        )
    if "transaction" not in interactions:
        raise ServerRejectedError(
            f"{client.base_url} does not support transaction Bundles; publishing needs them to be all-or-nothing"
        )
    return cs
