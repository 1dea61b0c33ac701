"""Local evaluation of the pathway for one patient: which recommendations fire and what they propose."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli_common
from .build import Package, build_package
from .config import load_config
from .cql import Engine, shared_engine
from .errors import BadInputError, ContentError, ExitCode, Finding, UsageError

PLAN_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
# HAPI (clinical-reasoning) also accepts the older opioid spelling with a dot.
CQL_IDENTIFIER = frozenset({"text/cql-identifier", "text/cql.identifier"})
BUNDLE_TYPES = ("collection", "batch", "transaction")
# Requests that make something happen; a recommendation with none of these is informational.
ORDER_TYPES = frozenset({"ServiceRequest", "MedicationRequest", "NutritionOrder", "DeviceRequest"})

# Which package each engine already holds (keyed by the package's content hash), so a test
# session or a loop over patients sends the ~1 MB of ELM to the worker once.
_loaded: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- input


def load_patient_bundle(path: Path) -> tuple[dict[str, Any], str]:
    """Read a Bundle (collection, batch or transaction) holding exactly one Patient.

    Returns a collection Bundle of the entries' resources (what the engine loads as one
    patient's record) and the Patient's id. Every problem is a BadInputError naming the file.
    """
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{shown}: cannot read the patient bundle: {e.strerror or e}") from None
    try:
        # utf-8-sig: exports from Windows tools often start with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(
            f"{shown}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); FHIR JSON must be UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{shown}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise BadInputError(f"{shown}: JSON nested too deeply to be a FHIR Bundle") from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        found = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise BadInputError(
            f"{shown}: not a FHIR Bundle (resourceType is {found!r}); "
            "wrap the patient's resources in a Bundle of type collection"
        )
    btype = data.get("type")
    if btype not in BUNDLE_TYPES:
        raise BadInputError(f"{shown}: Bundle type {btype!r} is not supported; use one of {', '.join(BUNDLE_TYPES)}")
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise BadInputError(f"{shown}: Bundle.entry must be a list")
    resources: list[dict[str, Any]] = []
    patients: list[tuple[int, dict[str, Any], str | None]] = []
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if res is None and btype != "collection":
            continue  # e.g. a DELETE or GET in a batch carries no resource
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadInputError(f"{shown}: entry[{i}] has no resource with a resourceType")
        if res["resourceType"] == "Patient":
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            patients.append((i, res, full_url if isinstance(full_url, str) else None))
        resources.append(res)
    if not patients:
        raise BadInputError(f"{shown}: the Bundle holds no Patient; it must hold exactly one")
    if len(patients) > 1:
        where = ", ".join(f"entry[{i}] (id {p.get('id', '?')})" for i, p, _ in patients)
        raise BadInputError(
            f"{shown}: the Bundle holds {len(patients)} Patients ({where}); "
            "it must hold exactly one: split it into one Bundle per patient"
        )
    _, patient, full_url = patients[0]
    pid = patient.get("id")
    if not isinstance(pid, str) or not pid:
        # A transaction may identify the Patient only by fullUrl (urn:uuid:...); use its tail.
        tail = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1] if full_url else ""
        if not tail:
            raise BadInputError(f"{shown}: the Patient has no id (and no fullUrl); give it an id")
        patient = {**patient, "id": tail}
        resources = [patient if r.get("resourceType") == "Patient" else r for r in resources]
        pid = tail
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    return bundle, pid


def parse_at(value: str) -> str:
    """The evaluation time as ISO 8601 with an offset; a plain date means 00:00 UTC that day.

    The offset matters: it is the time zone CQL uses for Now(), Today() and ages.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return f"{day.isoformat()}T00:00:00Z"
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (2026-06-01) or a date-time with offset (2026-06-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no UTC offset; add one (e.g. 2026-06-01T12:00:00Z or +02:00) so ages and "
            "lookbacks do not depend on this machine's time zone"
        )
    return format_datetime(when)


def format_datetime(when: dt.datetime) -> str:
    spec = "microseconds" if when.microsecond else "seconds"
    out = when.isoformat(timespec=spec)
    return out[:-6] + "Z" if out.endswith("+00:00") else out


def now_utc() -> str:
    return format_datetime(dt.datetime.now(dt.UTC).replace(microsecond=0))


# The CQL parameter (GLCommon) that fixes the moment an evaluation is "as of". HAPI's engine always
# runs on the server clock, so `apply --at` can only pin the time through this parameter; the local
# engine sets it too (besides its clock) so that both engines take the same path through the CQL.
EVALUATION_TIME_PARAMETER = "Evaluation Time"


def time_parameters(at: str) -> dict[str, Any]:
    """The local engine's parameters for an evaluation as of `at` (ISO date-time with offset)."""
    return {EVALUATION_TIME_PARAMETER: {"type": "DateTime", "value": at}}


