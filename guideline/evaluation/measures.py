"""Indicator Measures over a population: each patient's population membership, tallied into summary MeasureReports.

The package's Measures (`fhir_resources/measure/`) name, per group, the CQL defines of their library that
decide the initial population, denominator and numerator, and the defines that stratify. Each patient is
evaluated once for every Measure library (on the engine `recommend --population` uses), with the
"Measurement Period" parameter and GLCommon's "Evaluation Time" at its end, and counted as HAPI's
`Measure/$evaluate-measure` counts a patient-based proportion: a denominator member must be in the initial
population, a numerator member in the denominator. The same tally is rebuilt from a server's MeasureReport
(`from_report`), so both paths write reports of one shape and can be compared count for count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import BadInputError, ContentError, UsageError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER
from guideline.evaluation.population import BATCH_BYTES, BATCH_RECORDS, Pool, record_batches, run_in_order
from guideline.evaluation.records import PatientRecord

MEASURE_POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
MEASUREMENT_PERIOD_PARAMETER = "Measurement Period"
# The population codes a proportion reports, in report order (FHIR R4 measure-population).
PROPORTION_POPULATIONS = ("initial-population", "denominator", "numerator")
_DISPLAY = {"initial-population": "Initial Population", "denominator": "Denominator", "numerator": "Numerator"}
# A measure score as HAPI writes it: a decimal; the tests compare these to this many places.
SCORE_PLACES = 6


@dataclass(frozen=True)
class Period:
    """A measurement period of whole days, both ends included (`--period START/END`)."""

    start: dt.date
    end: dt.date

    @property
    def start_time(self) -> str:
        """The period's first instant (UTC), as the CQL parameter's low end."""
        return f"{self.start.isoformat()}T00:00:00Z"

    @property
    def end_time(self) -> str:
        """The period's last second (UTC): the high end, and the evaluation time GLCommon's windows end at."""
        return f"{self.end.isoformat()}T23:59:59Z"

    def parameters(self) -> dict[str, Any]:
        """The CQL parameters of an evaluation over this period, typed as the engines take them."""
        return {
            MEASUREMENT_PERIOD_PARAMETER: {
                "type": "Interval",
                "low": {"type": "DateTime", "value": self.start_time},
                "high": {"type": "DateTime", "value": self.end_time},
                "lowClosed": True,
                "highClosed": True,
            },
            EVALUATION_TIME_PARAMETER: {"type": "DateTime", "value": self.end_time},
        }

    def fhir(self) -> dict[str, str]:
        """MeasureReport.period (dates: the report says which days, not which engine instant)."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_period(text: str) -> Period:
    """`START/END` (ISO dates, END not before START) as a Period; a UsageError saying the form otherwise."""
    form = "START/END as ISO dates, e.g. 2026-01-01/2026-12-31"
    start_s, sep, end_s = text.partition("/")
    if not sep:
        raise UsageError(f"--period '{text}': expected {form}")
    try:
        start, end = dt.date.fromisoformat(start_s.strip()), dt.date.fromisoformat(end_s.strip())
    except ValueError:
        raise UsageError(f"--period '{text}': expected {form}") from None
    if end < start:
        raise UsageError(f"--period '{text}': the end {end} is before the start {start}")
    return Period(start, end)


@dataclass(frozen=True)
class Stratifier:
    """One stratifier of a Measure group: its id, its code's text and the CQL define giving each patient's value."""

    id: str
    text: str
    expression: str


@dataclass(frozen=True)
class MeasureDef:
    """What evaluating one (single-group, proportion) Measure needs from the package."""

    id: str
    url: str  # versioned canonical, as MeasureReport.measure names it
    library: str  # the CQL library name
    group_id: str
    populations: dict[str, str]  # population code -> CQL define
    stratifiers: tuple[Stratifier, ...]
    resource: dict[str, Any] = field(repr=False, compare=False)

    @property
    def expressions(self) -> list[str]:
        """Every define a patient is evaluated for: populations, then stratifiers."""
        return [*self.populations.values(), *(s.expression for s in self.stratifiers)]


