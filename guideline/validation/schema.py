"""Structural layers: the official FHIR R4 JSON schema (per-type validators) and R4B model parsing."""

from __future__ import annotations

import copy
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

SCHEMA_LAYER = "schema"
MODEL_LAYER = "model"

PathPart = str | int

# Schema `enum`s that encode an EXTENSIBLE (or weaker) binding: the official schema turns every
# coded element into a closed enum, so it rejects codes the specification allows. Kept explicit
# and small on purpose; required bindings (status, kind, priority...) are never listed here.
# (definition, element) -> (binding strength, codes accepted silently; others get a warning).
TOLERATED_ENUMS: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    # CPG STU2 applicability conditions use text/cql-identifier (HAPI clinical reasoning
    # resolves it as a define in the primary Library); the opioid IG's dotted spelling too.
    ("Expression", "language"): (
        "extensible",
        frozenset({"text/cql-identifier", "text/cql.identifier", "text/cql-expression"}),
    ),
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

# R4 resource types without an R4B model in fhir.resources (R4B removed or redesigned them):
# the model layer skips them and the R4 schema alone judges their structure.
NO_R4B_MODEL = frozenset(
    {
        "EffectEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "RiskEvidenceSynthesis",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
        # R4B rewrote these two; their R4 shape fails the R4B model by design.
        "Evidence",
        "EvidenceVariable",
    }
)

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


def fhirpath(prefix: str, parts: Sequence[PathPart]) -> str:
    """A FHIRPath-like location: prefix + .name / [index] segments."""
    out = prefix
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


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


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resource_type_problem(rt: Any) -> str | None:
    """Why `rt` is not an R4 resource type (None if it is one)."""
    sch = schema()
    if isinstance(rt, str) and rt in sch.resource_types:
        return None
    if not isinstance(rt, str):
        return f"resourceType must be a string naming an R4 resource type, not {_short(rt)}"
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
    """Layer 2: the official R4 JSON schema, with exact element paths and actionable messages."""
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
                    f"{_short(value)} is not allowed here (required binding); use one of: {' | '.join(sorted(codes))}",
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
    sch = schema()
    path: list[PathPart] = list(err.absolute_path)
    loc = fhirpath(prefix, path)
    kind = err.validator
    where = fhirpath(rt, [p for p in path if isinstance(p, str)])
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        owner = sch.element(rt, path)
        definition = owner[2] if owner else rt
        known = sch.properties(definition or rt)
        out = []
        for key in err.instance:
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
    owner = sch.element(rt, path)
    etype = owner[2] if owner else None
    value = _short(err.instance)
    if kind == "enum" and owner is not None:
        tolerated = TOLERATED_ENUMS.get((owner[0], owner[1]))
        codes = err.validator_value if isinstance(err.validator_value, list) else []
        allowed = " | ".join(str(x) for x in codes)
        if tolerated is not None:
            strength, accepted = tolerated
            if isinstance(err.instance, str) and err.instance in accepted:
                return []
            return [
                Finding(
                    "warning",
                    file,
                    loc,
                    f"{value} is not one of the codes of the {strength} binding ({allowed}); "
                    "use one of them unless none fits",
                    SCHEMA_LAYER,
                )
            ]
        return [
            Finding(
                "error",
                file,
                loc,
                f"{value} is not allowed here (required binding); use one of: {allowed}",
                SCHEMA_LAYER,
            )
        ]
    if kind == "pattern":
        t = etype or "string"
        hint = _PRIMITIVE_HINTS.get(t, "see the FHIR datatype definition")
        return [Finding("error", file, loc, f"{value} is not a valid FHIR {t}: expected {hint}", SCHEMA_LAYER)]
    if kind == "type":
        expected = err.validator_value
        want = _JSON_KIND.get(expected, str(expected)) if isinstance(expected, str) else str(expected)
        if expected == "array":
            msg = f"{where} repeats (0..*): it must be a JSON array; wrap the value in [ ]"
        elif isinstance(err.instance, list):
            msg = f"{where} has at most one value (0..1), but got a JSON array; give a single value"
        else:
            t = f" (FHIR {etype})" if etype else ""
            msg = f"{value} must be {want}{t}"
        return [Finding("error", file, loc, msg, SCHEMA_LAYER)]
    if kind == "required":
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
    if kind == "const":
        return [Finding("error", file, loc, f"{value} must be {_short(err.validator_value)}", SCHEMA_LAYER)]
    return [Finding("error", file, loc, f"{err.message} (R4 schema: {kind})", SCHEMA_LAYER)]


# ---------------------------------------------------------------- layer 3: fhir.resources R4B models


@functools.cache
def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def model_findings(resource: dict[str, Any], file: str, prefix: str, seen: Sequence[str]) -> list[Finding]:
    """Layer 3: parse with the fhir.resources R4B model; report only what the schema did not.

    Tolerated R4/R4B differences (the R4 schema is authoritative for structure):
    - types in NO_R4B_MODEL are skipped;
    - 'extra_forbidden' (an element R4B does not know) where the R4 schema accepted the element;
    - anything at a location the schema already reported (no double findings).
    What this layer adds: minimum cardinalities (status, type, language...), real calendar dates,
    and choice-type rules the JSON schema cannot express.
    """
    rt = resource.get("resourceType")
    if not isinstance(rt, str) or rt in NO_R4B_MODEL or resource_type_problem(rt):
        return []  # not an R4 type (the schema layer said so) or no R4B model to compare with
    cls = _model_class(rt)
    if cls is None:
        return []
    import pydantic

    try:
        cls.model_validate(copy.deepcopy(resource))
    except pydantic.ValidationError as e:
        errors = e.errors()
    except Exception as e:  # noqa: BLE001 - a third-party parser on arbitrary input: any failure is a finding
        if seen:
            return []  # the schema already explained what is wrong with this resource
        return [
            Finding(
                "error",
                file,
                prefix,
                f"the R4B model cannot parse this resource ({type(e).__name__}: {e}); fix its structure",
                MODEL_LAYER,
            )
        ]
    else:
        return []
    out = []
    for err in errors:
        parts: list[PathPart] = [p if isinstance(p, int) else _json_name(str(p)) for p in err.get("loc", ())]
        loc = fhirpath(prefix, parts)
        if any(
            loc == s
            or loc.startswith(s + ".")
            or loc.startswith(s + "[")
            or s.startswith(loc + ".")
            or s.startswith(loc + "[")
            for s in seen
        ):
            continue
        etype = err.get("type", "")
        if etype == "extra_forbidden":
            continue
        where = fhirpath(rt, [p for p in parts if isinstance(p, str)])
        text = str(err.get("msg", ""))
        if etype == "missing" or _REQUIRED.search(text):
            msg = f"{where} is required (minimum cardinality 1); add it"
        else:
            text = text.removeprefix("Value error, ")
            msg = f"{where}: {text} (value {_short(err.get('input'))}); fix the value"
        out.append(Finding("error", file, loc, msg, MODEL_LAYER))
    return out


_REQUIRED = re.compile(r"^Value for the field '[^']+' is required")


def _json_name(py_name: str) -> str:
    # fhir.resources names Python-reserved elements with a suffix (class_fhir, import_fhir) and
    # primitive extensions as name__ext; report the JSON element names.
    if py_name.endswith("__ext"):
        return "_" + py_name[: -len("__ext")]
    return py_name.removesuffix("_fhir")
