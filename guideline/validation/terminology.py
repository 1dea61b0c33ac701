"""Layer 6, terminology: canonical code system URIs, expanded value sets, one display per code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guideline.core.errors import Finding
from guideline.validation.code_systems import CLINICAL, canonical_for_oid, known_systems, nearest_known
from guideline.validation.subject import URI_SCHEME, CqlLib, Item, PathPart, Subject, list_of

TERMINOLOGY = "terminology"

# Canonical code system URIs (terminology.hl7.org) -> name, for messages.
CODE_SYSTEMS: dict[str, str] = CLINICAL
# Spellings people use instead of the canonical URI (compared after _normalise_system).
_ALIASES: dict[str, str] = {
    **{
        a: "http://snomed.info/sct"
        for a in (
            "snomed",
            "snomedct",
            "snomed-ct",
            "snomed ct",
            "sct",
            "snomed.info/sct",
            "snomed.info",
            "snomed.org",
            "urn:oid:2.16.840.1.113883.6.96",
            "2.16.840.1.113883.6.96",
        )
    },
    **{a: "http://loinc.org" for a in ("loinc", "loinc.org", "urn:oid:2.16.840.1.113883.6.1")},
    **{
        a: "http://www.nlm.nih.gov/research/umls/rxnorm"
        for a in ("rxnorm", "nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88")
    },
    **{
        a: "http://hl7.org/fhir/sid/icd-10"
        for a in ("icd-10", "icd10", "icd 10", "hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.3")
    },
    **{
        a: "http://hl7.org/fhir/sid/icd-10-cm"
        for a in ("icd-10-cm", "icd10cm", "hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90")
    },
    **{a: "http://www.whocc.no/atc" for a in ("atc", "whocc.no/atc", "urn:oid:2.16.840.1.113883.6.73")},
    **{a: "http://unitsofmeasure.org" for a in ("ucum", "unitsofmeasure.org", "urn:oid:2.16.840.1.113883.6.8")},
}
# Systems whose codes are HL7 infrastructure (status, types, jurisdictions, units), not clinical
# content: they need a canonical URI but are not expected in the package's value sets.
_INFRASTRUCTURE_PREFIXES = (
    "http://terminology.hl7.org/",
    "http://hl7.org/fhir/",
    "http://unstats.un.org/",
    "urn:iso:std:iso:",
    "urn:ietf:bcp:",
    "http://unitsofmeasure.org",
)


def terminology_findings(s: Subject) -> list[Finding]:
    """Layer 6: codes name their system by its canonical URI and agree with the package's value sets.

    Enforces FHIR R4 (4.0.1) Using Codes in Resources, "Code Systems" (terminologies-systems.html:
    a Coding.system is the code system's canonical URI as listed by terminology.hl7.org, not a
    name, an OID when a URI exists, or a URL with a trailing slash); ValueSet "Value Set
    Expansion" (valueset.html#expansion), which CPG STU2 and HAPI (pre-expanded value sets) need
    because the engines match codes only against expansion.contains; and CQL 1.5 Author's Guide
    "Terminology" (codesystem and code declarations use the same URIs). Warnings: a code used by
    an ActivityDefinition or CQL that no value set or code system of the package lists, and a code
    shown with two different displays.
    """
    codes = _Codes(s)
    for it in s.items:
        if it.rtype == "ValueSet":
            codes.value_set(it)
    for it in s.items:
        if it.rtype == "CodeSystem" and it.str_field("url"):
            codes.code_system(it)
    for it in s.items:
        if it.rtype == "ActivityDefinition":
            codes.activity_definition(it)
    for lib in s.libs.values():
        if lib.name != "FHIRHelpers" and lib.elm is not None:
            codes.cql_library(lib)
    for it in s.items:
        if it.rtype not in ("ValueSet", "CodeSystem", "ActivityDefinition") and not it.external:
            codes.systems_only(it)
    return codes.out


def _normalise_system(system: str) -> str:
    n = system.strip().lower()
    for p in ("https://", "http://"):
        n = n.removeprefix(p)
    return n.removeprefix("www.").rstrip("/")


def system_problem(system: Any, own: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """(severity, message) when `system` is not a canonical code system URI that validate knows.

    Known: FHIR R4 core and HL7 terminology (THO), the clinical terminologies of CODE_SYSTEMS, the
    CPG code systems, and `own` (the package's CodeSystems and its namespace). An unknown URI
    within a couple of edits of a known one is a typo (error, naming it); other unknown URIs are
    warnings; an OID naming a known system is a warning giving its canonical URI.
    """
    if not isinstance(system, str) or not system:
        return "error", "coding has no system; add the canonical code system URI"
    if system in known_systems() or system in own:
        return None
    canonical = canonical_for_oid(system)
    if canonical:
        return "warning", (
            f"system '{system}' names {CODE_SYSTEMS[canonical]} by its OID; use its canonical URI '{canonical}'"
        )
    alias = _ALIASES.get(_normalise_system(system))
    if alias:
        return "error", (f"system '{system}' is not the canonical URI of {CODE_SYSTEMS[alias]}; use '{alias}' exactly")
    if not URI_SCHEME.match(system):
        return "error", (
            f"system '{system}' is not a URI; use the canonical code system URI "
            "(see terminology.hl7.org, e.g. http://snomed.info/sct)"
        )
    if system.startswith("urn:oid:"):
        return "warning", (
            f"system '{system}' is an OID; use the code system's canonical URI if terminology.hl7.org lists one"
        )
    if system.endswith("/") and system.startswith(("http://", "https://")):
        return "warning", f"system '{system}' ends with '/'; canonical URIs have no trailing slash"
    near = nearest_known(system, own)
    if near:
        return "error", f"unknown code system '{system}'; did you mean '{near}'?"
    return "warning", (
        f"unknown code system '{system}': not HL7/THO, a known clinical terminology or a CodeSystem of the "
        "package; check the URI against terminology.hl7.org"
    )


def _same_display(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _codings(node: Any, path: list[PathPart]) -> Iterator[tuple[list[PathPart], dict[str, Any]]]:
    """Every Coding-shaped object (system + code) under node, with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("code"), str) and "system" in node:
            yield path, node
        for k, v in node.items():
            if k not in ("text", "contained"):
                yield from _codings(v, [*path, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _codings(v, [*path, i])


class _Codes:
    """The codes the package lists (value sets, code systems) with their displays, and the findings.

    The package's resources are read in a fixed order (value sets, code systems, then the codes
    used by ActivityDefinitions and CQL), so that "listed" is known before "used" is judged.
    """

    def __init__(self, s: Subject) -> None:
        self.s = s
        self.out: list[Finding] = []
        self.known: dict[tuple[str, str], tuple[str | None, str]] = {}  # (system, code) -> (display, where)
        # The package's own code systems: its CodeSystems (any namespace) and its namespace.
        self.own = frozenset(t.str_field("url") or "" for t in s.items if t.rtype == "CodeSystem") - {""}

    def problem(self, system: Any) -> tuple[str, str] | None:
        """system_problem(), knowing the package's own code systems."""
        if isinstance(system, str) and self.s.own(system):
            return None
        return system_problem(system, self.own)

    def learn(self, system: Any, code: Any, display: Any, it: Item, path: list[PathPart]) -> None:
        """Record a listed code; a second, different display for it is a warning."""
        if not isinstance(system, str) or not isinstance(code, str):
            return
        disp = display if isinstance(display, str) else None
        prev = self.known.get((system, code))
        if prev is None or prev[0] is None:
            self.known[(system, code)] = (disp, it.key)
        elif disp is not None and not _same_display(prev[0], disp):
            self.out.append(
                Finding(
                    "warning",
                    it.file,
                    it.at(*path, "display"),
                    f"display '{disp}' for {system}|{code} differs from '{prev[0]}' in {prev[1]}; "
                    "use one display for a code across the package",
                    TERMINOLOGY,
                )
            )

    def member(self, system: str, code: str) -> bool:
        """Whether the package lists the code (or its system is infrastructure or a package CodeSystem)."""
        return (
            (system, code) in self.known
            or system.startswith(_INFRASTRUCTURE_PREFIXES)
            or any(t.rtype == "CodeSystem" for t in self.s.resolve(system))
        )

    # ---------------------------------------------------------------- what the package lists

    def value_set(self, it: Item) -> None:
        """A ValueSet: it has an expansion, its systems are canonical, compose agrees with the expansion."""
        exp = it.resource.get("expansion")
        contains = exp.get("contains") if isinstance(exp, dict) else None
        if not isinstance(contains, list) or not contains:
            self.out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("expansion"),
                    f"ValueSet {it.rid} has no expansion (expansion.contains); the local engine and "
                    "HAPI (pre-expansion required) only match codes listed there: add an expansion "
                    "listing every code",
                    TERMINOLOGY,
                )
            )
        expanded = self._expansion(it, contains)
        compose = it.resource.get("compose")
        includes = compose.get("include") if isinstance(compose, dict) else None
        for i, inc in enumerate(includes if isinstance(includes, list) else []):
            if isinstance(inc, dict) and "system" in inc:
                self._include(it, i, inc, expanded)

    def _expansion(self, it: Item, contains: Any) -> set[tuple[str, str]]:
        """Walk expansion.contains (nested entries too); the (system, code) pairs it lists."""
        stack: list[tuple[list[PathPart], Any]] = [(["expansion", "contains"], contains)]
        expanded: set[tuple[str, str]] = set()
        while stack:
            base, entries = stack.pop()
            for i, c in enumerate(entries if isinstance(entries, list) else []):
                if not isinstance(c, dict):
                    continue
                if isinstance(c.get("code"), str):
                    prob = self.problem(c.get("system"))
                    if prob:
                        self.out.append(Finding(prob[0], it.file, it.at(*base, i, "system"), prob[1], TERMINOLOGY))
                    self.learn(c.get("system"), c.get("code"), c.get("display"), it, [*base, i])
                    if isinstance(c.get("system"), str):
                        expanded.add((c["system"], c["code"]))
                elif not c.get("abstract") and "contains" not in c:
                    self.out.append(
                        Finding(
                            "error",
                            it.file,
                            it.at(*base, i),
                            "expansion entry without a code; give each entry system and code",
                            TERMINOLOGY,
                        )
                    )
                stack.append(([*base, i, "contains"], c.get("contains")))
        return expanded

    def _include(self, it: Item, i: int, inc: dict[str, Any], expanded: set[tuple[str, str]]) -> None:
        """compose.include[i]: a canonical system, and each listed concept present in the expansion."""
        prob = self.problem(inc.get("system"))
        if prob:
            self.out.append(Finding(prob[0], it.file, it.at("compose", "include", i, "system"), prob[1], TERMINOLOGY))
        for j, con in enumerate(list_of(inc, "concept")):
            if not isinstance(con, dict):
                continue
            self.learn(
                inc.get("system"), con.get("code"), con.get("display"), it, ["compose", "include", i, "concept", j]
            )
            pair = (inc.get("system"), con.get("code"))
            if expanded and isinstance(pair[0], str) and isinstance(pair[1], str) and pair not in expanded:
                self.out.append(
                    Finding(
                        "warning",
                        it.file,
                        it.at("compose", "include", i, "concept", j),
                        f"{pair[0]}|{pair[1]} is in compose but not in the expansion; regenerate the expansion",
                        TERMINOLOGY,
                    )
                )

    def code_system(self, it: Item) -> None:
        """A CodeSystem of the package: learn its concepts (nested ones too)."""
        stack: list[tuple[list[PathPart], Any]] = [(["concept"], it.resource.get("concept"))]
        while stack:
            base, concepts = stack.pop()
            for i, con in enumerate(concepts if isinstance(concepts, list) else []):
                if isinstance(con, dict):
                    self.learn(it.str_field("url"), con.get("code"), con.get("display"), it, [*base, i])
                    stack.append(([*base, i, "concept"], con.get("concept")))

    # ---------------------------------------------------------------- what the package uses

    def activity_definition(self, it: Item) -> None:
        """Every coding of an ActivityDefinition (but meta and extensions): canonical, listed, same display."""
        for path, coding in _codings(it.resource, []):
            if path[:1] in (["meta"], ["extension"]):
                continue
            system, code = coding.get("system"), coding["code"]
            prob = self.problem(system)
            if prob:
                self.out.append(Finding(prob[0], it.file, it.at(*path, "system"), prob[1], TERMINOLOGY))
                continue
            assert isinstance(system, str)  # noqa: S101 - system_problem checked it
            if not self.member(system, code):
                self.out.append(
                    Finding(
                        "warning",
                        it.file,
                        it.at(*path, "code"),
                        f"{system}|{code} is in no value set expansion or code list of the package; "
                        "add it to the value set it belongs to so its display is checked",
                        TERMINOLOGY,
                    )
                )
            disp = coding.get("display")
            ref = self.known.get((system, code))
            if isinstance(disp, str) and ref and ref[0] and not _same_display(disp, ref[0]):
                self.out.append(
                    Finding(
                        "warning",
                        it.file,
                        it.at(*path, "display"),
                        f"display '{disp}' for {system}|{code} differs from '{ref[0]}' in {ref[1]}; "
                        "use the package's display",
                        TERMINOLOGY,
                    )
                )

    def systems_only(self, it: Item) -> None:
        """Every other resource (PlanDefinition, Library...): each coding's system is a known canonical URI."""
        for path, coding in _codings(it.resource, []):
            if path[:1] == ["meta"]:
                continue
            prob = self.problem(coding.get("system"))
            if prob:
                self.out.append(Finding(prob[0], it.file, it.at(*path, "system"), prob[1], TERMINOLOGY))

    def cql_library(self, lib: CqlLib) -> None:
        """A CQL library's codesystem declarations (canonical URIs) and code declarations (listed, same display)."""
        systems: dict[str, str] = {}
        for cs in lib.defs("codeSystems"):
            sid = cs.get("id")
            if isinstance(cs.get("name"), str) and isinstance(sid, str):
                systems[cs["name"]] = sid
            prob = self.problem(sid)
            if prob:
                self.out.append(
                    Finding(prob[0], lib.file, lib.loc(cs), f'codesystem "{cs.get("name")}": {prob[1]}', TERMINOLOGY)
                )
        for cd in lib.defs("codes"):
            ref_cs = cd.get("codeSystem")
            cs_name = ref_cs.get("name") if isinstance(ref_cs, dict) else None
            system = systems.get(cs_name) if isinstance(cs_name, str) else None
            code = cd.get("id")
            if system is None or not isinstance(code, str) or self.problem(system):
                continue
            self._cql_code(lib, cd, system, code)

    def _cql_code(self, lib: CqlLib, cd: dict[str, Any], system: str, code: str) -> None:
        if not self.member(system, code):
            self.out.append(
                Finding(
                    "warning",
                    lib.file,
                    lib.loc(cd),
                    f'code "{cd.get("name")}" ({system}|{code}) is in no value set expansion or '
                    "code list of the package; add it to a value set so its display is checked",
                    TERMINOLOGY,
                )
            )
        disp = cd.get("display")
        ref = self.known.get((system, code))
        if isinstance(disp, str) and ref and ref[0] and not _same_display(disp, ref[0]):
            self.out.append(
                Finding(
                    "warning",
                    lib.file,
                    lib.loc(cd),
                    f"code \"{cd.get('name')}\" has display '{disp}', but {ref[1]} says "
                    f"'{ref[0]}' for {system}|{code}; use one display",
                    TERMINOLOGY,
                )
            )
