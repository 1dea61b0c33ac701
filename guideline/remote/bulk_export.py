"""FHIR Bulk Data `$export` of only what the logic reads: kick-off, polling, resumable downloads, the manifest.

The export asks for the types of the libraries' data requirements and, where every retrieve of a type
filters by code, only the resources with those codes (`_typeFilter`). The folder it leaves is a Bulk Data
export folder that `recommend --population` and `population-spark` read (docs/population.md).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from guideline.core.errors import NotFoundError, ServerRejectedError, ServerUnreachableError, UsageError
from guideline.evaluation.pushdown import Reads
from guideline.remote.http import FHIR_JSON, Client, operation_outcome_text, parse_retry_after

NDJSON = "application/fhir+ndjson"
MANIFEST = "manifest.json"
# Where an unfinished export keeps its state and its downloads; the population readers look only at the
# files directly in the folder, so nothing half-done is ever read as the export.
WORK_DIR = ".export"
STATE = "state.json"

# Types whose `code` search parameter searches exactly `<Type>.code` (FHIR R4 search parameters), so a
# DataRequirement codeFilter on path `code` becomes `code=system|code,...` without losing anything the
# retrieve would match. Any other type or path is exported whole.
CODE_SEARCH_TYPES = frozenset(
    {
        "AllergyIntolerance",
        "Condition",
        "DiagnosticReport",
        "Medication",
        "Observation",
        "Procedure",
        "ServiceRequest",
    }
)
# Types outside the Patient compartment that the logic reaches by reference. A Group or Patient
# export cannot ask for them (HAPI refuses such a _type with HAPI-0512; the Bulk Data IG exports the
# compartment only), so they are fetched afterwards by the ids the exported resources name.
SHARED_TYPES = frozenset({"Medication", "Substance"})
_ID_CHUNK = 50  # ids per `_id=` search: keeps the URL well under common 8 KB limits
_ERRORS_SHOWN = 10  # export errors shown one by one; the rest are counted


@dataclass(frozen=True)
class ExportQuery:
    """What to ask the server for: `_type` and the `_typeFilter` queries (one per filtered type)."""

    types: tuple[str, ...]
    type_filters: tuple[str, ...]


def export_query(
    requirements: Iterable[Mapping[str, Any]], value_sets: Mapping[str, Mapping[str, Sequence[Mapping[str, str]]]]
) -> ExportQuery:
    """The `_type` and `_typeFilter` of an export from the libraries' DataRequirements.

    What a retrieve can return is decided once, by `pushdown.Reads` (the population readers' decision): a type
    is filtered only when every requirement on it filters `code` by codes the package can list. It becomes a
    `_typeFilter` only for the types whose `code` search parameter searches exactly `<Type>.code`
    (CODE_SEARCH_TYPES); any other type is exported whole. A value-set filter is sent as its expanded codes,
    never as `code:in=<url>`: `:in` works only where the server holds and can expand our ValueSets, which an
    EHR does not; the codes are what the local engine matches.
    """
    reads = Reads.of_requirements([dict(r) for r in requirements if r.get("type")], value_sets)
    filters = tuple(
        f"{t}?code=" + ",".join(f"{_escape(s)}|{_escape(c)}" for s, c in sorted(_pairs(cs)))
        for t, cs in sorted(reads.types.items())
        if cs and t in CODE_SEARCH_TYPES
    )
    return ExportQuery(types=tuple(sorted(reads.types)), type_filters=filters)


def _pairs(codes: Iterable[str]) -> set[tuple[str, str]]:
    """`system|code` strings as pairs (a system URI holds no `|`; a code may)."""
    return {(s, c) for s, _, c in (code.partition("|") for code in codes)}


def _export_gone(e: NotFoundError, what: str) -> NotFoundError:
    """A 404 on an export's status URL or file: the server's text, what is gone, and the one way out."""
    return NotFoundError(
        f"{e.message}; {what}: remove the --out folder and export again", status=e.status, outcome=e.outcome
    )


def _escape(value: str) -> str:
    """A token search value part with FHIR's search escapes (`\\`, `,`, `|`, `$`), so a code holding one stays one."""
    for ch in ("\\", ",", "|", "$"):
        value = value.replace(ch, "\\" + ch)
    return value


def package_requirements(resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every DataRequirement of the package's Libraries (each library's covers what it includes)."""
    reqs: dict[str, dict[str, Any]] = {}
    for r in resources:
        if r.get("resourceType") == "Library":
            for d in r.get("dataRequirement") or []:
                reqs[json.dumps(d, sort_keys=True)] = d
    return [reqs[k] for k in sorted(reqs)]


@dataclass(frozen=True)
class ExportRequest:
    """One export: at which level (system, a Group, some Patients), what, and since when."""

    query: ExportQuery
    group: str | None = None
    patients: tuple[str, ...] = ()
    since: str | None = None

    @property
    def level(self) -> str:
        """`system`, `group` or `patient`."""
        return "group" if self.group else "patient" if self.patients else "system"

    @property
    def types(self) -> tuple[str, ...]:
        """The `_type` list sent: at Group/Patient level without the types outside the compartment."""
        if self.level == "system":
            return self.query.types
        return tuple(t for t in self.query.types if t not in SHARED_TYPES)

    @property
    def later_types(self) -> tuple[str, ...]:
        """Types fetched after the export by the ids its resources reference (Group/Patient level)."""
        return tuple(t for t in self.query.types if t not in self.types)

    def describe(self) -> dict[str, Any]:
        """The request as stored in the resume state: a rerun must ask for exactly the same."""
        return {
            "level": self.level,
            "group": self.group,
            "patients": list(self.patients),
            "since": self.since,
            "types": list(self.query.types),
            "typeFilters": list(self.query.type_filters),
        }


# Reports progress; the CLI prints it on stderr, library code never prints.
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class PollPolicy:
    """How polling waits: the server's Retry-After up to `max_interval_s`, else backoff; at most `max_wait_s`."""

    max_wait_s: float = 3600.0
    # HAPI answers every poll with Retry-After: 120 whatever the job's size; a cap keeps a small export
    # from waiting two minutes for nothing, while a server asking for less is still honoured exactly.
    max_interval_s: float = 30.0
    first_interval_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def _prefer_async() -> dict[str, str]:
    return {"Prefer": "respond-async", "Accept": FHIR_JSON}


def kick_off(client: Client, request: ExportRequest) -> str:
    """Start the export; return the status URL (the kick-off's Content-Location).

    System and Group exports are GETs with the parameters in the query; a Patient export with ids is a
    POST of a Parameters resource (the Bulk Data IG passes `patient` only that way).
    """
    params: list[tuple[str, str]] = [("_outputFormat", NDJSON)]
    if request.types:
        params.append(("_type", ",".join(request.types)))
    params += [("_typeFilter", f) for f in request.query.type_filters if f.split("?", 1)[0] in request.types]
    if request.since:
        params.append(("_since", request.since))
    if request.level == "patient":
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": n, "valueString": v} for n, v in params if n != "_since"]
            + ([{"name": "_since", "valueInstant": request.since}] if request.since else [])
            + [{"name": "patient", "valueReference": {"reference": f"Patient/{p}"}} for p in request.patients],
        }
        resp = client.request("POST", "Patient/$export", json_body=body, ok=(202,), headers=_prefer_async())
    else:
        path = f"Group/{request.group}/$export" if request.group else "$export"
        resp = client.request("GET", path, params=params, ok=(202,), headers=_prefer_async())
    location = resp.headers.get("Content-Location")
    if not location:
        raise ServerRejectedError(
            f"{resp.url} accepted the export (HTTP 202) without a Content-Location status URL; "
            "the server does not follow the Bulk Data kick-off",
            status=resp.status_code,
        )
    return client.url(location)


