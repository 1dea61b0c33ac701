"""Synthea populations for clinical checks and benchmarks: generate, add GL (and labs), trim, and count.

Synthea (MITRE, Apache-2.0, `org.mitre.synthea:synthea:3.3.0` from Maven Central) writes patient histories nobody
here wrote. `scripts/synth --synthea N` runs it (fetched through Maven on first use into `.toolchain/synthea/`),
then post-processes its Bulk Data output into a folder `guideline recommend --population` reads: a confirmed GL
Condition for a share of patients, the labs and drug orders the logic reads (in the units and codings
laboratories send) for another share, and optionally only the resource types the logic reads. `check` runs the
population through both engines and counts what must never happen (a child with the low-calorie diet, an
insulin-treated patient with R1, a drug card to a pregnant or deceased patient), from the raw records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from guideline.core.errors import BadInputError, GuidelineError, ToolchainError, UsageError
from guideline.core.fsutil import replace_dir
from guideline.evaluation.pushdown import Reads

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_ARTIFACT = ("org.mitre.synthea", "synthea", "3.3.0")
TOOLCHAIN = ROOT / ".toolchain" / "synthea"
# Synthea's reference date is the day it runs; a fixed default (passed as -r and -e) makes a seed reproducible.
DEFAULT_REFERENCE = dt.date(2026, 12, 1)

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Marks what this script added, so nobody mistakes it for Synthea's own output.
ADDED_TAG = {"system": "urn:guideline:synthea-postprocess", "code": "added"}

# The GL Condition the scenarios use (tests/cases/gl-adult-no-data): in the gl-conditions value set.
GL_CODE = {"system": SNOMED, "code": "284449005", "display": "Congenital total lipodystrophy"}
# Drug products as systems send them: RxNorm product codes from the project's value sets (verified there).
BROMOCRIPTINE_PRODUCTS = ["371128", "859077"]
LEVOCARNITINE_PRODUCTS = ["197448", "315134", "1791371"]

# What the check reads from the documents `recommend --json` writes.
LOW_CALORIE_DIET = "http://snomed.info/sct|182956005"  # activitydefinition-GLOrderLowCalorieDiet
DRUG_CARDS = ("GLR2Bromocriptine", "GLR3Levocarnitine")
INSULIN_LOOKBACK = dt.timedelta(days=90)
PREGNANCY_WINDOW = dt.timedelta(weeks=42)
# Insulin products Synthea writes (seen in its output; the display names the ingredient too).
INSULIN_RXNORM = {"106892"}


class SyntheaError(ToolchainError):
    """Synthea could not be fetched or run."""


# ---------------------------------------------------------------- fetching and running Synthea

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <!-- Written by tools/synthea.py: resolves Synthea and its dependencies into ~/.m2. -->
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.guideline</groupId>
  <artifactId>synthea-runner</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{0}</groupId>
      <artifactId>{1}</artifactId>
      <version>{2}</version>
    </dependency>
  </dependencies>
</project>
"""


