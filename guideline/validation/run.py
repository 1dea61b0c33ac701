"""`guideline validate`: all layers over sources, dist/, a bundle or a package; located findings."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from guideline.content.cql import Engine
from guideline.core.config import Config
from guideline.core.errors import Finding, GuidelineError
from guideline.validation import conventions, cql, references, terminology
from guideline.validation.loading import load_subject
from guideline.validation.model import model_findings
from guideline.validation.report import ValidationReport
from guideline.validation.schema import schema_findings
from guideline.validation.subject import Item, Subject

# ---------------------------------------------------------------- running the layers


def check_subject(subject: Subject, structural_only: bool = False) -> list[Finding]:
    """Layers 2-7 over loaded resources. A crash in one check becomes a finding, never a traceback."""
    out: list[Finding] = []
    for it in subject.items:
        structural = _guarded(partial(schema_findings, it.resource, it.file, it.prefix), "schema", it.file)
        out.extend(structural)
        seen = [f.location for f in structural]
        out.extend(_guarded(partial(model_findings, it.resource, it.file, it.prefix, seen), "model", it.file))
    if structural_only:
        return out
    # Looked up at call time (module.function), so a test can replace one layer.
    for layer, fn in (
        ("references", references.reference_findings),
        ("cql", cql.cql_findings),
        ("terminology", terminology.terminology_findings),
        ("conventions", conventions.convention_findings),
    ):
        out.extend(_guarded(partial(fn, subject), layer, "(package)"))
    return out


# Layer 8 (a server's $validate) lives with the HTTP code in guideline.remote; validation only runs it.
ServerCheck = Callable[[list[Item]], list[Finding]]


def _guarded(fn: Callable[[], list[Finding]], layer: str, file: str) -> list[Finding]:
    try:
        return fn()
    except (GuidelineError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a validator bug must surface as a finding, not a traceback
        return [
            Finding(
                "error",
                file,
                "",
                f"internal error in the {layer} layer ({type(e).__name__}: {e}); please report it with this file",
                "internal",
            )
        ]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for f in findings:
        k = (f.severity, f.file, f.location, f.message)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def validate(
    path: Path | str | None = None,
    cfg: Config | None = None,
    engine: Engine | None = None,
    server_check: ServerCheck | None = None,
) -> ValidationReport:
    """Validate the sources (default), a dist/ folder, a bundle, a package or a folder of resources.

    All layers run and every problem is collected; nothing is printed. Raises UsageError for a
    missing path, ToolchainError when the schema or CQL toolchain is missing, and
    whatever `server_check` raises (layer 8, e.g. `remote.server_validation.server_check(client)`,
    which raises ServerUnreachableError when the server cannot be reached).
    """
    loaded = load_subject(path, cfg, engine)
    findings = list(loaded.findings)
    findings.extend(check_subject(loaded.subject, loaded.structural_only))
    if server_check is not None:
        findings.extend(server_check(loaded.subject.items))
    report = ValidationReport(loaded.target, _dedupe(findings))
    report.resources = len(loaded.subject.items)
    report.libraries = len([n for n in loaded.subject.libs if n != "FHIRHelpers"])
    return report