def poll(client: Client, status_url: str, policy: PollPolicy, progress: Progress = _quiet) -> dict[str, Any]:
    """Poll the status URL until the export is complete; return its manifest.

    202 is "in progress" (its X-Progress shown); the wait is the server's Retry-After (up to
    `policy.max_interval_s`), else doubling from `policy.first_interval_s`. A 4xx, or a 5xx carrying an
    OperationOutcome, means the export failed: ServerRejectedError with the outcome's text. A 5xx without
    one is taken as transient and polled again. Still running after `policy.max_wait_s`:
    ServerUnreachableError (the state is kept; rerunning the command resumes polling the same job).
    """
    start = policy.clock()
    interval = policy.first_interval_s
    polls = 0
    while True:
        polls += 1
        try:
            resp = client.request("GET", status_url, ok=(200, 202, 500), headers={"Accept": FHIR_JSON})
        except NotFoundError as e:
            raise _export_gone(e, "the server no longer knows this export") from None
        if resp.status_code == 200:
            return _manifest_of(resp, status_url)
        if resp.status_code == 500:
            text = operation_outcome_text(_json_or_none(resp))
            if text:
                raise ServerRejectedError(f"the export failed ({status_url}, HTTP 500): {text}", status=500)
            note = "HTTP 500 without an OperationOutcome; polling again"
        else:
            note = resp.headers.get("X-Progress") or "in progress"
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        wait = min(policy.max_interval_s, retry_after if retry_after is not None else interval)
        interval = min(policy.max_interval_s, interval * 2)
        elapsed = policy.clock() - start
        if elapsed + wait > policy.max_wait_s:
            raise ServerUnreachableError(
                f"the export at {status_url} was not complete after {elapsed:.0f} s ({polls} polls; last: {note}); "
                "rerun the same command to keep waiting for it"
            )
        progress(f"export: {note} ({elapsed:.0f} s); next poll in {wait:.0f} s")
        policy.sleep(wait)


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _manifest_of(resp: requests.Response, status_url: str) -> dict[str, Any]:
    """The complete-status body, checked to be a Bulk Data manifest."""
    body = _json_or_none(resp)
    if not isinstance(body, dict) or not isinstance(body.get("output"), list) or "transactionTime" not in body:
        raise ServerRejectedError(
            f"{status_url} answered 200 without a Bulk Data manifest (an object with transactionTime and output)",
            status=200,
        )
    for i, item in enumerate(body["output"]):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item.get("type"):
            raise ServerRejectedError(f"{status_url}: manifest output[{i}] has no type and url", status=200)
    return body