# ---------------------------------------------------------------- evaluation


@dataclass
class Activity:
    resource_type: str
    codes: list[str]
    definition: str  # ActivityDefinition id

    def as_json(self) -> dict[str, Any]:
        return {"resourceType": self.resource_type, "codes": self.codes}


@dataclass
class Recommendation:
    id: str
    title: str
    source: str
    detail: str
    activities: list[Activity] = field(default_factory=list)

    @property
    def informational(self) -> bool:
        return not any(a.resource_type in ORDER_TYPES for a in self.activities)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "informational": self.informational,
            "source": self.source,
            "activities": [a.as_json() for a in self.activities],
        }


def _content_error(resource: dict[str, Any], location: str, message: str) -> ContentError:
    key = f"{resource.get('resourceType')}/{resource.get('id')}"
    return ContentError(f"{key}: {message}", [Finding("error", key, location, message, "recommend")])


def _codings(concept: Any) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        f"{c['system']}|{c['code']}"
        for c in concept.get("coding", [])
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    ]


def activity_codes(ad: dict[str, Any]) -> list[str]:
    """The clinical codes HAPI's $apply puts on the request it generates from this definition."""
    kind = ad.get("kind")
    if kind == "MedicationRequest":
        return _codings(ad.get("productCodeableConcept"))  # becomes medicationCodeableConcept
    if kind == "CommunicationRequest":
        return []  # R4 CommunicationRequest has no code; $apply turns code.text into the payload
    return _codings(ad.get("code"))


# Library name -> that library's define values for the one patient being walked.
LibraryResults = Callable[[str], dict[str, Any]]


