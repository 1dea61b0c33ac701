"""Layer 3, models: each resource parsed by the fhir.resources R4B models, reporting what the schema cannot."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from typing import Any

from guideline.core.errors import Finding
from guideline.validation.schema import resource_type_problem, short_value
from guideline.validation.subject import PathPart, fhirpath

MODEL_LAYER = "model"

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

_REQUIRED = re.compile(r"^Value for the field '[^']+' is required")


def model_findings(resource: dict[str, Any], file: str, prefix: str, seen: Sequence[str]) -> list[Finding]:
    """Layer 3: parse with the fhir.resources R4B model; report only what the schema did not.

    Enforces what FHIR R4 (4.0.1) states beyond the JSON schema: minimum cardinalities of
    elements the schema leaves optional (e.g. RelatedArtifact.type, Expression.language; the
    element definitions, Conformance Rules "Cardinality"), real calendar dates and times (§2.24
    Data Types, "Primitive Types": the schema checks only their shape), and choice elements
    (§2.6 Resource Formats: one value[x] at a time). R4B models judge R4 content, so the R4
    schema stays authoritative for structure; tolerated differences:
    - types in NO_R4B_MODEL are skipped;
    - 'extra_forbidden' (an element R4B does not know) where the R4 schema accepted the element;
    - anything at a location the schema already reported (no double findings).
    """
    rt = resource.get("resourceType")
    if not isinstance(rt, str) or rt in NO_R4B_MODEL or resource_type_problem(rt):
        return []  # not an R4 type (the schema layer said so) or no R4B model to compare with
    cls = _model_class(rt)
    if cls is None:
        return []
    errors = _parse_errors(cls, resource)
    if isinstance(errors, Exception):
        if seen:
            return []  # the schema already explained what is wrong with this resource
        return [
            Finding(
                "error",
                file,
                prefix,
                f"the R4B model cannot parse this resource ({type(errors).__name__}: {errors}); fix its structure",
                MODEL_LAYER,
            )
        ]
    out = []
    for err in errors:
        finding = _finding(err, rt, file, prefix, seen)
        if finding is not None:
            out.append(finding)
    return out


@functools.cache
def _model_class(resource_type: str) -> Any:
    # Imported on first use: fhir.resources and pydantic take a while to load, and only this
    # layer needs them.
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def _parse_errors(cls: Any, resource: dict[str, Any]) -> list[dict[str, Any]] | Exception:
    """The model's validation errors (none when it parses), or the exception that stopped it."""
    import pydantic  # loaded with fhir.resources by _model_class already

    try:
        cls.model_validate(copy.deepcopy(resource))
    except pydantic.ValidationError as e:
        return [dict(err) for err in e.errors()]
    except Exception as e:  # noqa: BLE001 - a third-party parser on arbitrary input: any failure is a finding
        return e
    return []


def _finding(err: dict[str, Any], rt: str, file: str, prefix: str, seen: Sequence[str]) -> Finding | None:
    """One model error as a finding, unless the schema reported at (or around) that location."""
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
        return None
    etype = err.get("type", "")
    if etype == "extra_forbidden":
        return None
    where = fhirpath(rt, [p for p in parts if isinstance(p, str)])
    text = str(err.get("msg", ""))
    if etype == "missing" or _REQUIRED.search(text):
        msg = f"{where} is required (minimum cardinality 1); add it"
    else:
        text = text.removeprefix("Value error, ")
        msg = f"{where}: {text} (value {short_value(err.get('input'))}); fix the value"
    return Finding("error", file, loc, msg, MODEL_LAYER)


def _json_name(py_name: str) -> str:
    # fhir.resources names Python-reserved elements with a suffix (class_fhir, import_fhir) and
    # primitive extensions as name__ext; report the JSON element names.
    if py_name.endswith("__ext"):
        return "_" + py_name[: -len("__ext")]
    return py_name.removesuffix("_fhir")
