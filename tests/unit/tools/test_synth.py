"""Verify `scripts/synth`: deterministic bytes, realistic variety, and every recommendation firing for some."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.evaluation.population import EnginePool, evaluate_population
from guideline.evaluation.records import open_population
from tests.support import ROOT
from tests.support.casedata import RECOMMENDATIONS
from tools.synth import DEFAULT_AT, synth_patients, write_population

PAEDIATRICIAN = "http://snomed.info/sct|183517000"
GL_CODES = {"284449005", "528", "ORPHA:79086"}


def _synth(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    subprocess.run(
        [str(ROOT / "scripts" / "synth"), "--out", str(out), *args],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


@pytest.mark.parametrize("fmt", ["ndjson", "bundles", "bulk"])
def test_same_seed_same_bytes(tmp_path: Path, fmt: str) -> None:
    """Verify that the same seed and options write the same bytes, and another seed does not."""
    a = _synth(tmp_path, "a", "--patients", "30", "--seed", "5", "--format", fmt)
    b = _synth(tmp_path, "b", "--patients", "30", "--seed", "5", "--format", fmt)
    c = _synth(tmp_path, "c", "--patients", "30", "--seed", "6", "--format", fmt)

    def content(p: Path) -> list[tuple[str, bytes]]:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        return [(f.name, f.read_bytes()) for f in files]

    assert [data for _, data in content(a)] == [data for _, data in content(b)]
    assert [data for _, data in content(a)] != [data for _, data in content(c)]
    if fmt == "bundles":
        assert len(content(a)) == 30


def test_patient_does_not_depend_on_population_size() -> None:
    """Verify that patient i is the same whether written alone or in a larger population."""
    whole = list(synth_patients(3, 8))
    assert list(synth_patients(3, 2, start=5)) == whole[5:7]


def test_variety() -> None:
    """Verify the mix: with and without GL, ages 1-80, both sexes, 10 to 1,000 Observations, conditions, drugs."""
    patients = list(synth_patients(1, 300))
    ages, sexes, obs_counts, types = [], Counter(), [], Counter()
    gl = 0
    for resources in patients:
        patient = resources[0]
        assert patient["resourceType"] == "Patient"
        ages.append((DEFAULT_AT - dt.date.fromisoformat(patient["birthDate"])).days // 365)
        sexes[patient["gender"]] += 1
        obs_counts.append(sum(1 for r in resources if r["resourceType"] == "Observation"))
        types.update(r["resourceType"] for r in resources)
        gl += any(
            r["resourceType"] == "Condition"
            and r["code"]["coding"][0]["code"] in GL_CODES
            and r["clinicalStatus"]["coding"][0]["code"] in ("active", "recurrence")
            for r in resources
        )
        links = [r["subject"]["reference"] for r in resources if "subject" in r]
        assert links == [f"Patient/{patient['id']}"] * len(links)
    assert min(ages) <= 3 and max(ages) >= 75 and all(1 <= a <= 80 for a in ages)
    assert sexes["female"] > 100 and sexes["male"] > 100
    assert min(obs_counts) == 10 and max(obs_counts) > 300 and max(obs_counts) <= 1000
    assert 40 <= sum(obs_counts) / len(obs_counts) + 6 <= 90  # ~60 resources a patient on average
    assert 0.3 < gl / len(patients) < 0.7
    assert types["Condition"] > 200 and types["MedicationRequest"] > 20 and types["MedicationStatement"] > 5
    fixed = list(synth_patients(1, 3, observations=(100, 100)))
    assert [sum(1 for r in p if r["resourceType"] == "Observation") for p in fixed] == [100, 100, 100]


def test_every_recommendation_fires_for_some(config: Config, engine: Engine, tmp_path: Path) -> None:
    """Verify that across a synthetic population each recommendation fires for someone, and some get none."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(2, 150, observations=(10, 200)), "ndjson")
    pkg = build_package(config, engine)
    fired: Counter[str] = Counter()
    codes: set[str] = set()
    none = 0
    with EnginePool(2) as pool:
        at = f"{DEFAULT_AT.isoformat()}T00:00:00Z"
        for result in evaluate_population(pkg, open_population(pop).records(), at, pool):
            assert result.document is not None, result.error
            recs = result.document["recommendations"]
            none += not recs
            fired.update(r["id"] for r in recs)
            codes.update(c for r in recs for a in r["activities"] for c in a["codes"])
    assert set(fired) == set(RECOMMENDATIONS), fired
    assert min(fired.values()) >= 3, fired
    assert PAEDIATRICIAN in codes and none > 20
