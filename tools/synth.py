"""Deterministic synthetic patients (with and without GL) for population runs and benchmarks."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.core.fhir import collection_bundle
from guideline.core.fsutil import replace_dir
from tools import synthea

SNOMED = "http://snomed.info/sct"
ORPHA = "http://www.orpha.net"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# The date the data is written for: fixed, so one seed always gives the same bytes.
DEFAULT_AT = dt.date(2026, 6, 1)
# Observations per patient: heavy-tailed between the bounds (median ~11, mean ~54, 99th
# percentile ~760), so a population averages ~60 resources per patient, as a registry extract might.
DEFAULT_OBSERVATIONS = (10, 1000)
_SKEW = 6

GL_CODES = [
    (SNOMED, "284449005", "Congenital total lipodystrophy"),
    (ORPHA, "528", "Congenital generalized lipodystrophy"),
    (ORPHA, "ORPHA:79086", "Acquired generalized lipodystrophy"),
]
CONDITIONS = {
    "insulin-resistance": (SNOMED, "763325000", "Insulin resistance"),
    "hyperprolactinaemia": (SNOMED, "237662005", "Hyperprolactinemia"),
    "galactorrhoea": (ICD10, "N64.3", "Galactorrhoea not associated with childbirth"),
    "amenorrhoea": (SNOMED, "14302001", "Amenorrhea"),
    "type2-diabetes": (SNOMED, "44054006", "Diabetes mellitus type 2"),
    "hypertriglyceridaemia": (SNOMED, "302870006", "Hypertriglyceridemia"),
    "hypertension": (SNOMED, "38341003", "Hypertensive disorder"),
    "asthma": (SNOMED, "195967001", "Asthma"),
}
MEDICATIONS = {
    "bromocriptine": (RXNORM, "1760", "bromocriptine"),
    "levocarnitine": (RXNORM, "42955", "levocarnitine"),
    "metformin": (RXNORM, "6809", "metformin"),
}


@dataclass(frozen=True)
class Lab:
    code: str
    display: str
    weight: float


LABS = [
    Lab("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", 0.28),
    Lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 0.18),
    Lab("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", 0.14),
    Lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", 0.1),
    Lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", 0.06),
    Lab("27873-9", "Insulin [Units/volume] in Serum or Plasma --fasting", 0.12),
    Lab("2842-3", "Prolactin [Mass/volume] in Serum or Plasma", 0.12),
]


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _ref(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def _instant(day: dt.date, r: random.Random) -> str:
    return f"{day.isoformat()}T{r.randint(7, 17):02d}:{r.choice((0, 15, 30, 45)):02d}:00Z"


def observation_count(r: random.Random, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if low == high:
        return low
    scale: float = (high / low) ** (r.random() ** _SKEW)
    return min(high, max(low, round(low * scale)))


class _Patient:
    """One synthetic patient: a phenotype drawn first, then resources consistent with it."""

    def __init__(self, seed: int, index: int, at: dt.date, observations: tuple[int, int]) -> None:
        # Seeded per patient: patient i is the same whatever the population size or start.
        self.r = random.Random(f"gl-synth:{seed}:{index}")  # noqa: S311 - test data, not secrets
        self.at = at
        self.pid = f"syn{seed}-{index:06d}"
        r = self.r
        self.age = r.randint(1, 80)
        self.gender = r.choices(["female", "male", "other", "unknown"], [49, 49, 1, 1])[0]
        self.gl = r.random() < 0.5
        self.insulin_high = r.random() < 0.35
        self.prolactin_high = r.random() < 0.2
        self.metabolic = r.random() < 0.45
        self.n_obs = observation_count(r, observations)
        self.resources: list[dict[str, Any]] = []
        self.serial = 0

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{self.pid}-{kind}-{self.serial}"

    def day_back(self, max_days: int) -> dt.date:
        return self.at - dt.timedelta(days=self.r.randint(0, max_days))

    def build(self) -> list[dict[str, Any]]:
        r = self.r
        birth = self.at - dt.timedelta(days=365 * self.age + r.randint(0, 364))
        self.resources.append(
            {"resourceType": "Patient", "id": self.pid, "gender": self.gender, "birthDate": birth.isoformat()}
        )
        if self.gl:
            # Most GL diagnoses are active; some are resolved or refuted, which must not count.
            outcomes = [("active", "confirmed"), ("recurrence", "confirmed"), ("resolved", "confirmed")]
            status, verification = r.choices([*outcomes, ("active", "refuted")], [88, 4, 4, 4])[0]
            self.condition(r.choice(GL_CODES), status, verification)
        elif r.random() < 0.03:
            self.condition(r.choice(GL_CODES), "inactive", "refuted")
        self.comorbidities()
        self.medications()
        for _ in range(self.n_obs):
            self.observation()
        return self.resources

    def condition(self, code: tuple[str, str, str], status: str = "active", verification: str = "confirmed") -> None:
        onset = self.day_back(365 * min(self.age, 30))
        self.resources.append(
            {
                "resourceType": "Condition",
                "id": self.next_id("cond"),
                "clinicalStatus": _coding(CLINICAL, status, status),
                "verificationStatus": _coding(VERIFICATION, verification, verification),
                "code": _coding(*code),
                "subject": _ref(self.pid),
                "onsetDateTime": _instant(onset, self.r),
            }
        )

    def comorbidities(self) -> None:
        r = self.r
        fertile_female = self.gender == "female" and 12 <= self.age <= 50
        picks = [
            ("insulin-resistance", self.insulin_high and r.random() < 0.3),
            ("hyperprolactinaemia", self.prolactin_high and r.random() < 0.4),
            ("galactorrhoea", self.prolactin_high and self.gender == "female" and r.random() < 0.3),
            ("amenorrhoea", self.prolactin_high and fertile_female and r.random() < 0.3),
            ("type2-diabetes", self.metabolic and self.age >= 10 and r.random() < 0.4),
            ("hypertriglyceridaemia", self.metabolic and r.random() < 0.25),
            ("hypertension", self.age >= 30 and r.random() < 0.25),
            ("asthma", r.random() < 0.08),
        ]
        for name, yes in picks:
            if yes:
                self.condition(CONDITIONS[name], r.choice(("active", "active", "active", "resolved")))

    def medications(self) -> None:
        r = self.r
        picks = [
            ("bromocriptine", self.prolactin_high and r.random() < 0.3),
            ("levocarnitine", self.metabolic and r.random() < 0.2),
            ("metformin", self.metabolic and self.age >= 10 and r.random() < 0.5),
        ]
        for name, yes in picks:
            if not yes:
                continue
            status = r.choices(["active", "stopped", "completed"], [70, 20, 10])[0]
            when = _instant(self.day_back(3 * 365), r)
            if r.random() < 0.75:
                self.resources.append(
                    {
                        "resourceType": "MedicationRequest",
                        "id": self.next_id("medreq"),
                        "status": status,
                        "intent": "order",
                        "medicationCodeableConcept": _coding(*MEDICATIONS[name]),
                        "subject": _ref(self.pid),
                        "authoredOn": when,
                    }
                )
            else:
                self.resources.append(
                    {
                        "resourceType": "MedicationStatement",
                        "id": self.next_id("medstmt"),
                        "status": "active" if status == "active" else "stopped",
                        "medicationCodeableConcept": _coding(*MEDICATIONS[name]),
                        "subject": _ref(self.pid),
                        "effectiveDateTime": when,
                    }
                )

    def lab_value(self, lab: Lab) -> tuple[float, str]:
        """A value and its unit, drawn from the patient's phenotype (some in other units)."""
        r = self.r
        if lab.code == "1558-6":
            v = r.gauss(140, 35) if self.metabolic else r.gauss(90, 12)
            return (round(v / 100, 2), "g/L") if r.random() < 0.05 else (round(v), "mg/dL")
        if lab.code == "4548-4":
            return round(r.gauss(7.4, 1.0) if self.metabolic else r.gauss(5.3, 0.4), 1), "%"
        if lab.code == "2571-8":
            return round(r.gauss(260, 90) if self.metabolic else r.gauss(110, 30)), "mg/dL"
        if lab.code == "2093-3":
            return round(r.gauss(200, 35)), "mg/dL"
        if lab.code == "2085-9":
            return round(r.gauss(45, 10)), "mg/dL"
        if lab.code == "27873-9":
            v = r.gauss(45, 15) if self.insulin_high else r.gauss(12, 5)
            return (round(v * 6), "pmol/L") if r.random() < 0.1 else (round(v, 1), "u[IU]/mL")
        v = r.gauss(45, 15) if self.prolactin_high else r.gauss(12, 5)
        return round(v, 1), "ng/mL"

    def observation(self) -> None:
        r = self.r
        lab = r.choices(LABS, [x.weight for x in LABS])[0]
        value, unit = self.lab_value(lab)
        self.resources.append(
            {
                "resourceType": "Observation",
                "id": self.next_id("obs"),
                "status": r.choices(["final", "amended", "preliminary"], [95, 2, 3])[0],
                "category": [_coding(OBS_CATEGORY, "laboratory", "Laboratory")],
                "code": _coding(LOINC, lab.code, lab.display),
                "subject": _ref(self.pid),
                "effectiveDateTime": _instant(self.day_back(5 * 365), r),
                "valueQuantity": {"value": max(value, 0.1), "unit": unit, "system": UCUM, "code": unit},
            }
        )


