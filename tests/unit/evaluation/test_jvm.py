"""Verify the JVM batch evaluator against the reference engine (Node, cql-execution): same values, same documents."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import ExitCode
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.jvm import JavaEngine, JavaPool
from guideline.evaluation.model import document
from guideline.evaluation.patient import ensure_loaded, recommend
from guideline.evaluation.population import EvaluationPlan, evaluate_population
from guideline.evaluation.records import PatientRecord, compact, open_population
from guideline.evaluation.walk import walk_pathways
from tests.support.casedata import CASES
from tests.support.tiers import is_full
from tools.synth import synth_patients, write_population

AT = "2026-06-01T12:00:00Z"
BATCH = 100


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    pkg = build_package(config, engine)
    ensure_loaded(pkg, engine)
    return pkg


@pytest.fixture(scope="module")
def jvm(package: Package, config: Config) -> Iterator[JavaEngine]:
    java = JavaEngine(package, config, 2)
    yield java
    java.close()


def _walked(value: Any) -> Any:
    # The walk reads Booleans (a condition is met only by true) and text (dynamic values); anything else is null.
    return value if isinstance(value, bool | str) else None


def _compare(
    pkg: Package, names: list[str], bundles: list[str], node: Any, java: Any, walked: list[str] | None = None
) -> list[str]:
    """Every define the walk reads, every library it reaches, and the documents: the differences, named.

    `walked`: the JVM's own documents for the same patients (its Java walk), compared with Python's walk
    of the Node engine's values, byte for byte.
    """
    plan = EvaluationPlan.of(pkg)
    diffs: list[str] = []
    for i in range(0, len(bundles), BATCH):
        chunk = bundles[i : i + BATCH]
        args = (pkg.key, plan.reachable, chunk, AT, plan.expressions)
        for k, (name, n, j) in enumerate(
            zip(names[i : i + BATCH], node.evaluate_batch(*args), java.evaluate_batch(*args), strict=True), i
        ):
            if not (n.get("ok") and j.get("ok")):
                diffs.append(
                    f"{name}: node ok={n.get('ok')} {n.get('error', '')}; java ok={j.get('ok')} {j.get('error', '')}"
                )
                continue
            for lib in plan.reachable:
                for define in plan.expressions.get(lib, []):
                    nv, jv = _walked(n["libraries"][lib].get(define)), j["libraries"][lib].get(define, "<missing>")
                    if nv != jv:
                        diffs.append(f'{name}: {lib}."{define}": node {nv!r}, java {jv!r}')
            docs = [
                document(name, AT, walk_pathways(pkg, lambda lib, row=row: row["libraries"][lib])) for row in (n, j)
            ]
            if docs[0] != docs[1]:
                diffs.append(f"{name}: recommendations differ: node {docs[0]}, java {docs[1]}")
            if walked is not None and walked[k] != compact(docs[0]) + "\n":
                diffs.append(f"{name}: the Java walk wrote {walked[k]!r}, node {docs[0]}")
    return diffs


def _java_walk(java: JavaEngine, names: list[str], bundles: list[str]) -> list[str]:
    """The JVM's own document line per patient (gate first, its rounds, the walk in Java)."""
    records = [PatientRecord(i, n, n, b) for i, (n, b) in enumerate(zip(names, bundles, strict=True))]
    results = java.walk_batch(records, AT)
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return [str(r.line) for r in results]


def test_every_case_gives_the_same_values_and_recommendations(
    package: Package, engine: Engine, jvm: JavaEngine
) -> None:
    """Verify, for each of the 48 scenarios, every define the walk reads and the document, Java vs Node."""
    loaded = [load_patient_bundle(c / "patient.json") for c in CASES]
    bundles = [json.dumps(b) for b, _ in loaded]
    walked = _java_walk(jvm, [str(pid) for _, pid in loaded], bundles)
    names = [str(pid) for _, pid in loaded]
    diffs = _compare(package, names, bundles, engine, jvm, walked)
    assert not diffs, "\n".join(diffs)