def _expression(node: dict[str, Any], where: str) -> str:
    crit = node.get("criteria") or {}
    expr = crit.get("expression")
    if crit.get("language") != "text/cql-identifier" or not isinstance(expr, str) or not expr:
        raise ContentError(f"{where}: criteria must be a text/cql-identifier expression naming a CQL define", [])
    return expr


def _stratifier_expression(node: dict[str, Any], where: str) -> str:
    """The define giving a patient's stratum: one component's criteria (a value stratifier, as HAPI reads one)."""
    components = node.get("component") or []
    if len(components) != 1 or "criteria" in node:
        raise ContentError(
            f"{where}: a value stratifier has exactly one component with criteria and no criteria of its own", []
        )
    return _expression(components[0], f"{where}.component[0]")


def measure_defs(pkg: Package) -> list[MeasureDef]:
    """The package's Measures (id order) as MeasureDefs; a ContentError names a Measure this cannot evaluate."""
    out: list[MeasureDef] = []
    for r in sorted((r for r in pkg.resources if r.get("resourceType") == "Measure"), key=lambda r: str(r["id"])):
        where = f"Measure/{r['id']}"
        scoring = {c.get("code") for c in (r.get("scoring") or {}).get("coding", [])}
        if scoring != {"proportion"}:
            raise ContentError(f"{where}: only proportion scoring is evaluated here (scoring {sorted(scoring)})", [])
        libs = r.get("library") or []
        lib = pkg.resolve(libs[0]) if len(libs) == 1 else None
        if lib is None or lib.get("name") not in pkg.elm:
            raise ContentError(f"{where}: library must name exactly one compiled Library of the package", [])
        groups = r.get("group") or []
        if len(groups) != 1:
            raise ContentError(f"{where}: exactly one group is evaluated here ({len(groups)} found)", [])
        group = groups[0]
        pops: dict[str, str] = {}
        for i, p in enumerate(group.get("population") or []):
            codes = [c.get("code") for c in (p.get("code") or {}).get("coding", [])]
            code = next((c for c in codes if c in PROPORTION_POPULATIONS), None)
            if code is None:
                raise ContentError(
                    f"{where}.group[0].population[{i}]: a measure-population code of {PROPORTION_POPULATIONS}", []
                )
            pops[code] = _expression(p, f"{where}.group[0].population[{i}]")
        if set(pops) != set(PROPORTION_POPULATIONS):
            raise ContentError(f"{where}: a proportion needs the populations {', '.join(PROPORTION_POPULATIONS)}", [])
        strats = tuple(
            Stratifier(
                str(s.get("id") or f"stratifier-{i}"),
                str((s.get("code") or {}).get("text") or s.get("id") or ""),
                _stratifier_expression(s, f"{where}.group[0].stratifier[{i}]"),
            )
            for i, s in enumerate(group.get("stratifier") or [])
        )
        out.append(
            MeasureDef(
                str(r["id"]),
                f"{r['url']}|{r['version']}",
                str(lib["name"]),
                str(group.get("id") or "main"),
                {c: pops[c] for c in PROPORTION_POPULATIONS},
                strats,
                r,
            )
        )
    if not out:
        raise ContentError("the package has no Measure (fhir_resources/measure/); nothing to evaluate", [])
    return out