def synthea_classpath(toolchain: Path = TOOLCHAIN) -> str:
    """The Java class path of Synthea 3.3.0 and its dependencies, resolved through Maven on first use."""
    toolchain.mkdir(parents=True, exist_ok=True)
    pom = toolchain / "pom.xml"
    text = _POM.format(*SYNTHEA_ARTIFACT)
    cp = toolchain / "cp.txt"
    if pom.is_file() and pom.read_text(encoding="utf-8") == text and cp.is_file() and cp.stat().st_size:
        return cp.read_text(encoding="utf-8").strip()
    pom.write_text(text, encoding="utf-8")
    log = toolchain / "mvn.log"
    sys.stderr.write("synth: resolving {}:{}:{} through Maven (first use only)\n".format(*SYNTHEA_ARTIFACT))
    try:
        with log.open("w", encoding="utf-8") as out:
            rc = subprocess.call(  # noqa: S603 - fixed argument list
                ["mvn", "-B", "-ntp", "-q", "-f", str(pom), "dependency:build-classpath",
                 f"-Dmdep.outputFile={cp}", "-Dmdep.includeScope=runtime"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
    except FileNotFoundError:
        raise SyntheaError("mvn not found: install Apache Maven 3.8+ (scripts/setup checks it)") from None
    if rc != 0 or not cp.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise SyntheaError("could not resolve {}:{}:{} from Maven Central".format(*SYNTHEA_ARTIFACT), tail)
    return cp.read_text(encoding="utf-8").strip()


def run_synthea(patients: int, seed: int, reference: dt.date, out: Path, *, memory: str = "2g") -> Path:
    """Run Synthea into `out` (Bulk Data layout); return its `fhir/` folder of `<Type>.ndjson` files."""
    cp = synthea_classpath()
    day = reference.strftime("%Y%m%d")
    cmd = [
        "java", f"-Xmx{memory}", "-cp", cp, "App", "-p", str(patients), "-s", str(seed), "-cs", str(seed),
        # -r fixes the reference date (ages, "now"), -e the end of the simulation: together the same seed
        # gives the same histories whatever day it runs.
        "-r", day, "-e", day,
        "--exporter.fhir.transaction_bundle=false", "--exporter.fhir.bulk_data=true",
        f"--exporter.baseDirectory={out}", "--exporter.hospital.fhir.export=false",
        "--exporter.practitioner.fhir.export=false",
    ]  # fmt: skip
    log = out.parent / f"{out.name}.log"
    with log.open("w", encoding="utf-8") as f:
        try:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)  # noqa: S603 - fixed argument list
        except FileNotFoundError:
            raise SyntheaError("java not found: install a Java 17+ JDK") from None
    fhir = out / "fhir"
    if rc != 0 or not (fhir / "Patient.ndjson").is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise SyntheaError(f"Synthea failed (exit {rc}); its log: {log}", tail)
    return fhir


# ---------------------------------------------------------------- post-processing


def _iter_ndjson(path: Path) -> Iterator[str]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def ndjson_files(folder: Path) -> dict[str, Path]:
    """`<Type>.ndjson[.gz]` files of a Bulk Data folder, by resource type."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        for suffix in (".ndjson", ".ndjson.gz"):
            if p.name.endswith(suffix):
                out[p.name.removesuffix(suffix)] = p
    return out


def patient_of(res: dict[str, Any]) -> str | None:
    """The patient id a resource's `subject` or `patient` reference names (`Patient/<id>`)."""
    for key in ("subject", "patient"):
        ref = (res.get(key) or {}).get("reference", "")
        if "Patient/" in ref:
            return str(ref.split("Patient/", 1)[1].split("/", 1)[0])
    return None


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "guideline-synthea:" + ":".join(map(str, parts))))


def _cc(system: str, code: str, display: str = "", text: str = "") -> dict[str, Any]:
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def _when(day: dt.date, r: random.Random) -> str:
    return f"{day.isoformat()}T{r.randint(7, 11):02d}:{r.choice((0, 15, 30, 45)):02d}:00Z"