@dataclass
class Downloaded:
    """One data file of the export, in the folder: its type, file name, resources (lines) and source URL."""

    type: str
    name: str
    count: int
    url: str


@dataclass
class ExportResult:
    """What an export left in its folder."""

    folder: Path
    files: list[Downloaded] = field(default_factory=list)
    transaction_time: str = ""
    resumed: bool = False

    def counts(self) -> dict[str, int]:
        """Resources per type, over every file."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.type] = out.get(f.type, 0) + f.count
        return out


def download(client: Client, manifest: Mapping[str, Any], work: Path, progress: Progress = _quiet) -> list[Downloaded]:
    """Download every `output` file of the manifest into `work` (resumable); check each `count`.

    Files are named `<Type>.<n>.ndjson` in manifest order. The access token is sent only when the
    manifest's `requiresAccessToken` is true. A file already complete in `work` is kept; a partial one
    (`.part`) is continued with a Range request, or fetched again if the server ignores the range.
    """
    send_token = manifest.get("requiresAccessToken") is True
    work.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    files: list[Downloaded] = []
    for i, item in enumerate(manifest["output"]):
        rtype = str(item["type"])
        seen[rtype] = seen.get(rtype, 0) + 1
        name = f"{rtype}.{seen[rtype]}.ndjson"
        done = work / name
        if not done.is_file():
            _fetch(client, item["url"], work / (name + ".part"), send_token, progress)
            (work / (name + ".part")).replace(done)
        lines = count_lines(done)
        expected = item.get("count")
        if isinstance(expected, int) and not isinstance(expected, bool) and expected != lines:
            done.unlink()  # a rerun fetches it again
            raise ServerRejectedError(
                f"manifest output[{i}] ({item['url']}) says {expected} resources, but the download has {lines}; "
                "rerun the same command to fetch it again"
            )
        progress(f"downloaded {name}: {lines} resources")
        files.append(Downloaded(rtype, name, lines, str(item["url"])))
    return files


def _fetch(client: Client, url: str, part: Path, send_token: bool, progress: Progress) -> None:
    """Stream one file into `part`, continuing what it holds; retried from where a cut-off left it."""
    attempts = client.retry.attempts
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.is_file() else 0
        # identity: a Range offset counts the bytes as stored here, which a compressed transfer would not.
        headers = {"Accept": NDJSON, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = client.request("GET", url, ok=(200, 206, 416), headers=headers, stream=True, send_token=send_token)
        except NotFoundError as e:
            # Servers delete export files after a while (HAPI: 2 hours); a late resume cannot get them back.
            raise _export_gone(e, "the server no longer has this export file") from None
        with resp:
            if resp.status_code == 416:
                # Nothing after what we have: the part is the whole file.
                return
            if have and resp.status_code == 200:
                progress(f"{part.name}: the server ignores Range; fetching it again from the start")
            mode = "ab" if resp.status_code == 206 else "wb"
            try:
                with part.open(mode) as f:
                    for chunk in resp.iter_content(chunk_size=1 << 20):
                        f.write(chunk)
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                if attempt == attempts:
                    raise ServerUnreachableError(
                        f"downloading {url} was cut off {attempts} times ({type(e).__name__}); "
                        f"{part.stat().st_size} bytes kept: rerun the same command to continue"
                    ) from None
                progress(f"{part.name}: cut off ({type(e).__name__}); continuing")


def count_lines(path: Path) -> int:
    """Non-blank lines (resources) of an NDJSON file, streamed."""
    n = 0
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                n += 1
    return n


def referenced_ids(work: Path, files: Sequence[Downloaded], rtype: str) -> list[str]:
    """Ids of `rtype` resources the downloaded resources reference (`"reference": "<rtype>/<id>"`, anywhere)."""
    ids: set[str] = set()
    for f in files:
        with (work / f.name).open("rb") as fh:
            for line in fh:
                if line.strip():
                    _collect_refs(json.loads(line), rtype, ids)
    return sorted(ids)


def _collect_refs(node: Any, rtype: str, ids: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            parts = urlsplit(ref).path.split("/")
            # relative `Medication/1`, absolute `…/Medication/1`, versioned `…/Medication/1/_history/2`
            for j in range(len(parts) - 1):
                if parts[j] == rtype and parts[j + 1]:
                    ids.add(parts[j + 1])
                    break
        for v in node.values():
            _collect_refs(v, rtype, ids)
    elif isinstance(node, list):
        for v in node:
            _collect_refs(v, rtype, ids)


def fetch_referenced(client: Client, rtype: str, ids: Sequence[str], dest: Path) -> int:
    """Search `rtype?_id=…` (in chunks, following `next` links) and write the matches as NDJSON; return the count."""
    n = 0
    tmp = dest.with_name(dest.name + ".part")
    with tmp.open("w", encoding="utf-8") as out:
        for k in range(0, len(ids), _ID_CHUNK):
            page: str | None = rtype
            params: dict[str, str] | None = {"_id": ",".join(ids[k : k + _ID_CHUNK]), "_count": "200"}
            while page:
                bundle = client.get_json(page, params=params)
                for e in bundle.get("entry") or []:
                    res = e.get("resource")
                    if isinstance(res, dict) and res.get("resourceType") == rtype:
                        out.write(json.dumps(res, separators=(",", ":")) + "\n")
                        n += 1
                page = next((lk.get("url") for lk in bundle.get("link") or [] if lk.get("relation") == "next"), None)
                params = None
    tmp.replace(dest)
    return n


def local_manifest(server_manifest: Mapping[str, Any], files: Sequence[Downloaded], status_url: str) -> dict[str, Any]:
    """The manifest written into the folder: the server's, each output's url the local file, with its count.

    The population readers find each file by the last segment of its url and check `count`; the
    server's url stays in the item's `extension` (the Bulk Data IG keeps that name for extensions).
    """
    out = {k: v for k, v in server_manifest.items() if k not in ("output", "error", "deleted")}
    out["output"] = [
        {"type": f.type, "url": f.name, "count": f.count, "extension": {"downloadedFrom": f.url}} for f in files
    ]
    out["error"] = list(server_manifest.get("error") or [])
    out.setdefault("extension", {})
    if isinstance(out["extension"], dict):
        out["extension"] = {**out["extension"], "statusUrl": status_url}
    return out


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding anything but an unfinished export (UsageError)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (new, empty, or an unfinished export to resume)")
    if out.is_dir() and not (out / WORK_DIR / STATE).is_file() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new or empty folder (an export is not overwritten)")


class ExportFolder:
    """The --out folder of an export: new, empty, or an unfinished export of the same request (resumed).

    Work happens in `<out>/.export/` (state, downloads); `finish` moves the files into the folder and
    writes the manifest last, so the folder is an export only once it is complete.
    """

    def __init__(self, out: Path, request: ExportRequest, server: str) -> None:
        self.out = out
        self.work = out / WORK_DIR
        self.state_path = self.work / STATE
        self.want = {"server": server, "request": request.describe()}
        self.state: dict[str, Any] = {}
        check_out(out)
        if self.state_path.is_file():
            try:
                self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.state = {}
            if {k: self.state.get(k) for k in self.want} != self.want:
                raise UsageError(
                    f"--out {out} holds an unfinished export of another request or server; "
                    "rerun it with the same flags, or choose a new folder"
                )

    @property
    def resumed(self) -> bool:
        """True when an earlier, unfinished run of the same export is continued."""
        return bool(self.state)

    def save(self, **values: Any) -> None:
        """Record progress (status URL, the server's manifest) so that a rerun resumes; atomic."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.state = {**self.want, **self.state, **values}
        _write_json(self.state_path, self.state)

    def finish(self, manifest: Mapping[str, Any], files: Sequence[Downloaded]) -> None:
        """Move the downloads into the folder, write the manifest (last), drop the work folder."""
        for f in files:
            (self.work / f.name).replace(self.out / f.name)
        _write_json(self.out / MANIFEST, manifest)
        shutil.rmtree(self.work)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_export(
    client: Client,
    request: ExportRequest,
    out: Path,
    *,
    policy: PollPolicy | None = None,
    progress: Progress = _quiet,
) -> ExportResult:
    """Kick off (or resume) the export, poll, download, check and leave the folder; see the module docstring."""
    folder = ExportFolder(out, request, client.base_url)
    policy = policy or PollPolicy()
    status_url = folder.state.get("statusUrl")
    if isinstance(status_url, str) and status_url:
        progress(f"resuming the export at {status_url}")
    else:
        status_url = kick_off(client, request)
        folder.save(statusUrl=status_url)
        progress(f"export started ({request.level} level); status: {status_url}")
    manifest = folder.state.get("manifest")
    if not isinstance(manifest, dict):
        manifest = poll(client, status_url, policy, progress)
        folder.save(manifest=manifest)
    _report_errors(client, manifest, progress)
    files = download(client, manifest, folder.work, progress)
    for rtype in request.later_types:
        ids = referenced_ids(folder.work, files, rtype)
        name = f"{rtype}.1.ndjson"
        n = fetch_referenced(client, rtype, ids, folder.work / name) if ids else 0
        if n:
            files.append(Downloaded(rtype, name, n, client.url(rtype)))
        progress(f"fetched {n} {rtype} resources the export references ({rtype} is outside the Patient compartment)")
    folder.finish(local_manifest(manifest, files, status_url), files)
    return ExportResult(out, files, str(manifest.get("transactionTime", "")), folder.resumed)


def _report_errors(client: Client, manifest: Mapping[str, Any], progress: Progress) -> int:
    """Show the text of the server's error files (OperationOutcomes about what it could not export); their count.

    They do not stop the export (the Bulk Data IG lists them beside a complete `output`), but a reader
    of the results has to know that some resources are missing.
    """
    send_token = manifest.get("requiresAccessToken") is True
    shown = 0
    for item in manifest.get("error") or []:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str):
            continue
        resp = client.request("GET", url, headers={"Accept": NDJSON}, send_token=send_token)
        for line in resp.content.splitlines():
            try:
                text = operation_outcome_text(json.loads(line)) if line.strip() else ""
            except ValueError:
                text = ""
            if text:
                shown += 1
                if shown <= _ERRORS_SHOWN:
                    progress(f"warning: the server could not export everything: {text}")
    if shown > _ERRORS_SHOWN:
        progress(f"warning: … and {shown - _ERRORS_SHOWN} more export errors (the manifest's `error` files)")
    return shown
