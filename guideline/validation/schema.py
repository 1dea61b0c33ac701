"""Layer 2, structure: the official FHIR R4 JSON schema, per resource type, with located messages."""

from __future__ import annotations

import difflib
import functools
import json
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT6

from guideline.core import toolchain
from guideline.core.errors import Finding, ToolchainError
from guideline.core.fhir import CQL_IDENTIFIER_LANGUAGES
from guideline.validation.subject import PathPart, fhirpath

SCHEMA_LAYER = "schema"

# Schema `enum`s that encode an EXTENSIBLE (or weaker) binding: the official schema turns every
# coded element into a closed enum, so it rejects codes the specification allows. Kept explicit
# and small on purpose; required bindings (status, kind, priority...) are never listed here.
# (definition, element) -> (binding strength, codes accepted silently; others get a warning).
TOLERATED_ENUMS: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    # CPG STU2 applicability conditions use text/cql-identifier (HAPI clinical reasoning
    # resolves it as a define in the primary Library); the opioid IG's dotted spelling too.
    ("Expression", "language"): (
        "extensible",
        frozenset({*CQL_IDENTIFIER_LANGUAGES, "text/cql-expression"}),
    ),
}
# Required bindings whose schema enum is out of date: R4's fhir.schema.json was generated for
# 4.0.0 and its FHIRVersion enum ends at 4.0.0, but the 4.0.1 technical correction added the code
# 4.0.1 (http://hl7.org/fhir/R4/valueset-FHIR-version.html). Only these exact codes are added.
SCHEMA_ERRATA: dict[tuple[str, str], frozenset[str]] = {
    ("ImplementationGuide", "fhirVersion"): frozenset({"4.0.1"}),
    ("CapabilityStatement", "fhirVersion"): frozenset({"4.0.1"}),
    ("StructureDefinition", "fhirVersion"): frozenset({"4.0.1"}),
}

# Required bindings the official schema leaves as a plain `code` (their value sets are shared by
# several resources, so the generator skipped the enum). Checked here so a typo such as
# ActivityDefinition.kind "ServiceRequestt" cannot reach $apply.
_REQUEST_INTENT = frozenset(
    {
        "proposal",
        "plan",
        "directive",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    }
)
_REQUEST_PRIORITY = frozenset({"routine", "urgent", "asap", "stat"})
SCHEMA_GAPS: dict[tuple[str, str], frozenset[str]] = {
    ("ActivityDefinition", "kind"): frozenset(
        {
            "Appointment",
            "AppointmentResponse",
            "CarePlan",
            "Claim",
            "CommunicationRequest",
            "Contract",
            "DeviceRequest",
            "EnrollmentRequest",
            "ImmunizationRecommendation",
            "MedicationRequest",
            "NutritionOrder",
            "ServiceRequest",
            "SupplyRequest",
            "Task",
            "VisionPrescription",
        }
    ),
    ("ActivityDefinition", "intent"): _REQUEST_INTENT,
    ("ActivityDefinition", "priority"): _REQUEST_PRIORITY,
    ("PlanDefinition_Action", "priority"): _REQUEST_PRIORITY,
    ("RequestGroup", "intent"): _REQUEST_INTENT,
    ("RequestGroup", "priority"): _REQUEST_PRIORITY,
    ("RequestGroup_Action", "priority"): _REQUEST_PRIORITY,
}

# Types that exist in R4B/R5 but not in R4: a common slip when copying from newer IGs.
NEWER_THAN_R4 = frozenset(
    {
        "Citation",
        "ClinicalUseDefinition",
        "Ingredient",
        "ManufacturedItemDefinition",
        "AdministrableProductDefinition",
        "PackagedProductDefinition",
        "RegulatedAuthorization",
        "MedicinalProductDefinition",
        "NutritionProduct",
        "SubscriptionStatus",
        "SubscriptionTopic",
        "EvidenceReport",
    }
)