class _Evaluator:
    """Walks the pathway for one patient, asking `fetch` for each library's results once."""

    def __init__(self, pkg: Package, fetch: LibraryResults) -> None:
        self.pkg = pkg
        self.fetch = fetch
        self.results: dict[str, dict[str, Any]] = {}

    def library_results(self, plan: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        libs = plan.get("library") or []
        if len(libs) != 1 or not isinstance(libs[0], str):
            raise _content_error(plan, "library", "needs exactly one primary library to evaluate its conditions")
        lib = self.pkg.resolve(libs[0])
        if lib is None:
            raise _content_error(plan, "library[0]", f"library {libs[0]} is not in the package")
        name = lib.get("name")
        if not isinstance(name, str) or name not in self.pkg.elm:
            raise _content_error(lib, "name", f"no compiled CQL library named {name!r} (name must equal the CQL name)")
        if name not in self.results:
            self.results[name] = self.fetch(name)
        return name, self.results[name]

    def conditions_met(self, plan: dict[str, Any], action: dict[str, Any], path: str) -> bool:
        conditions = [c for c in action.get("condition", []) if c.get("kind") == "applicability"]
        if not conditions:
            return True
        name, values = self.library_results(plan)
        for i, c in enumerate(conditions):
            expr = c.get("expression") or {}
            if expr.get("language") not in CQL_IDENTIFIER:
                raise _content_error(
                    plan,
                    f"{path}.condition[{i}].expression.language",
                    f"language {expr.get('language')!r} is not evaluated locally; use text/cql-identifier",
                )
            ident = expr.get("expression")
            if ident not in values:
                raise _content_error(
                    plan,
                    f"{path}.condition[{i}].expression.expression",
                    f"no define {ident!r} in library {name}",
                )
            # As in HAPI: only a true Boolean meets a condition; null or anything else does not.
            if values[ident] is not True:
                return False
        return True

    def dynamic_text(self, plan: dict[str, Any], action: dict[str, Any], target: str) -> str | None:
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            if dv.get("path") == target and expr.get("language") in CQL_IDENTIFIER:
                _, values = self.library_results(plan)
                value = values.get(str(expr.get("expression")))
                if isinstance(value, str):
                    return value
        return None

    def activities(self, plan: dict[str, Any], action: dict[str, Any], path: str) -> list[Activity]:
        """Activities of an applicable action and of its applicable sub-actions, in order."""
        out: list[Activity] = []
        ref = action.get("definitionCanonical")
        if isinstance(ref, str):
            ad = self.pkg.resolve(ref)
            if ad is None or ad.get("resourceType") != "ActivityDefinition":
                raise _content_error(
                    plan, f"{path}.definitionCanonical", f"{ref} is not an ActivityDefinition in the package"
                )
            out.append(Activity(str(ad.get("kind")), sorted(activity_codes(ad)), str(ad.get("id"))))
        for i, sub in enumerate(action.get("action", [])):
            if self.conditions_met(plan, sub, f"{path}.action[{i}]"):
                out.extend(self.activities(plan, sub, f"{path}.action[{i}]"))
        return out

    def recommendation(self, plan: dict[str, Any]) -> Recommendation | None:
        fired: Recommendation | None = None
        for i, action in enumerate(plan.get("action", [])):
            path = f"action[{i}]"
            if not self.conditions_met(plan, action, path):
                continue
            docs = action.get("documentation") or []
            source = docs[0].get("citation", "") if docs and isinstance(docs[0], dict) else ""
            detail = self.dynamic_text(plan, action, "action.description") or action.get("description", "")
            if fired is None:
                fired = Recommendation(
                    str(plan["id"]),
                    str(action.get("title") or plan.get("title", "")),
                    str(source),
                    str(detail),
                )
            fired.activities.extend(self.activities(plan, action, path))
        return fired

    def walk(self, plan: dict[str, Any], actions: list[dict[str, Any]], path: str, out: list[Recommendation]) -> None:
        """Follow a pathway's actions to the recommendation PlanDefinitions they reach."""
        for i, action in enumerate(actions):
            here = f"{path}[{i}]"
            if not self.conditions_met(plan, action, here):
                continue
            ref = action.get("definitionCanonical")
            target = self.pkg.resolve(ref) if isinstance(ref, str) else None
            if isinstance(ref, str) and target is None:
                raise _content_error(plan, f"{here}.definitionCanonical", f"{ref} is not in the package")
            if target is not None and target.get("resourceType") == "PlanDefinition":
                if _is_pathway(target):
                    self.walk(target, target.get("action", []), "action", out)
                else:
                    rec = self.recommendation(target)
                    if rec is not None:
                        out.append(rec)
            self.walk(plan, action.get("action", []), f"{here}.action", out)


def _is_pathway(plan: dict[str, Any]) -> bool:
    codes = {c.get("code") for c in (plan.get("type") or {}).get("coding", []) if c.get("system") == PLAN_TYPE_SYSTEM}
    return "clinical-protocol" in codes


def pathways(pkg: Package) -> list[dict[str, Any]]:
    found = [r for r in pkg.resources if r.get("resourceType") == "PlanDefinition" and _is_pathway(r)]
    if not found:
        raise ContentError(
            "the package has no pathway (PlanDefinition of type clinical-protocol)",
            [
                Finding(
                    "error",
                    "fhir_resources/plandefinition",
                    "",
                    "add the pathway PlanDefinition (type clinical-protocol)",
                    "recommend",
                )
            ],
        )
    return sorted(found, key=lambda r: str(r.get("id")))


def ensure_loaded(pkg: Package, engine: Engine) -> None:
    keys = _loaded.setdefault(engine, set())
    if pkg.key not in keys:
        engine.load(pkg.key, pkg.elm, pkg.value_sets)
        keys.add(pkg.key)


def walk_pathways(pkg: Package, fetch: LibraryResults) -> list[Recommendation]:
    """The recommendations that fire, in pathway order, given each library's results from `fetch`.

    `fetch` is called at most once per library, and only for libraries the walk reaches; it may
    raise to stop the walk (population mode does, to batch the evaluation of many patients).
    """
    ev = _Evaluator(pkg, fetch)
    out: list[Recommendation] = []
    for pathway in pathways(pkg):
        ev.walk(pathway, pathway.get("action", []), "action", out)
    # A recommendation reached twice (two pathways) is reported once.
    unique: dict[str, Recommendation] = {}
    for r in out:
        unique.setdefault(r.id, r)
    return list(unique.values())


def evaluate(pkg: Package, bundle: dict[str, Any], at: str, engine: Engine) -> list[Recommendation]:
    """The recommendations that fire for the one patient in `bundle` at `at`, in pathway order."""
    ensure_loaded(pkg, engine)
    key = pkg.key

    def fetch(library: str) -> dict[str, Any]:
        by_patient = engine.evaluate(key, library, [bundle], at, time_parameters(at))
        # One patient per bundle, so exactly one row.
        return next(iter(by_patient.values()), {})

    return walk_pathways(pkg, fetch)


def patient_id(bundle: dict[str, Any]) -> str:
    patients = [
        e["resource"]
        for e in bundle.get("entry", [])
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1 or not isinstance(patients[0].get("id"), str):
        raise BadInputError(f"the bundle must hold exactly one Patient with an id (found {len(patients)} Patients)")
    pid: str = patients[0]["id"]
    return pid


def document(pid: str, at: str, recs: list[Recommendation]) -> dict[str, Any]:
    return {"patient": pid, "evaluatedAt": at, "recommendations": [r.as_json() for r in recs]}


def recommend(pkg: Package, bundle: dict[str, Any], at: str, engine: Engine) -> dict[str, Any]:
    """The `guideline recommend --json` document for the one Patient in `bundle` at `at`."""
    pid = patient_id(bundle)
    return document(pid, at, evaluate(pkg, bundle, at, engine))


# ---------------------------------------------------------------- CLI


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return n


def define_parser(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--patient-bundle",
        type=Path,
        metavar="FILE",
        help="FHIR Bundle (collection, batch or transaction) with exactly one Patient",
    )
    what.add_argument(
        "--population",
        type=Path,
        metavar="PATH",
        help="many patients: a directory of patient Bundles (*.json, in file-name order) or an NDJSON file of "
        "resources grouped by patient; writes one `--json` document per line",
    )
    pop = parser.add_argument_group("population mode")
    pop.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"CQL worker processes (default: the number of CPUs, here {os.cpu_count() or 1})",
    )
    pop.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="results file, written atomically (default: stdout)"
    )
    pop.add_argument(
        "--keep-going",
        action="store_true",
        help="exit 0 even if bad records were skipped (they are still reported)",
    )
    parser.add_argument(
        "--at",
        type=parse_at,
        default=None,
        metavar="DATETIME",
        help="evaluation time, ISO 8601 with offset (2026-06-01T12:00:00Z) or a date (= 00:00 UTC); default: now",
    )
    cli_common.add_json_flag(parser)


