"""Layer 8 of validate: each resource through a FHIR server's $validate, issues merged as findings."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from guideline.core.errors import Finding
from guideline.core.fhir import issue_text, outcome_issues
from guideline.remote.http import Client
from guideline.validation.subject import Item

SERVER_LAYER = "server"
# Server issues that contradict CPG STU2 or only reflect what the server has not loaded: reported
# as information (still visible), not counted as errors. Keep this list explicit and small.
KNOWN_SERVER_LIMITS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Unknown code 'http://hl7\.org/fhir/expression-language#text/cql[-.]identifier'"),
        "Expression.language is an extensible binding; CPG STU2 conditions use text/cql-identifier",
    ),
    (
        re.compile(
            r"extension http://hl7\.org/fhir/StructureDefinition/cqf-(strengthOfRecommendation|"
            r"qualityOfEvidence) is not allowed to be used at this point"
        ),
        "R4 core limits where the extension may appear; CPG STU2 puts ratings on PlanDefinition.action",
    ),
    (
        re.compile(r"(Profile reference '|Failed to retrieve profile with url=)http://hl7\.org/fhir/uv/(cpg|crmi)/"),
        "the server has no CPG/CRMI implementation guide loaded, so it cannot check these profiles",
    ),
)
# HAPI puts "Line[1] Col[2]" in issue.location when it has no element path: not useful here.
_NO_PATH = re.compile(r"^Line\[\d+\] Col\[\d+\]$")
# $validate answers 200 with an OperationOutcome; some servers use 400/412/422 for invalid input.
_OUTCOME_STATUSES = (200, 400, 412, 422)
_SEVERITY = {"fatal": "error", "error": "error", "warning": "warning", "information": "information"}


def server_check(client: Client) -> Callable[[list[Item]], list[Finding]]:
    """Layer 8 as the callable `guideline.validation.run.validate(server_check=...)` runs."""
    return partial(server_findings, client=client)


def server_findings(items: list[Item], client: Client) -> list[Finding]:
    """POST each resource to {base}/{Type}/$validate; transport failures raise ServerUnreachableError."""
    out: list[Finding] = []
    meta = client.get_json("metadata")
    version = meta.get("fhirVersion") if isinstance(meta, dict) else None
    if not (isinstance(version, str) and version.startswith("4.0")):
        out.append(
            Finding(
                "error",
                client.base_url,
                "CapabilityStatement.fhirVersion",
                f"server speaks FHIR {version or 'unknown'}, not R4 (4.0.x); use an R4 server",
                SERVER_LAYER,
            )
        )
        return out
    for it in items:
        if not it.rtype:
            continue
        resp = client.request("POST", f"{it.rtype}/$validate", json_body=it.resource, ok=_OUTCOME_STATUSES)
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.prefix,
                    f"server $validate answered HTTP {resp.status_code} without an OperationOutcome; "
                    "check that the server supports $validate",
                    SERVER_LAYER,
                )
            )
            continue
        out.extend(outcome_findings(body, it))
    return out


def outcome_findings(outcome: dict[str, Any], it: Item) -> list[Finding]:
    """An OperationOutcome's issues as findings on `it`, element paths relocated to its prefix."""
    out = []
    for issue in outcome_issues(outcome):
        sev = _SEVERITY.get(str(issue.get("severity")), "error")
        text = issue_text(issue) or "no details"
        if sev == "information" and text.startswith("No issues detected"):
            continue
        where = issue.get("expression") or issue.get("location") or []
        loc = str(where[0]) if isinstance(where, list) and where else ""
        if loc.startswith(f"{it.rtype}.") and it.prefix != it.rtype:
            loc = it.prefix + loc[len(it.rtype) :]
        elif loc == it.rtype or _NO_PATH.match(loc):
            loc = it.prefix
        message = f"server: {text}"
        for pattern, reason in KNOWN_SERVER_LIMITS:
            if sev != "information" and pattern.search(text):
                sev, message = "information", f"{message} (not counted: {reason})"
                break
        out.append(Finding(sev, it.file, loc, message, SERVER_LAYER))
    return out