# What each primitive must look like, for messages (the schema only gives a regex).
_PRIMITIVE_HINTS = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date, no time",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone (Z or +hh:mm)",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss) with a time zone (Z or +hh:mm)",
    "time": "hh:mm:ss",
    "id": "1-64 characters: letters, digits, '-' and '.' only",
    "uri": "no whitespace",
    "url": "no whitespace",
    "canonical": "an absolute URL, optionally |version, no whitespace",
    "oid": "urn:oid: followed by dotted digits",
    "uuid": "urn:uuid: followed by a lower-case UUID",
    "code": "no leading, trailing or repeated whitespace, not empty",
    "string": 'not empty (omit the element instead of writing "")',
    "markdown": 'not empty (omit the element instead of writing "")',
    "integer": "a whole number",
    "positiveInt": "a whole number >= 1",
    "unsignedInt": "a whole number >= 0",
    "decimal": "a JSON number",
    "boolean": "true or false",
    "base64Binary": "base64 text",
}
_JSON_KIND = {
    "array": "a JSON array",
    "object": "a JSON object",
    "string": "a JSON string",
    "number": "a JSON number",
    "boolean": "true or false",
    "integer": "a whole number",
}


class _Schema:
    """The official R4 schema, loaded once, with one lazily built validator per resource type."""

    def __init__(self) -> None:
        path = toolchain.fhir_schema_path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ToolchainError(f"cannot read the FHIR R4 schema {path}: {e}") from None
        if raw.get("id") != toolchain.SCHEMA_ID:
            raise ToolchainError(f"{path} is not the FHIR R4 schema (id {raw.get('id')!r}); {toolchain.SETUP_HINT}")
        self.resource_types: frozenset[str] = frozenset(raw["discriminator"]["mapping"])
        self.definitions: dict[str, Any] = raw["definitions"]
        root = {k: v for k, v in raw.items() if k not in ("oneOf", "discriminator")}
        root["definitions"] = dict(self.definitions)
        # Nested resources (contained, Bundle.entry.resource) are validated one by one against
        # their own type; the schema's oneOf over ~150 types would only say "not valid under any".
        root["definitions"]["ResourceList"] = {
            "type": "object",
            "properties": {"resourceType": {"type": "string"}},
            "required": ["resourceType"],
        }
        self._id = raw["id"]
        self._registry: Registry[Any] = Registry().with_resource(self._id, DRAFT6.create_resource(root))
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._lock = threading.Lock()

    def validator(self, resource_type: str) -> jsonschema.protocols.Validator:
        with self._lock:
            v = self._validators.get(resource_type)
            if v is None:
                ref = {"$ref": f"{self._id}#/definitions/{resource_type}"}
                v = jsonschema.Draft6Validator(ref, registry=self._registry)
                self._validators[resource_type] = v
            return v

    def element(self, definition: str, path: Sequence[PathPart]) -> tuple[str, str, str | None] | None:
        """Walk `path` from a definition: (owning definition, element name, element type) of its end."""
        cur, found = definition, None
        for part in path:
            if isinstance(part, int):
                continue
            props = (self.definitions.get(cur) or {}).get("properties") or {}
            spec = props.get(part)
            if spec is None:
                return None
            ref = spec.get("$ref") or (spec.get("items") or {}).get("$ref")
            name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None
            found = (cur, part, name)
            cur = name or ""
        return found

    def properties(self, definition: str) -> list[str]:
        return list(((self.definitions.get(definition) or {}).get("properties") or {}).keys())


@functools.lru_cache(maxsize=1)
def schema() -> _Schema:
    """The process-wide schema (parsed once; validators compile on first use per type)."""
    return _Schema()


def _nested(resource: dict[str, Any]) -> Iterator[tuple[list[PathPart], dict[str, Any]]]:
    """Resources nested inside a resource (contained, Parameters.parameter[.part].resource)."""
    contained = resource.get("contained")
    if isinstance(contained, list):
        for i, c in enumerate(contained):
            if isinstance(c, dict):
                yield ["contained", i], c
    if resource.get("resourceType") == "Parameters":
        stack: list[tuple[list[PathPart], Any]] = [(["parameter"], resource.get("parameter"))]
        while stack:
            base, params = stack.pop()
            for i, p in enumerate(params if isinstance(params, list) else []):
                if isinstance(p, dict):
                    if isinstance(p.get("resource"), dict):
                        yield [*base, i, "resource"], p["resource"]
                    stack.append(([*base, i, "part"], p.get("part")))


