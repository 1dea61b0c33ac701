"""Check any server against our scenarios: publish, load the patients, $apply and CDS calls, compare, clean up.

One run: the package is published (or found unchanged; a server holding other content under our
url|version is reported, and the run goes on with what the server holds); each scenario's patient
is loaded under a run-specific id prefix with its dates rolled to today (the server evaluates on its
own clock, and CDS Hooks has no way to pass an evaluation time); then each channel is asked:
`$apply` of every recommendation PlanDefinition (which codes it proposes) and the CDS Hooks
`patient-view` call of each (which services answer with cards). A channel the server lacks
(not in its CapabilityStatement, 404, 501, no discovery document) is "not supported", never a
disagreement. What was loaded is deleted at the end in one transaction unless `keep`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import GuidelineError, ServerRejectedError
from guideline.core.fhir import is_informational, is_recommendation
from guideline.evaluation.community import Case
from guideline.remote.apply import apply_patient
from guideline.remote.capability import APPLY, missing_capabilities
from guideline.remote.cds import call, discover
from guideline.remote.http import Client
from guideline.remote.patients import as_transaction, days_until, roll_dates
from guideline.remote.publish import PublishResult, plan_publish, publish_resources

CHANNELS = ("apply", "cds")
AGREE, DISAGREE, NOT_SUPPORTED, ERROR = "agree", "DISAGREE", "not supported", "ERROR"
FHIR_ID_MAX = 64  # FHIR R4: an id is at most 64 characters
# HTTP answers that mean "this server has no such operation" rather than "it failed".
_UNSUPPORTED_STATUS = (404, 405, 501)


@dataclass
class Cell:
    """One scenario on one channel: the verdict, what was expected and what the server gave."""

    status: str
    expected: Any = None
    got: Any = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The cell as the JSON report writes it."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass
class CaseResult:
    """One scenario's cells, one per channel."""

    case: str
    patient: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Report:
    """The whole run: where, what was published, which channels the server has, every scenario's result."""

    server: str
    cds: str | None
    package: str
    prefix: str
    publish: dict[str, Any] = field(default_factory=dict)
    support: dict[str, str] = field(default_factory=dict)
    results: list[CaseResult] = field(default_factory=list)
    cleanup: str = ""

    def disagreements(self) -> list[tuple[str, str]]:
        """(case, channel) of every cell that is neither agreement nor "not supported"."""
        return [
            (r.case, ch) for r in self.results for ch, c in r.cells.items() if c.status not in (AGREE, NOT_SUPPORTED)
        ]

    def agreed(self) -> bool:
        """True when every supported cell agrees and at least one channel was supported."""
        supported = any(c.status != NOT_SUPPORTED for r in self.results for c in r.cells.values())
        return supported and not self.disagreements()

    def to_json(self) -> dict[str, Any]:
        """The `conformance --json` report."""
        counts: dict[str, dict[str, int]] = {ch: {} for ch in CHANNELS}
        for r in self.results:
            for ch, c in r.cells.items():
                counts[ch][c.status] = counts[ch].get(c.status, 0) + 1
        return {
            "server": self.server,
            "cds": self.cds,
            "package": self.package,
            "idPrefix": self.prefix,
            "publish": self.publish,
            "channels": self.support,
            "summary": counts,
            "agreement": self.agreed(),
            "disagreements": [{"case": c, "channel": ch} for c, ch in self.disagreements()],
            "cases": [
                {"case": r.case, "patient": r.patient, **{ch: c.to_json() for ch, c in r.cells.items()}}
                for r in self.results
            ],
            "cleanup": self.cleanup,
        }


def run_prefix() -> str:
    """A fresh id prefix for one run's patients (`cf-` + 6 hex digits + `-`), so runs never share data."""
    return f"cf-{secrets.token_hex(3)}-"


def prefixed_id(rid: str, prefix: str) -> str:
    """`rid` under the run's prefix; a digest of `rid` instead when that would pass FHIR's 64 characters."""
    if len(prefix + rid) <= FHIR_ID_MAX:
        return prefix + rid
    return prefix + hashlib.sha256(rid.encode("utf-8")).hexdigest()[:32]