@dataclass
class Counts:
    """Population counts (and members, for a subject list) of one group or stratum."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROPORTION_POPULATIONS, 0))
    members: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in PROPORTION_POPULATIONS})

    def score(self) -> Decimal | None:
        """numerator / denominator (no exclusions here), None when the denominator is empty (HAPI writes none)."""
        den = self.counts["denominator"]
        if den == 0:
            return None
        value = Decimal(self.counts["numerator"]) / Decimal(den)
        return value.quantize(Decimal(1).scaleb(-SCORE_PLACES), rounding=ROUND_HALF_EVEN)


@dataclass
class Tally:
    """One Measure's counts over a population: overall and per stratifier value."""

    measure: MeasureDef
    overall: Counts = field(default_factory=Counts)
    strata: dict[str, dict[str, Counts]] = field(default_factory=dict)  # stratifier id -> value -> counts
    # Patient ids per population, for a subject list; off, memory does not grow with the population.
    keep_members: bool = True

    def add(self, patient: str, values: dict[str, Any]) -> None:
        """Count one patient from its define values (a missing or non-true value is not membership)."""
        ip = values.get(self.measure.populations["initial-population"]) is True
        den = ip and values.get(self.measure.populations["denominator"]) is True
        num = den and values.get(self.measure.populations["numerator"]) is True
        member = {"initial-population": ip, "denominator": den, "numerator": num}
        targets = [self.overall]
        for s in self.measure.stratifiers:
            value = values.get(s.expression)
            key = value if isinstance(value, str) else "null" if value is None else str(value)
            targets.append(self.strata.setdefault(s.id, {}).setdefault(key, Counts()))
        for code, yes in member.items():
            if yes:
                for t in targets:
                    t.counts[code] += 1
                    if self.keep_members:
                        t.members[code].append(patient)


def evaluate_records(
    pkg: Package,
    records: Iterable[PatientRecord],
    period: Period,
    pool: Pool,
    *,
    batch_records: int = BATCH_RECORDS,
    batch_bytes: int = BATCH_BYTES,
) -> Iterator[tuple[PatientRecord, dict[str, dict[str, Any]] | None, str | None]]:
    """Each record with its define values per Measure library, or with the reason it was not evaluated.

    One request per batch evaluates every Measure library for its patients (the engines cache what the
    libraries share, GLCommon's defines, within a patient); batches run on every engine of the pool at once,
    results in input order (population.run_in_order, as population mode).
    """
    pool.load(pkg)
    defs = measure_defs(pkg)
    libraries = sorted({d.library for d in defs})
    expressions: dict[str, list[str]] = {}
    for d in defs:
        expressions.setdefault(d.library, [])
        expressions[d.library] += [e for e in d.expressions if e not in expressions[d.library]]
    params = period.parameters()

    def run(batch: list[PatientRecord]) -> list[tuple[PatientRecord, dict[str, dict[str, Any]] | None, str | None]]:
        good = [r for r in batch if r.error is None]
        rows: list[dict[str, Any]] = []
        if good:
            with pool.engine() as eng:
                rows = eng.evaluate_batch(
                    pkg.key, libraries, [r.bundle_json or "" for r in good], period.end_time, expressions, params
                )
        answers = dict(zip((id(r) for r in good), rows, strict=True))
        out: list[tuple[PatientRecord, dict[str, dict[str, Any]] | None, str | None]] = []
        for r in batch:
            row = answers.get(id(r))
            if r.error is not None or row is None:
                out.append((r, None, r.error))
            elif row.get("ok"):
                out.append((r, row.get("libraries") or {}, None))
            else:
                out.append((r, None, f"the CQL engine failed on this patient: {row.get('error', 'unknown error')}"))
        return out

    return run_in_order(record_batches(records, batch_records, batch_bytes), run, len(pool.engines))


def tally(defs: list[MeasureDef], evaluated: Iterable[tuple[str, dict[str, dict[str, Any]]]]) -> list[Tally]:
    """Count each (patient, define values by library) into one Tally per Measure."""
    tallies = [Tally(d) for d in defs]
    for patient, libs in evaluated:
        for t in tallies:
            t.add(patient, libs.get(t.measure.library) or {})
    return tallies


# ---------------------------------------------------------------- MeasureReport shaping


def _population(code: str, counts: Counts, subject_list: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": {"coding": [{"system": MEASURE_POPULATION_SYSTEM, "code": code, "display": _DISPLAY[code]}]},
        "count": counts.counts[code],
    }
    if subject_list is not None:
        out["subjectResults"] = {"reference": f"#{subject_list}"}
    return out


def _score(counts: Counts) -> dict[str, Any]:
    score = counts.score()
    return {} if score is None else {"measureScore": {"value": float(score)}}