def short_value(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: a quoted string or compact JSON, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resource_type_problem(rt: Any) -> str | None:
    """Why `rt` is not an R4 resource type (None if it is one)."""
    sch = schema()
    if isinstance(rt, str) and rt in sch.resource_types:
        return None
    if not isinstance(rt, str):
        return f"resourceType must be a string naming an R4 resource type, not {short_value(rt)}"
    if rt in NEWER_THAN_R4:
        hint = (
            "; cite the source in relatedArtifact (type citation) instead"
            if rt == "Citation"
            else "; model it with R4 resources"
        )
        return f"'{rt}' is not a FHIR R4 resource type (it was added in R4B/R5){hint}"
    close = difflib.get_close_matches(rt, sorted(sch.resource_types), n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else "; use an R4 resource type"
    return f"'{rt}' is not a FHIR R4 resource type{hint}"


def schema_findings(resource: dict[str, Any], file: str, prefix: str) -> list[Finding]:
    """Layer 2: the official R4 JSON schema, with exact element paths and actionable messages.

    Enforces FHIR R4 (4.0.1) as its published JSON schema (fhir.schema.json) states it: the
    resource types (resourceType, contained and nested resources each against their own type),
    element names, cardinality as JSON shape (a 0..* element is an array, a 0..1 one is not) and
    minimum cardinalities the schema marks required (§2.6 Resource Formats, JSON representation
    in json.html), primitive formats (§2.24 Data Types, "Primitive Types": date, id, uri...), and
    codes of required bindings (Terminologies, "Binding Strength": terminologies.html#strength).
    The schema over-reaches and under-reaches in two places, both explicit and small: an
    extensible binding it encodes as an enum is a warning (TOLERATED_ENUMS), and required
    bindings it leaves as a plain code are checked here (SCHEMA_GAPS).
    """
    out: list[Finding] = []
    _schema_check(resource, file, prefix, out)
    return out


def _schema_check(resource: dict[str, Any], file: str, prefix: str, out: list[Finding]) -> None:
    rt = resource.get("resourceType")
    problem = resource_type_problem(rt)
    if problem:
        # A top-level resource is located by its own (unknown) type: point at the element itself.
        loc = "resourceType" if prefix in ("", rt) else fhirpath(prefix, ["resourceType"])
        out.append(Finding("error", file, loc, problem, SCHEMA_LAYER))
        return
    assert isinstance(rt, str)  # noqa: S101 - resource_type_problem checked it
    sch = schema()
    for err in sch.validator(rt).iter_errors(resource):
        out.extend(_translate(err, rt, file, prefix))
    _gaps(resource, rt, [], file, prefix, out)
    for path, sub in _nested(resource):
        _schema_check(sub, file, fhirpath(prefix, path), out)


def _gaps(node: Any, definition: str, path: list[PathPart], file: str, prefix: str, out: list[Finding]) -> None:
    """Check SCHEMA_GAPS while walking `node` along the schema's definitions."""
    if isinstance(node, list):
        for i, v in enumerate(node):
            _gaps(v, definition, [*path, i], file, prefix, out)
        return
    if not isinstance(node, dict):
        return
    props = (schema().definitions.get(definition) or {}).get("properties") or {}
    for key, value in node.items():
        codes = SCHEMA_GAPS.get((definition, key))
        if codes is not None and isinstance(value, str) and value not in codes:
            out.append(
                Finding(
                    "error",
                    file,
                    fhirpath(prefix, [*path, key]),
                    f"{short_value(value)} is not allowed here (required binding); use one of: "
                    f"{' | '.join(sorted(codes))}",
                    SCHEMA_LAYER,
                )
            )
            continue
        spec = props.get(key) if key != "contained" else None
        ref = (spec.get("$ref") or (spec.get("items") or {}).get("$ref")) if isinstance(spec, dict) else None
        name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else ""
        if name and (schema().definitions.get(name) or {}).get("properties") and name != "ResourceList":
            _gaps(value, name, [*path, key], file, prefix, out)


def _translate(err: jsonschema.ValidationError, rt: str, file: str, prefix: str) -> list[Finding]:
    """One schema error as findings, at the element it concerns, saying what to write instead."""
    path: list[PathPart] = list(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        return _unknown_elements(err.instance, rt, path, file, prefix)
    owner = schema().element(rt, path)
    loc = fhirpath(prefix, path)
    if err.validator == "enum" and owner is not None:
        return _enum_findings(err, owner, file, loc)
    if err.validator == "required":
        missing = re.match(r"'([^']+)'", err.message)
        name = missing.group(1) if missing else "?"
        return [
            Finding(
                "error",
                file,
                fhirpath(prefix, [*path, name]),
                f"{fhirpath(rt, [*[p for p in path if isinstance(p, str)], name])} is required "
                "(minimum cardinality 1); add it",
                SCHEMA_LAYER,
            )
        ]
    return [Finding("error", file, loc, _message(err, rt, path, owner[2] if owner else None), SCHEMA_LAYER)]


def _unknown_elements(instance: dict[str, Any], rt: str, path: list[PathPart], file: str, prefix: str) -> list[Finding]:
    """additionalProperties: one finding per element the R4 definition does not have."""
    sch = schema()
    owner = sch.element(rt, path)
    definition = owner[2] if owner else rt
    known = sch.properties(definition or rt)
    where = fhirpath(rt, [p for p in path if isinstance(p, str)])
    out = []
    for key in instance:
        if key in known:
            continue
        close = difflib.get_close_matches(key, [k for k in known if not k.startswith("_")], n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        out.append(
            Finding(
                "error",
                file,
                fhirpath(prefix, [*path, key]),
                f"unknown element '{key}': R4 {where} has no such element; {hint}"
                "remove it or fix the spelling (extensions go in 'extension')",
                SCHEMA_LAYER,
            )
        )
    return out


def _enum_findings(
    err: jsonschema.ValidationError, owner: tuple[str, str, str | None], file: str, loc: str
) -> list[Finding]:
    """A code outside the schema's enum: an error for a required binding, a warning for a tolerated one."""
    value = short_value(err.instance)
    if isinstance(err.instance, str) and err.instance in SCHEMA_ERRATA.get((owner[0], owner[1]), frozenset()):
        return []
    tolerated = TOLERATED_ENUMS.get((owner[0], owner[1]))
    codes = err.validator_value if isinstance(err.validator_value, list) else []
    allowed = " | ".join(str(x) for x in codes)
    if tolerated is None:
        return [
            Finding(
                "error",
                file,
                loc,
                f"{value} is not allowed here (required binding); use one of: {allowed}",
                SCHEMA_LAYER,
            )
        ]
    strength, accepted = tolerated
    if isinstance(err.instance, str) and err.instance in accepted:
        return []
    return [
        Finding(
            "warning",
            file,
            loc,
            f"{value} is not one of the codes of the {strength} binding ({allowed}); use one of them unless none fits",
            SCHEMA_LAYER,
        )
    ]


def _message(err: jsonschema.ValidationError, rt: str, path: list[PathPart], etype: str | None) -> str:
    """What is wrong with a value (pattern, JSON type, const, anything else) and what it must be."""
    kind = err.validator
    value = short_value(err.instance)
    where = fhirpath(rt, [p for p in path if isinstance(p, str)])
    if kind == "pattern":
        t = etype or "string"
        return (
            f"{value} is not a valid FHIR {t}: expected {_PRIMITIVE_HINTS.get(t, 'see the FHIR datatype definition')}"
        )
    if kind == "type":
        expected = err.validator_value
        if expected == "array":
            return f"{where} repeats (0..*): it must be a JSON array; wrap the value in [ ]"
        if isinstance(err.instance, list):
            return f"{where} has at most one value (0..1), but got a JSON array; give a single value"
        want = _JSON_KIND.get(expected, str(expected)) if isinstance(expected, str) else str(expected)
        return f"{value} must be {want}{f' (FHIR {etype})' if etype else ''}"
    if kind == "const":
        return f"{value} must be {short_value(err.validator_value)}"
    return f"{err.message} (R4 schema: {kind})"