def prefixed(bundle: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A copy of a patient bundle with every resource id, and every reference to one, carrying `prefix`."""
    keys = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if isinstance(e.get("resource"), dict) and e["resource"].get("id")
    }

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            out = {k: walk(x, k) for k, x in v.items()}
            if "resourceType" in out and out.get("id") and f"{out['resourceType']}/{out['id']}" in keys:
                out["id"] = prefixed_id(out["id"], prefix)
            return out
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if key == "reference" and isinstance(v, str) and v in keys:
            rtype, _, rid = v.partition("/")
            return f"{rtype}/{prefixed_id(rid, prefix)}"
        return v

    result: dict[str, Any] = walk(bundle)
    return result


def expected_codes(expected: dict[str, list[str]]) -> dict[str, list[str]]:
    """The expected recommendations, each with its sorted codes (the shape every channel is compared in)."""
    return {k: sorted(v) for k, v in expected.items()}


def fired_codes(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Recommendation id -> sorted distinct codes, from a `recommend`-shaped document."""
    return {r["id"]: sorted({c for a in r["activities"] for c in a["codes"]}) for r in doc["recommendations"]}


def unsupported(e: GuidelineError) -> bool:
    """True when an error means the server lacks the operation (404/405/501), not that it failed."""
    return isinstance(e, ServerRejectedError) and e.status in _UNSUPPORTED_STATUS


def publish_or_check(client: Client, pkg: Package) -> dict[str, Any]:
    """Publish the package; when the server holds other content under our url|version, write nothing and say which.

    A server whose artifacts differ from ours is exactly what a conformance run may be pointed at
    (a changed threshold published under the same version), so the run goes on with what it holds.
    """
    conflicts = [o for o in plan_publish(client, pkg.resources, force=False) if o.action == "conflict"]
    if conflicts:
        return {
            "status": "differs",
            "detail": f"{len(conflicts)} resource(s) on the server differ from this package under the same "
            "url|version; nothing was written and the server's own content was tested",
            "resources": [o.key for o in conflicts],
        }
    result: PublishResult = publish_resources(client, pkg.resources)
    return {"status": "published" if result.writes else "unchanged", "summary": result.counts()}


@dataclass
class Channels:
    """What the run talks to: the FHIR client, the CDS client (or None), the plans and CDS prefetch templates."""

    fhir: Client
    cds: Client | None
    plans: list[dict[str, Any]]
    templates: dict[str, dict[str, str]] | None
    token: str | None = None


def recommendation_plans(pkg: Package) -> list[dict[str, Any]]:
    """The package's recommendation PlanDefinitions (not pathways), in package order."""
    return [r for r in pkg.resources if is_recommendation(r)]


def channel_support(client: Client, cds: Client | None) -> tuple[dict[str, str], dict[str, dict[str, str]] | None]:
    """Which channels the servers offer ("supported" or why not), and the CDS services' prefetch templates."""
    support: dict[str, str] = {}
    _, missing = missing_capabilities(client, APPLY)
    support["apply"] = (
        "supported" if not missing else f"{NOT_SUPPORTED}: {', '.join(missing)} not in the CapabilityStatement"
    )
    templates = None
    if cds is None:
        support["cds"] = f"{NOT_SUPPORTED}: no CDS Hooks endpoint given"
        return support, None
    try:
        templates = {s["id"]: dict(s.get("prefetch") or {}) for s in discover(cds)}
        support["cds"] = "supported"
    except GuidelineError as e:
        support["cds"] = f"{NOT_SUPPORTED}: {e.message}"
    return support, templates


def _apply_cell(ch: Channels, pid: str, want: dict[str, list[str]]) -> Cell:
    try:
        got = fired_codes(apply_patient(ch.fhir, "", pid, ch.plans))
    except GuidelineError as e:
        return Cell(NOT_SUPPORTED if unsupported(e) else ERROR, want, None, e.message)
    return Cell(AGREE if got == want else DISAGREE, want, got)


def _cds_cell(ch: Channels, pid: str, want: dict[str, list[str]]) -> Cell:
    assert ch.cds is not None and ch.templates is not None  # noqa: S101 - only called when CDS is supported
    # A server may keep informational recommendations (R6) out of CDS Hooks (project safety rule 17: ours does
    # unless guideline.cds.informational-cards is on): one it does not list is not expected to give a card.
    offered = [p for p in ch.plans if p["id"] in ch.templates or not is_informational(p)]
    expected = sorted(k for k in want if k in {p["id"] for p in offered})
    fired = []
    for plan in offered:
        if plan["id"] not in ch.templates:
            return Cell(DISAGREE, expected, None, f"no CDS service '{plan['id']}' in the discovery document")
        try:
            resp = call(
                ch.cds,
                plan["id"],
                patient=pid,
                channel="both",
                data=ch.fhir,
                data_token=ch.token,
                templates=ch.templates[plan["id"]],
            )
        except GuidelineError as e:
            return Cell(NOT_SUPPORTED if unsupported(e) else ERROR, expected, None, e.message)
        if resp["cards"]:
            fired.append(plan["id"])
    return Cell(AGREE if sorted(fired) == expected else DISAGREE, expected, sorted(fired))


def run_case(ch: Channels, support: dict[str, str], case: Case, prefix: str, loaded: list[str]) -> CaseResult:
    """Load one scenario (prefixed, dates rolled to today) and ask each supported channel.

    Its resources are added to `loaded` before they are sent, so that a run stopped mid-load
    (Ctrl-C, a refused write) still deletes whatever reached the server.
    """
    days = days_until(case.at)
    bundle = prefixed(roll_dates(case.bundle, days, case.at), prefix)
    tx = as_transaction(bundle)
    loaded += [e["request"]["url"] for e in tx["entry"]]
    ch.fhir.post_json("", tx)
    pid = prefixed_id(case.patient, prefix)
    result = CaseResult(case.name, pid)
    want = expected_codes(case.recommendations)
    cells: dict[str, Callable[[Channels, str, dict[str, list[str]]], Cell]] = {"apply": _apply_cell, "cds": _cds_cell}
    for name in CHANNELS:
        if support[name] != "supported":
            result.cells[name] = Cell(NOT_SUPPORTED, detail=support[name])
        else:
            result.cells[name] = cells[name](ch, pid, want)
    return result


def delete_loaded(client: Client, keys: list[str]) -> str:
    """Delete what the run loaded, in one transaction; a sentence saying what happened."""
    if not keys:
        return "nothing loaded"
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": k}} for k in keys],
    }
    client.post_json("", tx)
    return f"deleted {len(keys)} resources"


