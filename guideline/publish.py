"""Publishes the package to a FHIR server: compare by url|version, then ONE transaction of writes."""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli_common
from .errors import ContentError, ServerRejectedError, VersionConflictError
from .http import Client

# Elements the server owns or rewrites; never part of "same content".
_SERVER_OWNED = ("meta",)


def strip_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
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
    key: str  # "Type/id"
    url: str | None
    version: str | None
    action: str  # created | updated | unchanged | conflict | forced
    detail: str = ""


@dataclass
class PublishResult:
    server: str
    dry_run: bool
    outcomes: list[ResourceOutcome] = field(default_factory=list)
    writes: int = 0
    requests: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.action] = out.get(o.action, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "dryRun": self.dry_run,
            "writes": self.writes,
            "summary": self.counts(),
            "resources": [o.__dict__ for o in self.outcomes],
        }


def check_server(client: Client) -> dict[str, Any]:
    """Read the CapabilityStatement once: FHIR 4.0.x with transactions, else a clear error."""
    cs: dict[str, Any] = client.get_json("metadata")
    version = str(cs.get("fhirVersion", ""))
    if not version.startswith("4.0"):
        raise ServerRejectedError(
            f"{client.base_url} is FHIR {version or 'unknown'}; this package needs FHIR "
            "R4 (4.0.x): point --server at an R4 endpoint"
        )
    interactions = {i.get("code") for r in cs.get("rest", []) for i in r.get("interaction", [])}
    if "transaction" not in interactions:
        raise ServerRejectedError(
            f"{client.base_url} does not support transaction Bundles; publishing needs them to be all-or-nothing"
        )
    return cs


def _lookup_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch that reads, for every resource, its id and its url|version on the server."""
    entries = []
    for r in resources:
        entries.append({"request": {"method": "GET", "url": f"{r['resourceType']}/{r['id']}"}})
        if r.get("url") and r.get("version"):
            entries.append(
                {
                    "request": {
                        "method": "GET",
                        "url": (f"{r['resourceType']}?url={_q(r['url'])}&version={_q(r['version'])}&_count=10"),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def plan_publish(client: Client, resources: list[dict[str, Any]], force: bool) -> list[ResourceOutcome]:
    """Decide per resource: created / updated / unchanged / conflict (or forced with --force)."""
    reply = client.post_json("", _lookup_bundle(resources))
    answers = iter(reply.get("entry", []))
    outcomes: list[ResourceOutcome] = []
    for r in resources:
        key = f"{r['resourceType']}/{r['id']}"
        by_id: dict[str, Any] = next(answers, {})
        status = str((by_id.get("response") or {}).get("status", ""))
        current = by_id.get("resource") if status.startswith("200") else None
        same_version: list[dict[str, Any]] = []
        if r.get("url") and r.get("version"):
            found: dict[str, Any] = next(answers, {})
            search = found.get("resource") or {}
            same_version = [e["resource"] for e in search.get("entry", []) if "resource" in e]
        match = next((s for s in same_version if s.get("id") == r["id"]), None) or (
            same_version[0] if same_version else None
        )
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
    """Compare with the server and write what changed in ONE transaction (all-or-nothing)."""
    check_server(client)
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
    """Resources to publish: a built bundle.json, or (default) a fresh validated in-memory build."""
    from .build import build_package
    from .validate import validate

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
        raise ContentError(f"{path} has validation errors; fix them before publishing", report.errors)
    bundle = json.loads(path.read_text(encoding="utf-8"))
    return [e["resource"] for e in bundle.get("entry", [])]


def define_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle",
        nargs="?",
        type=Path,
        default=None,
        help="a built dist/bundle.json (default: build and validate the sources now)",
    )
    cli_common.add_server_args(parser, required=True)
    parser.add_argument("--dry-run", action="store_true", help="compare only; write nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite resources whose url|version exists with different content",
    )
    cli_common.add_json_flag(parser)


def main(args: argparse.Namespace) -> int:
    resources = load_resources(args.bundle)
    with cli_common.client_from_args(args) as client:
        result = publish_resources(client, resources, dry_run=args.dry_run, force=args.force)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    width = max((len(o.key) for o in result.outcomes), default=10)
    for o in result.outcomes:
        print(f"{o.action:<9} {o.key:<{width}} {o.version or ''}  {o.detail}".rstrip())
    counts = result.counts()
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    verb = "would write" if result.dry_run else "wrote"
    n = sum(v for k, v in counts.items() if k in ("created", "updated", "forced"))
    print(
        f"{summary}; {verb} {n if result.dry_run else result.writes} resource(s) "
        f"{'(dry run)' if result.dry_run else 'in one transaction'} to {result.server}"
    )
    return 0
