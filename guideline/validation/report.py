"""The validation report: located findings, text grouped by file, or one OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guideline.core.errors import ExitCode, Finding
from guideline.core.fhir import OO_COL_EXT, OO_LINE_EXT, OO_SOURCE_EXT

_SEVERITY_ORDER = {"fatal": 0, "error": 0, "warning": 1, "information": 2}

# OperationOutcome.issue.code per layer (http://hl7.org/fhir/issue-type).
_ISSUE_CODE = {
    "json": "structure",
    "schema": "structure",
    "model": "structure",
    "references": "not-found",
    "cql": "invalid",
    "terminology": "code-invalid",
    "conventions": "business-rule",
    "server": "processing",
    "build": "processing",
    "internal": "exception",
}


@dataclass
class ValidationReport:
    """What `validate` found; never printed by the library (see render_text / operation_outcome)."""

    target: str
    findings: list[Finding] = field(default_factory=list)
    resources: int = 0
    libraries: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("error", "fatal")]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def counts(self) -> dict[str, int]:
        out = {"error": 0, "warning": 0, "information": 0}
        for f in self.findings:
            key = "error" if f.severity == "fatal" else f.severity
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def files(self) -> list[str]:
        return sorted({f.file for f in self.findings if f.severity in ("error", "fatal", "warning")})

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.ok else ExitCode.INVALID_CONTENT

    def summary(self) -> str:
        """One line: how many errors and warnings, in how many files."""
        c = self.counts
        return (
            f"{_plural(c['error'], 'error')}, {_plural(c['warning'], 'warning')} in {_plural(len(self.files), 'file')}"
        )

    def render_text(self) -> str:
        """Findings grouped by file (errors first within a file), then the summary line."""
        lines: list[str] = []
        by_file: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_file.setdefault(f.file, []).append(f)
        for file in sorted(by_file):
            lines.append(file)
            for f in sorted(by_file[file], key=lambda x: (_SEVERITY_ORDER.get(x.severity, 3), _loc_key(x))):
                where = f"{f.location}: " if f.location else ""
                lines.append(f"  {f.severity}: {where}{f.message} [{f.layer}]")
        lines.append(f"validated {self.target}: {self.resources} resources, {self.libraries} CQL libraries")
        lines.append(self.summary())
        return "\n".join(lines)

    def operation_outcome(self) -> dict[str, Any]:
        """One R4 OperationOutcome: file in issue.location, element path in issue.expression."""
        issues = [_issue(f) for f in self.findings]
        if not issues:
            issues = [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"validated {self.target}: no problems found",
                }
            ]
        return {"resourceType": "OperationOutcome", "id": "guideline-validate", "issue": issues}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _loc_key(f: Finding) -> tuple[int, int, str]:
    parts = f.location.rsplit(" ", 1)[-1].split(":")
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1]), f.location
    return 0, 0, f.location


def _issue(f: Finding) -> dict[str, Any]:
    sev = f.severity if f.severity in ("fatal", "error", "warning", "information") else "error"
    issue: dict[str, Any] = {
        "extension": [{"url": OO_SOURCE_EXT, "valueString": f"guideline validate: {f.layer or 'validate'}"}],
        "severity": sev,
        "code": _ISSUE_CODE.get(f.layer, "invalid"),
        "diagnostics": f.message,
        "location": [f.file],
    }
    pos = f.location.rsplit(" ", 1)[-1].split(":")
    if len(pos) == 2 and pos[0].isdigit() and pos[1].isdigit():
        issue["extension"] += [
            {"url": OO_LINE_EXT, "valueInteger": int(pos[0])},
            {"url": OO_COL_EXT, "valueInteger": int(pos[1])},
        ]
        issue["location"].append(f"{f.file}:{f.location}")
    elif f.location:
        issue["expression"] = [f.location]
    return issue