def _render_text(doc: dict[str, Any], recs: list[Recommendation]) -> str:
    lines = [
        f"Patient {doc['patient']} at {doc['evaluatedAt']}: {len(recs)} recommendation{'s' if len(recs) != 1 else ''}"
    ]
    for r in recs:
        kind = " [informational]" if r.informational else ""
        lines += ["", f"[{r.id}] {r.title}{kind}", f"  {r.detail}"]
        for a in r.activities:
            lines.append(f"  -> {a.resource_type} {a.definition}: {', '.join(a.codes) or '(no code)'}")
        lines.append(f'  Source: "{r.source}"')
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    if args.population is not None:
        return population_main(args)
    extra = [flag for flag, value in (("--workers", args.workers), ("--out", args.out)) if value is not None]
    extra += ["--keep-going"] if args.keep_going else []
    if extra:
        raise UsageError(f"{', '.join(extra)} only apply with --population")
    bundle, pid = load_patient_bundle(args.patient_bundle)  # bad input fails before the slow build
    at = args.at or now_utc()
    pkg = build_package(load_config())
    recs = evaluate(pkg, bundle, at, shared_engine())
    doc = document(pid, at, recs)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_render_text(doc, recs))
    return 0


def population_main(args: argparse.Namespace) -> int:
    """`recommend --population`: results to --out (or stdout), reports and progress to stderr."""
    import resource
    import time

    from . import population as popmod

    population = popmod.open_population(args.population)  # bad input fails before the slow start
    at = args.at or now_utc()
    workers = args.workers or os.cpu_count() or 1
    summary = popmod.Summary()
    err = sys.stderr
    tty = err.isatty()
    start = time.monotonic()
    last_draw = 0.0
    with popmod.EnginePool(workers) as pool:
        # The first worker compiles the package, so no extra process is started for the build.
        pkg = build_package(load_config(), pool.engines[0])
        ready = time.monotonic()
        with popmod.atomic_output(args.out) if args.out else contextlib.nullcontext(sys.stdout) as out:
            for result in popmod.evaluate_population(pkg, population.records(), at, pool):
                summary.add(result)
                if result.document is None:
                    if tty:
                        err.write("\r\x1b[K")
                    err.write(f"skipped: {result.record.where}: {result.error}\n")
                else:
                    out.write(popmod.result_line(result))
                now = time.monotonic()
                if tty and now - last_draw >= 0.2:
                    last_draw = now
                    line = popmod.progress_line(
                        summary.records, result.record.progress, population.total, population.unit, now - ready
                    )
                    err.write("\r\x1b[K" + line)
                    err.flush()
        if tty:
            err.write("\r\x1b[K")
        worker_peaks = [st["maxRssKiB"] // 1024 for st in pool.stats()]
    elapsed = time.monotonic() - ready
    rate = summary.evaluated / elapsed if elapsed > 0 else 0.0
    err.write(
        f"population: {summary.records:,} records from {args.population}: {summary.evaluated:,} evaluated, "
        f"{summary.skipped:,} skipped; {elapsed:.1f} s evaluating ({rate:,.0f} patients/s, {workers} workers) "
        f"after {ready - start:.1f} s start-up\n"
    )
    # ru_maxrss is in KiB on Linux.
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    err.write(f"memory: peak RSS {own_peak} MiB (this process), {'/'.join(map(str, worker_peaks))} MiB (workers)\n")
    if summary.fired:
        fired = "; ".join(f"{k} {v:,}" for k, v in sorted(summary.fired.items()))
        err.write(f"fired: {fired}\n")
    if summary.skipped and not args.keep_going:
        err.write(f"error: {summary.skipped:,} bad record(s) skipped (listed above); fix them or pass --keep-going\n")
        return ExitCode.BAD_INPUT
    return 0
