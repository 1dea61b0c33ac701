"""Publishes the package to a FHIR server: compare by url|version, then ONE transaction of writes."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from guideline.content.package import build_package
from guideline.core.errors import ContentError, ServerRejectedError, VersionConflictError
from guideline.core.fhir import issue_text, outcome_issues
from guideline.remote.capability import PUBLISH, check_server
from guideline.remote.http import Client
from guideline.validation.loading import load_subject
from guideline.validation.run import validate

# Elements the server owns or rewrites; never part of "same content".
_SERVER_OWNED = ("meta",)


def strip_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy without the elements the server owns (meta: versionId, lastUpdated, tags)."""
    return {k: v for k, v in resource.items() if k not in _SERVER_OWNED}


def same_content(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Equal as FHIR JSON, ignoring meta and key order (servers re-order elements)."""
    return bool(_canon(strip_server_fields(ours)) == _canon(strip_server_fields(theirs)))


def _canon(v: Any) -> Any:
    # Servers may write 25 as 25.0 or drop trailing zeros; compare numbers by value.
    if isinstance(v, dict):
        # Servers re-serialise narrative XHTML with their own entity choices (HAPI writes " as
        # &quot; and ' as-is): compare the text the div means, not its escaping.
        return {k: html.unescape(x) if k == "div" and isinstance(x, str) else _canon(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canon(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    return v


@dataclass
class ResourceOutcome:
    """What publishing does (or would do) with one resource, and why."""

    key: str  # "Type/id"
    url: str | None
    version: str | None
    action: str  # created | updated | unchanged | conflict | forced
    detail: str = ""


@dataclass
class PublishResult:
    """The outcome of one publish: each resource's outcome, the writes made and the requests sent."""

    server: str
    dry_run: bool
    outcomes: list[ResourceOutcome] = field(default_factory=list)
    writes: int = 0
    requests: int = 0

    def counts(self) -> dict[str, int]:
        """How many resources got each action (created, updated, unchanged, conflict, forced)."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.action] = out.get(o.action, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The `publish --json` report."""
        return {
            "server": self.server,
            "dryRun": self.dry_run,
            "writes": self.writes,
            "summary": self.counts(),
            "resources": [o.__dict__ for o in self.outcomes],
        }


# Page size asked for in lookups; pages beyond it are followed, so it only sets the round trips.
_LOOKUP_COUNT = 500


def _search_value(s: str) -> str:
    """A search value with FHIR's escapes (backslash, comma, dollar sign), then percent-encoded."""
    return quote(s.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$"), safe="")


def _url_searches(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(type, query) searches returning the content the server holds for every url|version.

    One search per type and package version (`url=a,b,...&version=v`), so each resource's
    content, the large Libraries included (FHIRHelpers' ELM alone is 0.9 MB), is read once.
    """
    urls: dict[tuple[str, str], list[str]] = {}
    for r in resources:
        if r.get("url") and r.get("version"):
            same = urls.setdefault((r["resourceType"], r["version"]), [])
            if r["url"] not in same:
                same.append(r["url"])
    return [
        (rtype, f"url={','.join(_search_value(u) for u in same)}&version={_search_value(version)}")
        for (rtype, version), same in urls.items()
    ]


def _id_searches(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(type, query) searches telling which ids exist (and at which version), without content."""
    ids: dict[str, list[str]] = {}
    for r in resources:
        ids.setdefault(r["resourceType"], []).append(r["id"])
    return [
        (rtype, f"_id={','.join(_search_value(i) for i in same)}&_elements=id,url,version")
        for rtype, same in ids.items()
    ]


def _run_searches(client: Client, searches: list[tuple[str, str]], what: str) -> list[dict[str, Any]]:
    """Every resource the searches find, sent as ONE batch (pages beyond the first followed)."""
    if not searches:
        return []
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"{rtype}?{query}&_count={_LOOKUP_COUNT}"}}
            for rtype, query in searches
        ],
    }
    answers = client.post_json("", batch).get("entry", [])
    if len(answers) != len(searches):
        raise ServerRejectedError(
            f"the server answered a batch of {len(searches)} searches with {len(answers)} entries; it does not "
            "follow the FHIR batch rules"
        )
    out: list[dict[str, Any]] = []
    for (rtype, _), entry in zip(searches, answers, strict=True):
        # only matches: an _include or OperationOutcome entry is not one
        out += [
            f for f in _search_results(client, entry, f"{rtype} resources by {what}") if f.get("resourceType") == rtype
        ]
    return out