def synth_patients(
    seed: int,
    count: int,
    *,
    at: dt.date = DEFAULT_AT,
    observations: tuple[int, int] = DEFAULT_OBSERVATIONS,
    start: int = 0,
) -> Iterator[list[dict[str, Any]]]:
    """Patients start..start+count-1 of the seed's population, each a list of resources, Patient first."""
    for i in range(start, start + count):
        yield _Patient(seed, i, at, observations).build()


def as_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """One synthetic patient's resources as the collection Bundle an engine reads."""
    return collection_bundle(resources)


def _line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def write_population(
    out: Path,
    patients: Iterator[list[dict[str, Any]]],
    fmt: str,
) -> int:
    """Write atomically: an NDJSON file (resources, grouped by patient), a directory of Bundles, or a Bulk export."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    if fmt == "bulk":
        return _write_bulk(out, patients)
    if fmt == "ndjson":
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                for resources in patients:
                    f.writelines(_line(res) + "\n" for res in resources)
                    n += 1
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; this is ordinary test data
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return n
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for resources in patients:
            (tmpdir / f"{resources[0]['id']}.json").write_text(_line(as_bundle(resources)) + "\n", encoding="utf-8")
            n += 1
        replace_dir(tmpdir, out)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return n


def _write_bulk(out: Path, patients: Iterator[list[dict[str, Any]]]) -> int:
    """A folder as a FHIR Bulk Data `$export` leaves it: one NDJSON file per resource type, and the manifest."""
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    files: dict[str, Any] = {}
    counts: dict[str, int] = {}
    n = 0
    try:
        for resources in patients:
            for res in resources:
                rtype = res["resourceType"]
                if rtype not in files:
                    files[rtype] = (tmpdir / f"{rtype}.ndjson").open("w", encoding="utf-8", newline="\n")
                files[rtype].write(_line(res) + "\n")
                counts[rtype] = counts.get(rtype, 0) + 1
            n += 1
        for f in files.values():
            f.close()
        manifest = {
            # Fixed, so the same seed writes the same bytes; the files are named as the server offered them.
            "transactionTime": f"{DEFAULT_AT.isoformat()}T00:00:00Z",
            "request": "[base]/Patient/$export",
            "requiresAccessToken": False,
            "output": [{"type": t, "url": f"{t}.ndjson", "count": counts[t]} for t in sorted(counts)],
            "error": [],
        }
        (tmpdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmpdir, out)
    except BaseException:
        for f in files.values():
            f.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return n


def _observations(value: str) -> tuple[int, int]:
    low, _, high = value.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give N or MIN-MAX, e.g. 100 or 10-1000") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"{value!r}: need 1 <= MIN <= MAX")
    return bounds


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/synth",
        description="Write deterministic synthetic patients (same seed and options, same bytes).",
        epilog="A Synthea population instead: scripts/synth --synthea N --out DIR (see scripts/synth --synthea 1 "
        "--help); count unsafe proposals in one: scripts/synth --check DIR.",
    )
    p.add_argument("--patients", type=int, required=True, metavar="N", help="number of patients")
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="NDJSON file or folder")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--format",
        choices=("ndjson", "bundles", "bulk"),
        default=None,
        help="ndjson (resources grouped by patient, Patient first), bundles (one collection Bundle per "
        "file) or bulk (a Bulk Data export folder: one NDJSON file per resource type and manifest.json); "
        "default: ndjson when --out ends in .ndjson, else bundles",
    )
    p.add_argument(
        "--observations",
        type=_observations,
        default=DEFAULT_OBSERVATIONS,
        metavar="N|MIN-MAX",
        help="Observations per patient: exactly N, or heavy-tailed between MIN and MAX (default 10-1000)",
    )
    p.add_argument("--at", type=dt.date.fromisoformat, default=DEFAULT_AT, help="data written as of this date")
    p.add_argument("--start", type=int, default=0, metavar="I", help="first patient index (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/synth`: our synthetic patients, or with --synthea / --check a Synthea population (tools/synthea.py)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a.split("=")[0] in ("--synthea", "--check") for a in argv):
        return synthea.main(argv)
    args = make_parser().parse_args(argv)
    if args.patients < 0 or args.start < 0:
        sys.stderr.write("synth: --patients and --start must not be negative\n")
        return 2
    fmt = args.format or ("ndjson" if args.out.suffix == ".ndjson" else "bundles")
    patients = synth_patients(args.seed, args.patients, at=args.at, observations=args.observations, start=args.start)
    n = write_population(args.out, patients, fmt)
    sys.stderr.write(f"synth: wrote {n} patients (seed {args.seed}, {fmt}) to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