def run_conformance(
    ch: Channels,
    pkg: Package,
    cases: list[Case],
    *,
    keep: bool = False,
    prefix: str | None = None,
    progress: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Run every case against the servers in `ch`; the Report.

    Errors that stop the whole run (server unreachable, a refused patient load) propagate after
    the cleanup of what was loaded so far.
    """
    prefix = prefix or run_prefix()
    report = Report(
        ch.fhir.base_url,
        ch.cds.base_url if ch.cds is not None else None,
        f"{pkg.config.package.id}#{pkg.config.package.version}",
        prefix,
    )
    report.publish = publish_or_check(ch.fhir, pkg)
    report.support, ch.templates = channel_support(ch.fhir, ch.cds)
    loaded: list[str] = []
    try:
        for case in cases:
            result = run_case(ch, report.support, case, prefix, loaded)
            report.results.append(result)
            if progress is not None:
                progress(result)
    finally:
        if keep:
            report.cleanup = f"kept {len(loaded)} resources (ids starting {prefix})"
        else:
            try:
                report.cleanup = delete_loaded(ch.fhir, loaded)
            except GuidelineError as e:  # never hides the error that stopped the run, if one did
                report.cleanup = f"cleanup FAILED ({e.message}); delete the resources whose ids start {prefix}"
    return report