def test_a_synthetic_population_gives_the_same_values_and_recommendations(
    package: Package, engine: Engine, jvm: JavaEngine, tmp_path: Path
) -> None:
    """Verify synthetic patients (2,000 under --full, 400 by default): every define the walk reads and every
    document, Java vs Node."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(20261129, 2000 if is_full() else 400, observations=(10, 200)), "ndjson")
    records = list(open_population(pop).records())
    assert all(r.error is None for r in records)
    names = [str(r.patient) for r in records]
    bundles = [str(r.bundle_json) for r in records]
    diffs = _compare(package, names, bundles, engine, jvm, _java_walk(jvm, names, bundles))
    assert not diffs, f"{len(diffs)} difference(s):\n" + "\n".join(diffs[:50])


def test_population_mode_on_the_jvm_gives_recommend_documents(package: Package, engine: Engine, config: Config) -> None:
    """Verify the whole population path on the JVM (gate first, rounds, order) against single-patient recommend."""
    folder_records = []
    for case in CASES:
        bundle, pid = load_patient_bundle(case / "patient.json")
        folder_records.append((pid, bundle))
    with JavaPool(config, 2) as pool:
        from_records = list(evaluate_population(package, _records(folder_records), AT, pool, batch_records=7))
    assert [r.error for r in from_records] == [None] * len(CASES)
    node = {pid: _node_document(package, engine, bundle) for pid, bundle in folder_records}
    assert {r.document["patient"]: r.document for r in from_records if r.document} == node


def _records(patients: list[tuple[str, dict[str, Any]]]) -> Iterator[PatientRecord]:
    for i, (pid, bundle) in enumerate(patients):
        yield PatientRecord(i, f"case {pid}", pid, json.dumps(bundle, separators=(",", ":")), progress=i + 1)


def _node_document(pkg: Package, engine: Engine, bundle: dict[str, Any]) -> dict[str, Any]:
    return recommend(pkg, bundle, AT, engine)


def test_cli_engines_write_identical_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `--engine java` (the default; the JVM reads the NDJSON) and `--engine js` write identical results."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(17, 40, observations=(10, 100)), "ndjson")
    out = {}
    for engine in ("java", "js"):
        out[engine] = tmp_path / f"{engine}.ndjson"
        argv = ["recommend", "--population", str(pop), "--at", AT, "--workers", "2", "--out", str(out[engine])]
        assert cli.main([*argv, "--engine", engine]) == ExitCode.OK
    assert "40 evaluated, 0 skipped" in capsys.readouterr().err
    assert out["java"].read_bytes() == out["js"].read_bytes()


def _with_bad_records(good: Path, bad: Path) -> None:
    """The population with bad records between and inside patients (each kind the NDJSON reader reports)."""
    lines = good.read_bytes().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if b'"resourceType":"Patient"' in line]
    broken = {
        starts[3] + 1: b'{"resourceType":"Observation", broken\n',  # not JSON, inside patient 4
        starts[7]: b'{"resourceType":"Bundle","type":"collection"}\n',  # a Bundle line before patient 8
        starts[11]: b'{"resourceType":"Observation","subject":{"reference":"Patient/nobody"}}\n',  # no Patient
        starts[15]: b"\n   \n",  # blank lines carry nothing
        starts[19] + 2: b'{"resourceType":"Observation","value":NaN}\xff\n',  # not UTF-8
        starts[23]: b'{"resourceType":"Patient"}\n',  # a Patient without id
        starts[27] + 1: lines[starts[27]],  # a second Patient/<same id>
        starts[31] + 1: b"[1, 2]\n",  # not a resource
        starts[33] + 1: b'{"resourceType":"Observation","code":{"coding":[1]}}  x\n',  # trailing text
    }
    with bad.open("wb") as f:
        for i, line in enumerate(lines):
            f.write(broken.get(i, b""))
            f.write(line)


def test_cli_engines_report_bad_records_identically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that bad records are skipped with the same positions and messages on both engines (--keep-going).

    And from the same file gzipped (the JVM reads its decompressed copy): the same lines, the .gz file named.
    """
    good = tmp_path / "good.ndjson"
    write_population(good, synth_patients(23, 36, observations=(5, 40)), "ndjson")
    pop = tmp_path / "pop.ndjson"
    _with_bad_records(good, pop)
    gz = tmp_path / "pop.ndjson.gz"
    gz.write_bytes(gzip.compress(pop.read_bytes()))
    out, err = {}, {}
    for engine, path in (("java", pop), ("js", pop), ("java-gz", gz)):
        out[engine] = tmp_path / f"{engine}.ndjson"
        argv = ["recommend", "--population", str(path), "--at", AT, "--workers", "2", "--out", str(out[engine])]
        assert cli.main([*argv, "--engine", engine.removesuffix("-gz"), "--keep-going"]) == ExitCode.OK
        err[engine] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped:")]
    assert len(err["js"]) >= 7, err["js"]
    assert err["java"] == err["js"]
    assert err["java-gz"] == [line.replace(f"{pop}:", f"{gz}:") for line in err["java"]]
    assert out["java"].read_bytes() == out["js"].read_bytes() == out["java-gz"].read_bytes()


def test_jvm_chatter_on_stdout_does_not_break_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that JVM options printing to stdout (JFR's start-up lines, as when profiling) leave results intact.

    The JVM writes those lines to stdout whatever its logging is set to; before, they crashed the CLI
    with a JSON traceback.
    """
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(17, 12), "ndjson")
    plain, chatty = tmp_path / "plain.ndjson", tmp_path / "chatty.ndjson"
    argv = ["recommend", "--population", str(pop), "--at", AT, "--workers", "1", "--out"]
    assert cli.main([*argv, str(plain)]) == ExitCode.OK
    monkeypatch.setenv(
        "GUIDELINE_BATCH_JAVA_OPTS", f"-Xmx512m -XX:StartFlightRecording=filename={tmp_path / 'rec.jfr'} -verbose:gc"
    )
    assert cli.main([*argv, str(chatty)]) == ExitCode.OK
    assert "12 evaluated, 0 skipped" in capsys.readouterr().err
    assert chatty.read_bytes() == plain.read_bytes()