def summary_report(t: Tally, period: Period, *, date: str, subject_list: bool = False) -> dict[str, Any]:
    """A summary MeasureReport (FHIR R4 JSON) for one Tally: counts, score, strata; with subject lists if asked.

    A subject list is a contained List of Patient references per population (as HAPI's subject-list
    reports reference theirs from `subjectResults`).
    """
    contained: list[dict[str, Any]] = []

    def listed(counts: Counts, code: str, tag: str) -> str | None:
        if not subject_list:
            return None
        lid = f"{tag}-{code}"
        entries = [{"item": {"reference": f"Patient/{p}"}} for p in counts.members[code]]
        contained.append({"resourceType": "List", "id": lid, "status": "current", "mode": "snapshot", "entry": entries})
        return lid

    group: dict[str, Any] = {
        "id": t.measure.group_id,
        "population": [_population(c, t.overall, listed(t.overall, c, "all")) for c in PROPORTION_POPULATIONS],
        **_score(t.overall),
    }
    strata_out = []
    for s in t.measure.stratifiers:
        strata = []
        for value in sorted(t.strata.get(s.id, {})):
            counts = t.strata[s.id][value]
            tag = f"{s.id}-{value}"
            strata.append(
                {
                    "value": {"text": value},
                    "population": [_population(c, counts, listed(counts, c, tag)) for c in PROPORTION_POPULATIONS],
                    **_score(counts),
                }
            )
        strata_out.append({"id": s.id, "code": [{"text": s.text}], "stratum": strata})
    if strata_out:
        group["stratifier"] = strata_out
    report: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "id": f"{t.measure.id}-summary",
        "status": "complete",
        "type": "subject-list" if subject_list else "summary",
        "measure": t.measure.url,
        "date": date,
        "period": period.fhir(),
        "improvementNotation": t.measure.resource.get("improvementNotation"),
        "group": [group],
    }
    if report["improvementNotation"] is None:
        del report["improvementNotation"]
    if contained:
        report["contained"] = contained
    return report


def _count_of(pops: list[dict[str, Any]], where: str) -> Counts:
    counts = Counts()
    for p in pops:
        codes = [c.get("code") for c in (p.get("code") or {}).get("coding", [])]
        code = next((c for c in codes if c in PROPORTION_POPULATIONS), None)
        if code is not None:
            count = p.get("count", 0)
            if not isinstance(count, int):
                raise BadInputError(f"{where}: population {code} has no integer count")
            counts.counts[code] = count
    return counts


def from_report(measure: MeasureDef, report: dict[str, Any]) -> Tally:
    """The Tally a (server's) summary MeasureReport states: counts overall and per stratum (no members).

    Strata are matched to the Measure's stratifiers by position (HAPI copies them in order) and keyed by
    the stratum's value text, as the local tally keys them.
    """
    where = f"MeasureReport for Measure/{measure.id}"
    if report.get("resourceType") != "MeasureReport":
        raise BadInputError(f"{where}: the answer is a {report.get('resourceType')}, not a MeasureReport")
    groups = report.get("group") or []
    if len(groups) != 1:
        raise BadInputError(f"{where}: expected one group, found {len(groups)}")
    group = groups[0]
    t = Tally(measure, overall=_count_of(group.get("population") or [], where))
    reported = group.get("stratifier") or []
    for s, rs in zip(measure.stratifiers, reported, strict=False):
        for stratum in rs.get("stratum") or []:
            # A one-component stratifier's value: the stratum's own, or its only component's (HAPI writes either).
            comps = stratum.get("component") or []
            value = stratum.get("value") or (comps[0].get("value") if len(comps) == 1 else None) or {}
            key = str(value.get("text") if "text" in value else value)
            t.strata.setdefault(s.id, {})[key] = _count_of(stratum.get("population") or [], where)
    return t


def comparable(t: Tally) -> dict[str, Any]:
    """What two evaluations must agree on: counts and score overall and per non-empty stratum."""

    def one(c: Counts) -> dict[str, Any]:
        score = c.score()
        return {**c.counts, "score": None if score is None else str(score)}

    strata = {
        f"{sid}={value}": one(c)
        for sid, values in t.strata.items()
        for value, c in values.items()
        if any(c.counts.values())
    }
    return {"measure": t.measure.id, "overall": one(t.overall), "strata": strata}