def gl_condition(seed: int, pid: str, birth: str) -> dict[str, Any]:
    """A confirmed, active GL Condition with onset at birth (congenital generalized lipodystrophy)."""
    return {
        "resourceType": "Condition",
        "id": _uuid(seed, pid, "gl"),
        "meta": {"tag": [ADDED_TAG]},
        "clinicalStatus": _cc(CLINICAL, "active"),
        "verificationStatus": _cc(VERIFICATION, "confirmed"),
        "category": [_cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
        "code": {"coding": [GL_CODE], "text": GL_CODE["display"]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": birth,
    }


@dataclass(frozen=True)
class LabCode:
    """A LOINC test as laboratories report it: the code, its name, the UCUM unit and the factor from the base unit."""

    loinc: str
    display: str
    unit: str
    factor: float = 1.0
    digits: int = 1


# Each test in its conventional unit and, for a share of patients, the SI unit other laboratories report.
# Factors: insulin 1 µIU/mL = 6 pmol/L (assay convention); triglycerides 1 mmol/L = 88.57 mg/dL; glucose
# 1 mmol/L = 18.016 mg/dL. The LOINC codes are those of the project's value sets (gl-*-tests).
INSULIN_UIU = LabCode("27873-9", "Insulin [Units/volume] in Serum or Plasma --fasting", "u[IU]/mL")
INSULIN_PMOL = LabCode("27873-9", "Insulin [Units/volume] in Serum or Plasma --fasting", "pmol/L", 6.0, 0)
PROLACTIN = LabCode("2842-3", "Prolactin [Mass/volume] in Serum or Plasma", "ng/mL")
TG_MG = LabCode("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0)
TG_MMOL = LabCode("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L", 1 / 88.57, 2)
HBA1C = LabCode("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%")
GLUCOSE_MG = LabCode("1558-6", "Fasting glucose [Mass/volume] in Serum or Plasma", "mg/dL", 1.0, 0)
GLUCOSE_MMOL = LabCode("14771-0", "Fasting glucose [Moles/volume] in Serum or Plasma", "mmol/L", 1 / 18.016)


def _lab(pid: str, ident: str, day: dt.date, r: random.Random, lab: LabCode, base_value: float) -> dict[str, Any]:
    when = _when(day, r)
    return {
        "resourceType": "Observation",
        "id": ident,
        "meta": {"tag": [ADDED_TAG]},
        "status": "final",
        "category": [_cc(OBS_CATEGORY, "laboratory", "Laboratory")],
        "code": _cc(LOINC, lab.loinc, lab.display, lab.display),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "issued": when.replace(":00Z", ":00.000Z"),
        "valueQuantity": {
            "value": round(base_value * lab.factor, lab.digits) if lab.digits else round(base_value * lab.factor),
            "unit": lab.unit,
            "system": UCUM,
            "code": lab.unit,
        },
    }


def labs_and_orders(seed: int, pid: str, anchor: dt.date, sex: str) -> list[dict[str, Any]]:
    """Labs (and now and then a drug order) as laboratories and EHRs send them, drawn from the seed and patient."""
    r = random.Random(f"synthea-labs:{seed}:{pid}")  # noqa: S311 - test data, not secrets
    out: list[dict[str, Any]] = []
    high_insulin, high_prolactin, metabolic = r.random() < 0.5, r.random() < 0.25, r.random() < 0.5
    for visit in range(r.randint(1, 3)):  # a few visits over the last year, before death if any
        day = anchor - dt.timedelta(days=r.randint(7, 330))
        draws = [
            (
                r.choices((INSULIN_UIU, INSULIN_PMOL), (3, 1))[0],
                r.uniform(30, 90) if high_insulin else r.uniform(3, 15),
            ),
            (PROLACTIN, r.uniform(30, 90) if high_prolactin else r.uniform(3, 15 if sex == "male" else 20)),
            (r.choices((TG_MG, TG_MMOL), (7, 3))[0], r.uniform(180, 900) if metabolic else r.uniform(60, 140)),
            (HBA1C, r.uniform(6.6, 10.5) if metabolic else r.uniform(4.8, 5.9)),
            (r.choices((GLUCOSE_MG, GLUCOSE_MMOL), (7, 3))[0], r.uniform(130, 240) if metabolic else r.uniform(72, 99)),
        ]
        for k, (lab, value) in enumerate(draws):
            out.append(_lab(pid, _uuid(seed, pid, "lab", visit, k), day, r, lab, value))
    drugs = (("bromocriptine", BROMOCRIPTINE_PRODUCTS), ("levocarnitine", LEVOCARNITINE_PRODUCTS))
    for name, products in drugs:
        if r.random() < 0.08:
            out.append(
                {
                    "resourceType": "MedicationRequest",
                    "id": _uuid(seed, pid, name),
                    "meta": {"tag": [ADDED_TAG]},
                    "status": r.choice(("active", "stopped", "completed")),
                    "intent": "order",
                    "medicationCodeableConcept": _cc(RXNORM, r.choice(products), text=name),
                    "subject": {"reference": f"Patient/{pid}"},
                    "authoredOn": _when(anchor - dt.timedelta(days=r.randint(20, 700)), r),
                }
            )
    return out


def logic_requirements() -> Reads:
    """What `--trim` keeps: what the built package's retrieves can return (`pushdown.Reads`, the population
    readers' own decision), so a trimmed sample holds exactly what the readers would parse."""
    from guideline.content.package import build_package

    return Reads.of(build_package())


def _kept_type(keep: Reads, rtype: str) -> bool:
    """Whether any resource of `rtype` may be kept: a type a retrieve reads, or the Patient."""
    return rtype == "Patient" or rtype in keep.types


@dataclass
class PostProcessed:
    """What post-processing wrote."""

    patients: int = 0
    with_gl: int = 0
    with_labs: int = 0
    resources: dict[str, int] = field(default_factory=dict)


def _share(seed: int, pid: str, what: str) -> float:
    return random.Random(f"synthea-{what}:{seed}:{pid}").random()  # noqa: S311 - test data


def postprocess(
    raw: Path,
    out: Path,
    *,
    seed: int,
    reference: dt.date,
    gl_share: float = 1.0,
    labs_share: float = 0.0,
    keep: Reads | None = None,
    gzip_files: bool = False,
) -> PostProcessed:
    """Write `out` (atomically: a temp folder renamed) from Synthea's `fhir/` folder `raw`.

    Each patient is picked for GL and labs by a draw from (seed, patient id), so the choice does not depend on
    file order. With `keep`, only what the logic can read stays; kept files are sorted by id (Synthea writes
    from several threads, so its line order varies between runs), which makes the output byte-reproducible.
    """
    files = ndjson_files(raw)
    if "Patient" not in files:
        raise BadInputError(f"{raw}: no Patient.ndjson: not a Synthea Bulk Data (fhir/) folder")
    report = PostProcessed()
    added: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in _iter_ndjson(files["Patient"]):
        p = json.loads(line)
        pid, report.patients = p["id"], report.patients + 1
        if _share(seed, pid, "gl") < gl_share:
            added["Condition"].append(gl_condition(seed, pid, p.get("birthDate", "")))
            report.with_gl += 1
        if _share(seed, pid, "labs-pick") < labs_share:
            death = str(p.get("deceasedDateTime", ""))[:10]
            anchor = min(reference, dt.date.fromisoformat(death)) if death else reference
            for res in labs_and_orders(seed, pid, anchor, p.get("gender", "")):
                added[res["resourceType"]].append(res)
            report.with_labs += 1
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        referenced = _referenced_medications(files, keep) if keep else None
        for rtype in sorted(set(files) | set(added)):
            if keep is not None and not _kept_type(keep, rtype):
                continue
            lines = _lines_for(rtype, files.get(rtype), added.get(rtype, []), keep, referenced)
            n = _write(tmp / f"{rtype}.ndjson{'.gz' if gzip_files else ''}", lines)
            if n:
                report.resources[rtype] = n
            else:
                (tmp / f"{rtype}.ndjson{'.gz' if gzip_files else ''}").unlink()
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _referenced_medications(files: dict[str, Path], keep: Reads) -> set[str]:
    ids: set[str] = set()
    for rtype in ("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"):
        if rtype in files and _kept_type(keep, rtype):
            for line in _iter_ndjson(files[rtype]):
                ref = (json.loads(line).get("medicationReference") or {}).get("reference", "")
                if ref.startswith("Medication/"):
                    ids.add(ref.split("/", 1)[1])
    return ids


def _lines_for(
    rtype: str, path: Path | None, added: list[dict[str, Any]], keep: Reads | None, referenced: set[str] | None
) -> Iterable[str]:
    compact = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in added]
    raw = _iter_ndjson(path) if path is not None else iter(())
    if keep is None:  # the full record, streamed: an export of any size
        yield from raw
        yield from compact
        return
    kept: list[tuple[str, str]] = []
    for line in raw:
        res = json.loads(line)
        if rtype == "Medication" and referenced is not None:
            if res.get("id") in referenced:
                kept.append((res["id"], line))
        elif keep.keeps(res):
            kept.append((res.get("id", ""), line))
    kept.extend((r["id"], c) for r, c in zip(added, compact, strict=True))
    yield from (line for _, line in sorted(kept))


def _write(path: Path, lines: Iterable[str]) -> int:
    n = 0
    with path.open("wb") as raw:
        # mtime=0: the gzip header then carries no timestamp, so the same lines give the same bytes.
        sink: gzip.GzipFile | BinaryIO = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if path.name.endswith(".gz") else raw
        )
        try:
            for line in lines:
                sink.write((line + "\n").encode("utf-8"))
                n += 1
        finally:
            if sink is not raw:
                sink.close()
    return n


# ---------------------------------------------------------------- the check: what must never happen


def _day(value: Any) -> str:
    return str(value or "")[:10]


def _lower_bound(value: Any) -> str:
    """The earliest day a (possibly partial) FHIR date can mean: "2026-06" -> "2026-06-01"."""
    v = _day(value)
    return v + "-01-01"[len(v) - 4 :] if len(v) in (4, 7) else v


def _texts(cc: dict[str, Any] | None) -> list[str]:
    cc = cc or {}
    return [str(cc.get("text", "")).lower()] + [str(c.get("display", "")).lower() for c in cc.get("coding", [])]


def _is_insulin(cc: dict[str, Any] | None) -> bool:
    """Insulin however coded: ATC A10A*, an RxNorm product Synthea writes, or the word in a display or text."""
    for c in (cc or {}).get("coding", []):
        if c.get("system") == ATC and str(c.get("code", "")).startswith("A10A"):
            return True
        if c.get("system") == RXNORM and c.get("code") in INSULIN_RXNORM:
            return True
    return any("insulin" in t for t in _texts(cc))


@dataclass
class Facts:
    """What the raw record says about one patient, computed here without the engines."""

    pid: str
    age: int
    deceased: bool
    pregnant: bool
    insulin: bool


def _age(birth: str, at: dt.date) -> int:
    b = dt.date.fromisoformat(_lower_bound(birth))
    return at.year - b.year - ((at.month, at.day) < (b.month, b.day))


def patient_facts(resources: list[dict[str, Any]], medications: dict[str, dict[str, Any]], at: dt.date) -> Facts:
    """Age, deceased, pregnant (Condition, rule 13's codes and window) and insulin exposure in the last 90 days."""
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    today = at.isoformat()
    deceased = patient.get("deceasedBoolean") is True or (
        "deceasedDateTime" in patient and _lower_bound(patient["deceasedDateTime"]) <= today
    )
    since = (at - INSULIN_LOOKBACK).isoformat()
    preg_since = (at - PREGNANCY_WINDOW).isoformat()
    pregnant = insulin = False
    for r in resources:
        rtype = r["resourceType"]
        if rtype == "Condition":
            status = [c.get("code") for c in (r.get("clinicalStatus") or {}).get("coding", [])]
            verif = [c.get("code") for c in (r.get("verificationStatus") or {}).get("coding", [])]
            if set(status) & {"inactive", "resolved", "remission"} or set(verif) & {"refuted", "entered-in-error"}:
                continue
            words = _texts(r.get("code"))
            icd = [
                str(c.get("code", ""))
                for c in (r.get("code") or {}).get("coding", [])
                if str(c.get("system", "")).startswith("http://hl7.org/fhir/sid/icd-10")
            ]
            by_word = any("pregnan" in w and "history" not in w for w in words)
            by_icd = any(c.startswith(("O", "Z33.1", "Z34", "Z3A")) for c in icd)
            onset = _day(r.get("onsetDateTime"))
            if (by_word or by_icd) and (not onset or onset >= preg_since):
                pregnant = True
        elif rtype in ("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"):
            cc = r.get("medicationCodeableConcept")
            ref = (r.get("medicationReference") or {}).get("reference", "")
            if ref.startswith("#"):
                cc = next((c.get("code") for c in r.get("contained", []) if c.get("id") == ref[1:]), cc)
            elif ref.startswith("Medication/"):
                cc = (medications.get(ref.split("/", 1)[1]) or {}).get("code", cc)
            if not _is_insulin(cc):
                continue
            med_status = r.get("status")
            when = _day(
                r.get("authoredOn")
                or r.get("effectiveDateTime")
                or (r.get("effectivePeriod") or {}).get("start")
                or r.get("whenHandedOver")
            )
            recent = since <= when <= today
            if rtype == "MedicationRequest":
                insulin |= med_status in ("active", "on-hold") or (med_status in ("completed", "stopped") and recent)
            elif rtype == "MedicationStatement":
                insulin |= med_status == "active" or (med_status == "completed" and recent)
            elif rtype == "MedicationAdministration":
                insulin |= med_status in ("completed", "in-progress") and recent
            else:
                insulin |= med_status == "completed" and recent
    return Facts(patient["id"], _age(patient.get("birthDate", ""), at), deceased, pregnant, insulin)


# What the check itself reads from the raw records (age, death, pregnancy, insulin): not the big types.
FACT_TYPES = frozenset(
    {"Patient", "Condition", "Medication", "MedicationRequest", "MedicationStatement", "MedicationAdministration"}
    | {"MedicationDispense"}
)


def read_patients(
    folder: Path, types: frozenset[str] | None = FACT_TYPES, pids: set[str] | None = None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """A Bulk Data folder's resources by patient id (Patient first), and its Medications by id.

    `types` (None: all) and `pids` (None: all) bound what is held, so memory stays small on a full export.
    """
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    medications: dict[str, dict[str, Any]] = {}
    for rtype, path in ndjson_files(folder).items():
        if types is not None and rtype not in types:
            continue
        for line in _iter_ndjson(path):
            res = json.loads(line)
            if rtype == "Medication":
                medications[res["id"]] = res
                continue
            pid = res["id"] if rtype == "Patient" else patient_of(res)
            if pid is None or (pids is not None and pid not in pids):
                continue
            if rtype == "Patient":
                by_patient[pid].insert(0, res)
            else:
                by_patient[pid].append(res)
    return dict(by_patient), medications


@dataclass
class Counts:
    """The check's counts for one engine; the `unsafe_*` ones must be 0."""

    engine: str
    patients: int = 0
    evaluated: int = 0
    seconds: float = 0.0
    with_gl: int = 0
    children: int = 0
    children_with_any_card: int = 0
    unsafe_children_with_diet: int = 0
    unsafe_children_with_bromocriptine: int = 0
    children_with_levocarnitine: int = 0
    insulin_treated: int = 0
    unsafe_insulin_treated_with_r1: int = 0
    unsafe_insulin_treated_with_insulin_r2: int = 0
    pregnant: int = 0
    unsafe_pregnant_with_drug_card: int = 0
    deceased: int = 0
    unsafe_deceased_with_drug_card: int = 0
    deceased_with_any_card: int = 0
    # Patients whose document differs from the first engine's (the engines must agree, as on the scenarios).
    unsafe_differs_from_first_engine: int = 0
    fired: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def unsafe(self) -> int:
        """How many patients got something they must never get."""
        return sum(v for k, v in asdict(self).items() if k.startswith("unsafe_"))


def _codes(rec: dict[str, Any]) -> set[str]:
    return {c for a in rec.get("activities", []) for c in a.get("codes", [])}


def _medication_activity(rec: dict[str, Any]) -> bool:
    return any(a.get("resourceType") == "MedicationRequest" for a in rec.get("activities", []))


def count(
    engine: str,
    facts: dict[str, Facts],
    documents: dict[str, dict[str, Any]],
    insulin_r2: set[str],
    with_gl: int,
) -> Counts:
    """Count, per rule, the patients that got what their record says they must not get."""
    c = Counts(engine, patients=len(facts), evaluated=len(documents), with_gl=with_gl)
    fired: dict[str, int] = defaultdict(int)
    for pid, f in sorted(facts.items()):
        recs = {r["id"]: r for r in (documents.get(pid) or {}).get("recommendations", [])}
        for rid in recs:
            fired[rid] += 1
        drug_cards = [rid for rid in DRUG_CARDS if rid in recs and _medication_activity(recs[rid])]

        def bad(field_name: str, why: str, pid: str = pid) -> None:
            setattr(c, field_name, getattr(c, field_name) + 1)
            c.violations.append(f"{pid}: {why}")

        if f.age < 18:
            c.children += 1
            c.children_with_any_card += bool(recs)
            if LOW_CALORIE_DIET in _codes(recs.get("GLR4Diet", {})):
                bad("unsafe_children_with_diet", f"child aged {f.age} gets R4's low-calorie diet")
            if "GLR2Bromocriptine" in drug_cards:
                bad("unsafe_children_with_bromocriptine", f"child aged {f.age} gets R2's bromocriptine")
            c.children_with_levocarnitine += "GLR3Levocarnitine" in drug_cards
        if f.insulin:
            c.insulin_treated += 1
            if "GLR1InsulinAssessment" in recs:
                bad("unsafe_insulin_treated_with_r1", "insulin exposure in the last 90 days, yet R1 fires")
            if pid in insulin_r2:
                bad("unsafe_insulin_treated_with_insulin_r2", "insulin exposure, yet R2 is triggered by insulin")
        if f.pregnant:
            c.pregnant += 1
            if drug_cards:
                bad("unsafe_pregnant_with_drug_card", f"pregnant, yet gets {', '.join(drug_cards)}")
        if f.deceased:
            c.deceased += 1
            c.deceased_with_any_card += bool(recs)
            if drug_cards:
                bad("unsafe_deceased_with_drug_card", f"deceased, yet gets {', '.join(drug_cards)}")
    c.fired = dict(sorted(fired.items()))
    return c


def run_population(folder: Path, at: str, engine: str, workers: int | None = None) -> tuple[dict[str, Any], float]:
    """`guideline recommend --population` on `folder`: the documents by patient, and the wall-clock seconds."""
    from guideline.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="synthea-check.") as tmp:
        out = Path(tmp) / "results.ndjson"
        argv = ["recommend", "--population", str(folder), "--at", at, "--engine", engine, "--out", str(out)]
        if workers:
            argv += ["--workers", str(workers)]
        start = time.perf_counter()
        rc = cli.main([*argv, "--keep-going"])
        seconds = time.perf_counter() - start
        if rc != 0:
            raise GuidelineError(f"recommend --population on {folder} with --engine {engine} exited {rc}")
        docs = {}
        for line in out.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            docs[d["patient"]] = d
    return docs, seconds


def insulin_triggered_r2(folder: Path, pids: Iterable[str], at: str) -> set[str]:
    """Of `pids`, those whose R2 fires on hyperinsulinaemia (GLR2 "Mentions Insulin Effect", reference engine)."""
    from guideline.content.cql import Engine
    from guideline.content.package import build_package
    from guideline.core.fhir import collection_bundle
    from guideline.evaluation.patient import ensure_loaded

    pids = sorted(pids)
    if not pids:
        return set()
    by_patient, medications = read_patients(folder, None, set(pids))  # every type, these patients only
    pkg = build_package()
    bundles = []
    for pid in pids:
        refs = {
            str((r.get("medicationReference") or {}).get("reference", "")).removeprefix("Medication/")
            for r in by_patient[pid]
        }
        meds = [medications[m] for m in sorted(refs) if m in medications]
        bundles.append(json.dumps(collection_bundle([*by_patient[pid], *meds]), separators=(",", ":")))
    with Engine() as eng:
        ensure_loaded(pkg, eng)
        rows = eng.evaluate_batch(
            pkg.key, ["GLR2Bromocriptine"], bundles, at, {"GLR2Bromocriptine": ["Mentions Insulin Effect"]}
        )
    out = set()
    for pid, row in zip(pids, rows, strict=True):
        if not row.get("ok"):
            raise GuidelineError(f"{pid}: the reference engine failed: {row.get('error')}")
        if row["libraries"]["GLR2Bromocriptine"].get("Mentions Insulin Effect") is True:
            out.add(pid)
    return out


def check(folder: Path, at: str, engines: Sequence[str] = ("js", "java"), workers: int | None = None) -> list[Counts]:
    """Run the population through each engine and count, from the raw records, what must never happen."""
    by_patient, medications = read_patients(folder)
    when = dt.date.fromisoformat(at[:10])
    facts = {
        pid: patient_facts(res, medications, when)
        for pid, res in by_patient.items()
        if res[0]["resourceType"] == "Patient"
    }
    with_gl = sum(
        any(r["resourceType"] == "Condition" and GL_CODE in (r.get("code") or {}).get("coding", []) for r in res)
        for res in by_patient.values()
    )
    out = []
    first: dict[str, Any] | None = None
    for engine in engines:
        docs, seconds = run_population(folder, at, engine, workers)
        treated_r2 = [
            p
            for p, f in facts.items()
            if f.insulin and any(r["id"] == "GLR2Bromocriptine" for r in docs.get(p, {}).get("recommendations", []))
        ]
        c = count(engine, facts, docs, insulin_triggered_r2(folder, treated_r2, at), with_gl)
        c.seconds = round(seconds, 1)
        if first is None:
            first = docs
        for pid in sorted(set(first) | set(docs)):
            if first.get(pid) != docs.get(pid):
                c.unsafe_differs_from_first_engine += 1
                c.violations.append(f"{pid}: {engine}'s document differs from {engines[0]}'s")
        out.append(c)
    return out


# ---------------------------------------------------------------- command line


# A bare --check: count in the folder just generated.
_AFTER = Path("\0after")


def _share_arg(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a share between 0 and 1, e.g. 0.3") from None
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r}: a share must be between 0 and 1")
    return share


def _date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a date as YYYY-MM-DD") from None


def make_parser() -> argparse.ArgumentParser:
    """`scripts/synth --synthea N ...` (generate) and `scripts/synth --check DIR` (count)."""
    p = argparse.ArgumentParser(
        prog="scripts/synth",
        description="Generate a Synthea population (org.mitre.synthea:synthea:3.3.0, fetched through Maven on first "
        "use) with GL added, as a Bulk Data folder; or check one through both engines.",
    )
    p.add_argument("--synthea", type=int, metavar="N", help="living patients to generate (Synthea -p N)")
    p.add_argument(
        "--check", nargs="?", const=_AFTER, type=Path, metavar="DIR",
        help="count unsafe proposals in the population folder DIR through both engines; bare, with --synthea: "
        "in the folder just written",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="Synthea's population seed (-s; default 1)")
    p.add_argument("--out", type=Path, metavar="DIR", help="the Bulk Data folder to write (replaced atomically)")
    p.add_argument(
        "--gl-share", type=_share_arg, default=1.0, metavar="P", help="share of patients given GL (default 1)"
    )
    p.add_argument(
        "--labs-share", type=_share_arg, default=0.0, metavar="P",
        help="share of patients given the labs and drug orders the logic reads (default 0)",
    )  # fmt: skip
    p.add_argument("--trim", action="store_true", help="keep only what the logic reads (plus Patient, Medications)")
    p.add_argument("--gzip", action="store_true", help="write Type.ndjson.gz files")
    p.add_argument(
        "--reference-date", type=_date_arg, default=DEFAULT_REFERENCE, metavar="YYYY-MM-DD",
        help=f"Synthea's 'today' (-r and -e; default {DEFAULT_REFERENCE}): fixed, so a seed is reproducible",
    )  # fmt: skip
    p.add_argument("--from-raw", type=Path, metavar="DIR", help="post-process this Synthea fhir/ folder, do not run it")
    p.add_argument("--keep-raw", type=Path, metavar="DIR", help="keep Synthea's own output here")
    p.add_argument("--at", help="with --check: evaluation time (default the reference date, 12:00Z)")
    p.add_argument("--engines", default="js,java", help="with --check: engines to run (default js,java)")
    p.add_argument("--workers", type=int, help="with --check: workers per engine (default the CPU count)")
    p.add_argument("--json", action="store_true", help="with --check: print the counts as JSON")
    return p


def _usage(args: argparse.Namespace) -> None:
    if (args.synthea is None) == (args.check is None or args.check == _AFTER):
        raise UsageError("give --synthea N (to generate, with a bare --check to count too) or --check DIR")
    if args.synthea is not None:
        if args.synthea < 1:
            raise UsageError("--synthea N needs N >= 1")
        if args.out is None:
            raise UsageError("--synthea needs --out DIR")
        if args.from_raw is not None and not (args.from_raw / "Patient.ndjson").is_file():
            raise UsageError(f"--from-raw {args.from_raw}: no Patient.ndjson there (give Synthea's fhir/ folder)")
    elif not args.check.is_dir():
        raise UsageError(f"--check {args.check}: not a folder")
    engines = [e for e in args.engines.split(",") if e]
    if not engines or set(engines) - {"js", "java"}:
        raise UsageError(f"--engines {args.engines!r}: give js, java or js,java")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")


def generate(args: argparse.Namespace) -> int:
    """Run Synthea (or take --from-raw), then post-process into --out."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="synthea-raw.") as tmp:
        if args.from_raw is not None:
            raw = args.from_raw
        else:
            target = args.keep_raw.resolve() if args.keep_raw else Path(tmp) / "synthea"
            target.mkdir(parents=True, exist_ok=True)
            sys.stderr.write(f"synth: running Synthea -p {args.synthea} -s {args.seed} -r {args.reference_date}\n")
            raw = run_synthea(args.synthea, args.seed, args.reference_date, target)
        generated = time.perf_counter() - start
        keep = logic_requirements() if args.trim else None
        report = postprocess(
            raw, args.out, seed=args.seed, reference=args.reference_date, gl_share=args.gl_share,
            labs_share=args.labs_share, keep=keep, gzip_files=args.gzip,
        )  # fmt: skip
    total = time.perf_counter() - start
    sys.stderr.write(
        f"synth: wrote {report.patients} Synthea patients ({report.with_gl} with GL, {report.with_labs} with labs; "
        f"{sum(report.resources.values())} resources) to {args.out} in {total:.1f} s "
        f"(Synthea {generated:.1f} s)\n"
    )
    if args.check:
        return run_check(args.out, args)
    return 0


def run_check(folder: Path, args: argparse.Namespace) -> int:
    """Print the counts per engine; exit DISAGREEMENT (9) when any must-be-zero count is not 0."""
    from guideline.core.errors import ExitCode

    at = args.at or f"{args.reference_date.isoformat()}T12:00:00Z"
    results = check(folder, at, [e for e in args.engines.split(",") if e], args.workers)
    if args.json:
        sys.stdout.write(json.dumps([asdict(c) for c in results], indent=2) + "\n")
    else:
        sys.stdout.write(format_counts(results, folder, at))
    return ExitCode.DISAGREEMENT if any(c.unsafe() for c in results) else 0


def format_counts(results: Sequence[Counts], folder: Path, at: str) -> str:
    """The counts as a table, one column per engine, with each violation named."""
    rows = [k for k in asdict(results[0]) if k not in ("engine", "fired", "violations")]
    lines = [f"Synthea check of {folder} at {at}", f"{'':<40}" + "".join(f"{c.engine:>10}" for c in results)]
    lines += [f"{k:<40}" + "".join(f"{getattr(c, k)!s:>10}" for c in results) for k in rows]
    for rid in sorted({r for c in results for r in c.fired}):
        lines.append(f"{'fired ' + rid:<40}" + "".join(f"{c.fired.get(rid, 0):>10}" for c in results))
    for c in results:
        lines += [f"{c.engine}: UNSAFE {v}" for v in c.violations]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/synth --synthea N ...` / `scripts/synth --check DIR`: located errors, fixed exit codes."""
    args = make_parser().parse_args(argv)
    try:
        _usage(args)
        if args.synthea is not None:
            return generate(args)
        return run_check(args.check, args)
    except GuidelineError as e:
        sys.stderr.write(f"synth: error: {e.message}\n" + "".join(f"  {d}\n" for d in e.details))
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
