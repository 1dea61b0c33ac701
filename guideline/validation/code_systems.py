"""Known code system URIs (HL7/THO, clinical terminologies, CPG) and the nearest one to a typo."""

from __future__ import annotations

from functools import cache
from importlib import resources

# Clinical and unit terminologies as terminology.hl7.org names them -> name, for messages.
CLINICAL: dict[str, str] = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD-9-CM",
    "http://id.who.int/icd/release/11/mms": "ICD-11 MMS",
    "http://www.whocc.no/atc": "ATC",
    "http://fdasis.nlm.nih.gov": "UNII",
    "http://unitsofmeasure.org": "UCUM",
    "http://www.orpha.net": "Orphanet",
    "https://omim.org": "OMIM",
    "http://purl.obolibrary.org/obo/mondo.owl": "MONDO",
    "http://purl.obolibrary.org/obo/hp.owl": "HPO",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "urn:ietf:bcp:47": "BCP-47 languages",
    "urn:ietf:bcp:13": "MIME types",
    "urn:iso:std:iso:3166": "ISO 3166 countries",
    "http://unstats.un.org/unsd/methods/m49/m49.htm": "UN M49 regions",
}

# OIDs (HL7 OID registry, as terminology.hl7.org lists them) of the systems above.
OIDS: dict[str, str] = {
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm",
    "2.16.840.1.113883.6.103": "http://hl7.org/fhir/sid/icd-9-cm",
    "2.16.840.1.113883.6.73": "http://www.whocc.no/atc",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "2.16.840.1.113883.4.9": "http://fdasis.nlm.nih.gov",
    "2.16.840.1.113883.6.69": "http://hl7.org/fhir/sid/ndc",
    "2.16.840.1.113883.6.12": "http://www.ama-assn.org/go/cpt",
    "2.16.840.1.113883.12.292": "http://hl7.org/fhir/sid/cvx",
}

# CPG-on-FHIR code systems: STU1 ids and STU2 ids (with -cs), both in use.
_CPG = "http://hl7.org/fhir/uv/cpg/CodeSystem/"
CPG: tuple[str, ...] = tuple(
    f"{_CPG}cpg-{n}{suffix}"
    for n in (
        "activity-type",
        "common-process",
        "recommendation-direction",
        "casefeature-type",
        "casefeature-pertinence",
        "common-persona",
        "indicator",
        "knowledge-representation-level",
        "knowledgeCapability",
    )
    for suffix in ("", "-cs")
)

# An unknown URI this close (in edits) to a known one is taken for a typo of it.
MAX_TYPO_EDITS = 2


@cache
def hl7_systems() -> frozenset[str]:
    """The CodeSystem urls of FHIR R4 core and the HL7 terminology it ships (data/hl7-code-systems.txt)."""
    text = resources.files("guideline.validation").joinpath("data/hl7-code-systems.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


@cache
def known_systems() -> frozenset[str]:
    """Every code system URI validate knows without the package: HL7 core/THO, clinical, CPG."""
    return hl7_systems() | frozenset(CLINICAL) | frozenset(CPG)


def canonical_for_oid(system: str) -> str | None:
    """The canonical URI of a known system named by `urn:oid:<oid>` (None when the OID is not known)."""
    return OIDS.get(system.removeprefix("urn:oid:")) if system.startswith("urn:oid:") else None


def _within(a: str, b: str, limit: int) -> int | None:
    """The edit distance of a and b when it is at most `limit` (banded Levenshtein), else None."""
    if abs(len(a) - len(b)) > limit:
        return None
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [limit + 1] * len(b)
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        for j in range(lo, hi + 1):
            cost = 0 if ca == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        if min(cur[max(0, lo - 1) : hi + 1]) > limit:
            return None
        prev = cur
    return prev[len(b)] if prev[len(b)] <= limit else None


@cache
def nearest_known(system: str, extra: frozenset[str] = frozenset()) -> str | None:
    """The known URI (or one of `extra`) within MAX_TYPO_EDITS edits of `system`, the closest first."""
    best: tuple[int, str] | None = None
    for known in sorted(known_systems() | extra):
        d = _within(system, known, MAX_TYPO_EDITS)
        if d is not None and d > 0 and (best is None or d < best[0]):
            best = (d, known)
    return best[1] if best else None
