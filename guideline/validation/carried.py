"""CQL carried inside a bundle or package: compile each Library's own text/cql, compare its ELM with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guideline.content.cql import CompileResult, Engine
from guideline.core import elm
from guideline.core.errors import Finding
from guideline.core.fhir import CQL_OPTIONS_EXT
from guideline.validation.subject import CqlLib, Item, list_of

CQL = "cql"

# Translator options when a Library records none (cqf-cqlOptions): what ELM needs to be checked
# (locators for positions, result types for Boolean conditions), as in cql/cql-options.json.
DEFAULT_OPTIONS: dict[str, Any] = {
    "options": ["EnableLocators", "EnableResultTypes", "DisableListDemotion", "DisableListPromotion"],
    "signatureLevel": "Overloads",
}


def claimed_options(item: Item | None) -> dict[str, Any]:
    """What a Library says about how its ELM was made: the Parameters its cqf-cqlOptions extension names.

    Returns {"options": [...], "signatureLevel": ..., "compatibilityLevel": ..., "translatorVersion": ...}
    with only the members the Library records ({} when it records nothing).
    """
    if item is None:
        return {}
    ref = None
    for ext in list_of(item.resource, "extension"):
        if isinstance(ext, dict) and ext.get("url") == CQL_OPTIONS_EXT:
            vr = ext.get("valueReference")
            ref = vr.get("reference") if isinstance(vr, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    params = next(
        (c for c in list_of(item.resource, "contained") if isinstance(c, dict) and c.get("id") == ref[1:]), None
    )
    out: dict[str, Any] = {}
    for p in list_of(params, "parameter"):
        if not isinstance(p, dict) or not isinstance(p.get("valueString"), str):
            continue
        name, value = p.get("name"), p["valueString"]
        if name == "option":
            out.setdefault("options", []).append(value)
        elif name in ("signatureLevel", "compatibilityLevel", "translatorVersion") and value:
            out[name] = value
    return out


def compile_options(claimed: Mapping[str, Any]) -> dict[str, Any]:
    """Translator options for recompiling a carried library: those it claims, else the defaults."""
    if not claimed.get("options") and not claimed.get("signatureLevel"):
        return dict(DEFAULT_OPTIONS)
    opts = {k: claimed[k] for k in ("options", "signatureLevel", "compatibilityLevel") if k in claimed}
    opts.setdefault("options", [])
    return opts


def check_carried(libs: dict[str, CqlLib], engine: Engine) -> list[Finding]:
    """Compile the text/cql of every carried library (includes from the same package, then FHIRHelpers).

    Translator errors are located in the library's own text; a carried ELM that does not match the
    text (defines, result types) or that was made by another translator than the Library claims
    is reported. Each library's `elm` becomes the compiled one when the text compiles (the text is
    what a server translates), so later layers check what the CQL really defines.
    """
    texts = {n: lib.text for n, lib in libs.items() if lib.text is not None}
    findings: list[Finding] = []
    for name, lib in libs.items():
        if name == "FHIRHelpers" or lib.text is None:
            continue
        claimed = claimed_options(lib.item)
        res = engine.compile(name, texts, compile_options(claimed))
        findings.extend(_messages(lib, res, libs))
        carried = lib.elm
        if carried is not None:
            findings.extend(_translator_claim(lib, carried, claimed))
            if res.elm is not None:
                findings.extend(_elm_mismatch(lib, carried, res.elm))
        if res.elm is not None:
            lib.elm = res.elm
    return findings


def _messages(lib: CqlLib, res: CompileResult, libs: Mapping[str, CqlLib]) -> list[Finding]:
    """The translator's messages about this library's own text (others are reported with theirs)."""
    out = []
    for m in res.messages:
        if m.severity not in ("error", "warning"):
            continue
        if m.library != lib.name and m.library in libs:
            continue  # a problem inside an included library of the package: reported when it is compiled
        where = f"{lib.pos_prefix}{m.location}" if m.location else lib.header_loc()
        hint = "" if m.library == lib.name else f" (while including {m.library})"
        out.append(Finding(m.severity, lib.file, where, f"{m.message}{hint} (library {lib.name}; translator)", CQL))
    return out


def _elm_attachment(lib: CqlLib) -> str:
    """Where the application/elm+json attachment of the library's Library is."""
    if lib.item is None:
        return lib.header_loc()
    for i, c in enumerate(list_of(lib.item.resource, "content")):
        if isinstance(c, dict) and c.get("contentType") == "application/elm+json":
            return lib.item.at("content", i)
    return lib.item.at("content")


def _translator_claim(lib: CqlLib, carried: dict[str, Any], claimed: Mapping[str, Any]) -> list[Finding]:
    """The ELM was made by the translator version the Library records (cqf-cqlOptions)."""
    made_by, claim = elm.translator_version(carried), claimed.get("translatorVersion")
    if not made_by or not claim or made_by == claim:
        return []
    return _elm_error(
        lib,
        f"the ELM of {_library_key(lib)} was made by translator {made_by}, but the Library claims translator "
        f"{claim} (cqf-cqlOptions); regenerate the ELM from the CQL with the translator it names",
    )


def _elm_mismatch(lib: CqlLib, carried: dict[str, Any], compiled: dict[str, Any]) -> list[Finding]:
    """The carried ELM defines what the CQL defines, with the same result types."""
    have, want = elm.define_types(carried), elm.define_types(compiled)
    problems = []
    only_cql = sorted(set(want) - set(have))
    only_elm = sorted(set(have) - set(want))
    if only_cql:
        problems.append("defined only in the CQL: " + ", ".join(f'"{n}"' for n in only_cql))
    if only_elm:
        problems.append("defined only in the ELM: " + ", ".join(f'"{n}"' for n in only_elm))
    retyped = sorted(n for n in set(have) & set(want) if have[n] and want[n] and have[n] != want[n])
    if retyped:
        problems.append("other result type in the ELM: " + ", ".join(f'"{n}"' for n in retyped))
    if not problems:
        return []
    return _elm_error(
        lib,
        f"the application/elm+json of {_library_key(lib)} does not match its text/cql ({'; '.join(problems)}); "
        "regenerate the ELM from the CQL (`guideline build` for this project)",
    )


def _library_key(lib: CqlLib) -> str:
    return f"Library/{lib.item.rid if lib.item else lib.name}"


def _elm_error(lib: CqlLib, message: str) -> list[Finding]:
    """An error about a library's carried ELM, located at its application/elm+json attachment."""
    return [Finding("error", lib.item.file if lib.item else lib.file, _elm_attachment(lib), message, CQL)]