def _search_results(client: Client, entry: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The resources a batch search entry found, following next links; a failed search is an error."""
    status = str((entry.get("response") or {}).get("status", ""))
    page = entry.get("resource") or {}
    if not status.startswith("200") or page.get("resourceType") != "Bundle":
        outcome = (entry.get("response") or {}).get("outcome") or page
        text = "; ".join(t for t in map(issue_text, outcome_issues(outcome)) if t)
        code = status.split(" ", 1)[0]
        raise ServerRejectedError(
            f"the server could not look up {what} (HTTP {status or '?'}): {text or 'no detail'}",
            status=int(code) if code.isdigit() else None,
            outcome=outcome if outcome.get("resourceType") == "OperationOutcome" else None,
        )
    found: list[dict[str, Any]] = []
    while True:
        found += [e["resource"] for e in page.get("entry", []) if isinstance(e.get("resource"), dict)]
        nxt = next((link.get("url") for link in page.get("link", []) if link.get("relation") == "next"), None)
        if not nxt:
            return found
        if not client.same_origin(str(nxt)):
            # The session sends the bearer token with every request: never to a host the server names.
            raise ServerRejectedError(
                f"the server's next-page link for {what} points to another origin ({nxt}); not followed. "
                "Check the server's base URL settings (e.g. behind a proxy) or use the URL it advertises"
            )
        page = client.get_json(str(nxt))


def plan_publish(client: Client, resources: list[dict[str, Any]], force: bool) -> list[ResourceOutcome]:
    """Decide per resource: created / updated / unchanged / conflict (or forced with --force).

    First one batch reads what the server holds at each url|version (all a no-op needs); only
    resources without a same-version match are then looked up by id (created or updated).
    """
    by_url: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for found in _run_searches(client, _url_searches(resources), "url|version"):
        by_url.setdefault((found["resourceType"], str(found.get("url")), str(found.get("version"))), []).append(found)

    def same_version(r: dict[str, Any]) -> list[dict[str, Any]]:
        if not (r.get("url") and r.get("version")):
            return []
        return by_url.get((r["resourceType"], r["url"], r["version"]), [])

    unmatched = [r for r in resources if not same_version(r)]
    by_id = {f"{f['resourceType']}/{f.get('id')}": f for f in _run_searches(client, _id_searches(unmatched), "id")}
    outcomes: list[ResourceOutcome] = []
    for r in resources:
        key = f"{r['resourceType']}/{r['id']}"
        current = by_id.get(key)
        matches = same_version(r)
        match = next((s for s in matches if s.get("id") == r["id"]), None) or (matches[0] if matches else None)
        if match is not None:
            if same_content(r, match):
                action, detail = "unchanged", ""
            elif match.get("id") != r["id"]:
                action = "forced" if force else "conflict"
                detail = f"the server holds {r.get('url')}|{r.get('version')} as {r['resourceType']}/{match.get('id')}"
            else:
                action = "forced" if force else "conflict"
                detail = "same url|version with different content; a released version is immutable: bump the version"
        elif current is not None:
            action = "updated"
            detail = f"replaces version {current.get('version', '?')} at the same id"
        else:
            action = "created"
            detail = ""
        outcomes.append(ResourceOutcome(key, r.get("url"), r.get("version"), action, detail))
    return outcomes


def publish_resources(
    client: Client, resources: list[dict[str, Any]], *, dry_run: bool = False, force: bool = False
) -> PublishResult:
    """Compare with the server and write what changed in ONE transaction (all-or-nothing).

    Checks the server first (FHIR R4 with transactions); a no-op publish is that check and one
    lookup batch. Conflicts (same url|version, other content) raise VersionConflictError unless `force`.
    """
    check_server(client, PUBLISH)
    before = client.requests_sent
    outcomes = plan_publish(client, resources, force)
    conflicts = [o for o in outcomes if o.action == "conflict"]
    result = PublishResult(client.base_url, dry_run, outcomes)
    if conflicts:
        raise VersionConflictError(
            f"{len(conflicts)} resource(s) already exist on the server at the same url|version with different "
            "content; bump the package version in guideline.toml (or pass --force to overwrite)",
            [f"{o.key} ({o.url}|{o.version}): {o.detail}" for o in conflicts],
        )
    todo = {o.key for o in outcomes if o.action in ("created", "updated", "forced")}
    if todo and not dry_run:
        tx = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                for r in resources
                if f"{r['resourceType']}/{r['id']}" in todo
            ],
        }
        reply = client.post_json("", tx)
        if reply.get("type") != "transaction-response":
            raise ServerRejectedError(
                f"{client.base_url} answered the transaction with a "
                f"{reply.get('resourceType')}/{reply.get('type')}, not a transaction-response"
            )
        result.writes = len(tx["entry"])
    result.requests = client.requests_sent - before
    return result


def load_resources(path: Path | None) -> list[dict[str, Any]]:
    """Resources to publish: what `validate PATH` accepts (dist/, a bundle .json, a package .tgz, a
    project folder), or (default) a fresh validated in-memory build.

    Reads PATH with validation's own reader, so publish refuses exactly what validate refuses:
    UsageError (exit 2) for a missing or unusable path, ContentError (exit 1) for validation errors
    or nothing to publish. Nothing here touches a server.
    """
    if path is None:
        report = validate()
        if report.errors:
            raise ContentError(
                "the package has validation errors; fix them before publishing (run `guideline validate`)",
                report.errors,
            )
        return build_package().resources
    report = validate(path)
    if report.errors:
        raise ContentError(
            f"{path}: not published: it has validation errors ({len(report.errors)}, listed below); fix them "
            f"(`guideline validate {path}` shows them all)",
            report.errors,
        )
    # Loading again (a second compile of the carried CQL, warm: well under validate's time) keeps
    # validate() the one verdict. A package's ImplementationGuide describes the package, not an
    # artifact the server runs: a package publishes the same resources as its bundle.
    resources = [it.resource for it in load_subject(path).subject.items if it.rtype != "ImplementationGuide"]
    if not resources:
        raise ContentError(f"{path}: holds no FHIR resources to publish; give the dist/ folder of a build", [])
    return resources
