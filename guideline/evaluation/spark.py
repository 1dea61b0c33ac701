"""Population mode as an Apache Spark job: a Bulk Data export grouped by patient in Spark, evaluated per partition.

The job (PySpark) reads the export's NDJSON files as text, keys each line by its patient exactly as
`bulk.BulkIndex` does (Patient id, `subject`/`patient` reference; shared resources such as Medication joined
to every patient that refers to them, transitively), groups by patient, sorts the groups into the local
path's order (by the Patient line), and evaluates each partition with the same code as `recommend
--population`: `population.evaluate_population` on a `jvm.JavaPool`, i.e. one JVM batch evaluator per Spark
Python worker, kept for the worker's life. The evaluator runs in its own process, so Spark's JVM classpath
(Jackson, Guava) never meets HAPI's and cqframework's. Results are the `recommend --json` lines, written as
NDJSON and as Parquet.

pyspark is imported inside the functions that need it: `guideline` stays importable without the `spark` extra
(`scripts/setup` installs it), and a missing pyspark is a ToolchainError naming set-up.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guideline.content.package import Package
from guideline.core import toolchain
from guideline.core.errors import BadInputError, ToolchainError, UsageError
from guideline.core.fhir import collection_bundle_json
from guideline.evaluation import bulk
from guideline.evaluation.jvm import JavaPool
from guideline.evaluation.ndjson import parse_line
from guideline.evaluation.population import evaluate_population, result_line
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import PatientRecord

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import SparkSession

# What the two output folders inside --out are called.
NDJSON_DIR = "ndjson"
PARQUET_DIR = "parquet"
# Transitive rounds of shared-resource references followed (Medication -> Substance -> ...); bulk.py follows
# them without bound, but a chain longer than this in an export would be a loop.
SHARED_ROUNDS = 8

# A line's place in the export: (file index, line number), both sort keys of the local path's order.
Place = tuple[int, int]
# A keyed line: (tag, key, file, line, text or message). Tags: P Patient, R resource of a patient,
# S shared resource (key "Type/id"), X unparseable line naming a patient, B unplaceable line, D a patient's
# resource no retrieve can return (see pushdown.py): it places the patient, its text is not carried.
Keyed = tuple[str, str, int, int, str]


def require_pyspark() -> None:
    """Raise a ToolchainError unless pyspark (the `spark` extra that `scripts/setup` installs) is importable."""
    try:
        import pyspark  # noqa: F401 - only whether it imports
    except ImportError:
        raise ToolchainError(f"pyspark is not installed in this environment; {toolchain.SETUP_HINT}") from None


# The data files of an export at a URI, as a Hadoop glob: NDJSON, plain or gzipped.
URI_GLOB = "*.{ndjson,ndjson.gz}"


def export_files(path: str) -> list[str]:
    """The export's data files, as paths Spark reads: a local folder is checked as `recommend --population` checks it.

    That is bulk.export_files: the manifest's files (with its `count`s checked) or every `*.ndjson` and
    `*.ndjson.gz`; a .gz file is read through once here to prove it is complete, and Spark's text reader
    decompresses it itself (line numbers are those of its text, as in the local path). A URI (`hdfs://…`,
    `s3a://…`) is passed to Spark as `URI/*.{ndjson,ndjson.gz}` (no manifest, no checks here).
    """
    if "://" in path and not path.startswith("file://"):
        return [f"{path.rstrip('/')}/{URI_GLOB}"]
    folder = Path(path.removeprefix("file://"))
    if not folder.is_dir():
        raise BadInputError(f"{folder}: not a folder; expected {bulk.EXPECTED_BULK}")
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    except OSError as e:
        raise BadInputError(f"{folder}: cannot list the export folder: {e.strerror or e}") from None
    ndjson = [p for p in entries if bulk.is_data_file(p)]
    manifests = [p for p in entries if p.suffix == ".json" and bulk.is_manifest(p)]
    if not ndjson:
        raise BadInputError(f"{folder}: no *.ndjson nor *.ndjson.gz file in this folder; expected {bulk.EXPECTED_BULK}")
    return [str(f.path) for f in bulk.export_files(folder, ndjson, manifests)]


# ---------------------------------------------------------------- executor side: keying lines


def key_line(file: int, name: str, item: tuple[str, int], reads: Reads | None = None) -> list[Keyed]:
    """One export line (text, 0-based index in its file) keyed by patient, shared reference or as a bad line.

    A line `reads` skips (see pushdown.py) yields nothing, before any grouping: the shuffle never carries it;
    one it drops yields its patient's key only.
    Without `reads` every line is read.
    """
    reads = reads or _READ_ALL
    text, index = item
    lineno = index + 1
    body = text.removeprefix("\ufeff") if lineno == 1 else text
    if not body.strip():
        return []
    # Spark drops the line break; the local reader parses the line with it, and JSON's error messages see it.
    raw = (body + "\n").encode("utf-8")
    found = reads.screen(raw)
    if found is True:
        return []
    if found is not None:  # dropped unparsed (pushdown.Reads.drops): only its patient's key crosses the shuffle
        return [("D", found, file, lineno, "")]
    line = parse_line(raw, lineno, bulk.BUNDLE_HINT)
    resource, problem, text = line.resource, line.problem, line.text
    if problem is not None:
        m = bulk.PATIENT_REF.search(body)
        if m is not None:
            return [("X", m[1], file, lineno, f"{name} {problem}")]
        return [("B", "", file, lineno, problem)]
    rtype = resource["resourceType"]
    if not reads.keeps(resource):
        # Its patient is placed as without the push-down; the shuffle carries the key, not the text.
        key = bulk.patient_key(resource)
        return [("D", key, file, lineno, "")] if key is not None else []
    if rtype == "Patient":
        rid = resource.get("id")
        if not (isinstance(rid, str) and rid):
            return [("B", "", file, lineno, f"line {lineno}: the Patient has no id; give it one")]
        return [("P", rid, file, lineno, text)]
    key = bulk.patient_key(resource)
    if key is not None:
        return [("R", key, file, lineno, text)]
    if isinstance(resource.get("id"), str):
        return [("S", f"{rtype}/{resource['id']}", file, lineno, text)]
    return []


_READ_ALL = Reads.all()


def references(text: str) -> list[str]:
    """The non-Patient references in a resource's JSON text ("Medication/m1"), as bulk.py finds them."""
    return [ref for ref in bulk.REFERENCE.findall(text) if not ref.startswith("Patient/")]


def group_record(files: list[str], key: str, rows: Iterable[Keyed]) -> tuple[tuple[int, int, int], PatientRecord]:
    """One patient's rows as the local path's record (same `where`, same errors), with its sort key."""
    mine = sorted(rows, key=lambda r: (r[0] != "P", r[2], r[3]))
    patients = [r for r in mine if r[0] == "P"]
    first = mine[0]
    rec = PatientRecord(0, f"{files[first[2]]}:{first[3]}", key)
    order = (1, first[2], first[3]) if patients else (2, min(r[2] for r in mine), min(r[3] for r in mine))
    poison = [r for r in mine if r[0] == "X"]
    if not patients:
        rec.error = f"no Patient resource for Patient/{key} in the export; export the Patient type too"
    elif len(patients) > 1:
        rec.error = f"a second Patient/{key} at {Path(files[patients[1][2]]).name}:{patients[1][3]}"
    elif poison:
        rec.error = poison[0][4]
    else:
        texts = [r[4] for r in mine if r[0] in "PRS"]
        rec.bundle_json = collection_bundle_json(texts)
    return order, rec


# ---------------------------------------------------------------- executor side: evaluating

# One evaluator per Spark Python worker process (Spark reuses its Python workers across tasks).
_POOLS: dict[str, JavaPool] = {}


def _pool(pkg: Package, threads: int) -> JavaPool:
    pool = _POOLS.get(pkg.key)
    if pool is None:
        pool = JavaPool(pkg.config, threads)
        pool.load(pkg)
        _POOLS[pkg.key] = pool
        atexit.register(pool.close)
    return pool


@dataclass
class Row:
    """One evaluated (or skipped) patient, as the job's partitions yield it."""

    order: tuple[int, int, int]
    where: str
    patient: str | None
    line: str | None = None  # the `recommend --json` line, without its line break
    error: str | None = None
    fired: list[str] = field(default_factory=list)


def evaluate_partition(
    pkg: Package, at: str, threads: int, groups: Iterable[tuple[tuple[int, int, int], PatientRecord]]
) -> Iterator[Row]:
    """Evaluate one partition's records, in order, on this worker's JVM evaluator (started on first use)."""
    items = list(groups)
    if not items:
        return
    orders = [o for o, _ in items]
    records = [r for _, r in items]
    for i, rec in enumerate(records):
        rec.index = i
    pool = _pool(pkg, threads)
    for order, result in zip(orders, evaluate_population(pkg, records, at, pool), strict=True):
        rec = result.record
        if result.document is None:
            yield Row(order, rec.where, rec.patient, error=result.error)
        else:
            fired = [r["id"] for r in result.document["recommendations"]]
            yield Row(order, rec.where, rec.patient, result_line(result).rstrip("\n"), fired=fired)


# ---------------------------------------------------------------- driver side


@dataclass
class JobSummary:
    """What the job did: counts, what fired, and the skipped records with where and why."""

    records: int = 0
    evaluated: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)
    partitions: int = 0


def expand_uris(spark: SparkSession, files: list[str]) -> list[str]:
    """`URI/*.{ndjson,ndjson.gz}` (see export_files) as the files it matches, by name, through Hadoop's FileSystem."""
    sc = spark.sparkContext
    out: list[str] = []
    for f in files:
        if "://" not in f or "*" not in f:
            out.append(f)
            continue
        pattern = sc._jvm.org.apache.hadoop.fs.Path(f)  # type: ignore[union-attr]
        found = pattern.getFileSystem(sc._jsc.hadoopConfiguration()).globStatus(pattern) or []
        # By name without .gz, as the local path orders them.
        names = sorted(
            (str(st.getPath().toString()) for st in found if st.isFile()), key=lambda n: n.removesuffix(".gz")
        )
        if not names:
            raise BadInputError(
                f"{f.rsplit('/', 1)[0]}: no *.ndjson nor *.ndjson.gz file there; expected {bulk.EXPECTED_BULK}"
            )
        out += names
    return out


def keyed_lines(spark: SparkSession, files: list[str], reads: Reads) -> RDD[Keyed]:
    """Every line of every file that `reads` keeps, keyed; line numbers from each file's own order.

    Hadoop splits keep each file's order.
    """
    sc = spark.sparkContext
    # Lines end at LF only, as in the local reader: a lone CR inside a line is JSON whitespace, not a line end.
    sc._jsc.hadoopConfiguration().set("textinputformat.record.delimiter", "\n")
    parts = []
    for i, path in enumerate(files):
        name = Path(path).name
        lines: RDD[tuple[str, int]] = sc.textFile(path).zipWithIndex()
        parts.append(lines.flatMap(functools.partial(key_line, i, name, reads=reads)))
    return sc.union(parts)


def _attach_shared(keyed: RDD[Keyed], partitions: int) -> RDD[Keyed]:
    """Shared resources (no patient) as rows of every patient that refers to them, transitively."""
    shared = (
        keyed.filter(lambda r: r[0] == "S")
        .map(lambda r: (r[1], r))
        .reduceByKey(lambda a, b: a if (a[2], a[3]) <= (b[2], b[3]) else b, partitions)
    )
    if shared.isEmpty():
        return keyed.filter(lambda r: r[0] != "S")
    own = keyed.filter(lambda r: r[0] in "PR")
    wanted = own.flatMap(lambda r: [(ref, r[1]) for ref in references(r[4])]).distinct(partitions)
    seen = wanted
    found = []
    for _ in range(SHARED_ROUNDS):
        hits = wanted.join(shared, partitions).map(lambda kv: (kv[1][0], kv[1][1])).cache()
        found.append(hits.map(lambda pr: ("S", pr[0], pr[1][2], pr[1][3], pr[1][4])))
        nxt = hits.flatMap(lambda pr: [(ref, pr[0]) for ref in references(pr[1][4])]).distinct(partitions)
        wanted = nxt.subtract(seen, partitions).cache()
        if wanted.isEmpty():
            break
        seen = seen.union(wanted)
    return keyed.filter(lambda r: r[0] != "S").union(keyed.context.union(found))


def grouped_records(
    spark: SparkSession, files: list[str], partitions: int, reads: Reads | None = None
) -> RDD[tuple[Any, PatientRecord]]:
    """(sort key, record) per patient or unplaceable line, sorted into the local path's order.

    `reads` (default: everything) is applied as each line is read, before the group-by.
    """
    from pyspark import StorageLevel

    keyed = keyed_lines(spark, files, reads or Reads.all()).persist(StorageLevel.MEMORY_AND_DISK)
    bad = keyed.filter(lambda r: r[0] == "B").map(
        lambda r: ((0, r[2], r[3]), PatientRecord(0, f"{files[r[2]]}:{r[3]}", None, error=r[4]))
    )
    rows = _attach_shared(keyed, partitions).filter(lambda r: r[0] != "B")
    groups = rows.map(lambda r: (r[1], r)).groupByKey(partitions).map(lambda kv: group_record(files, kv[0], kv[1]))
    # Kept: sortByKey samples its input in a job of its own before sorting it.
    return bad.union(groups).persist(StorageLevel.MEMORY_AND_DISK).sortByKey(numPartitions=partitions)


def run_job(  # noqa: PLR0913 - the job's inputs, each from its own flag
    spark: SparkSession,
    pkg: Package,
    files: list[str],
    at: str,
    out: str,
    partitions: int,
    *,
    read_all: bool = False,
) -> JobSummary:
    """Evaluate the export and write `out/ndjson` (the result lines) and `out/parquet`, atomically (temp + rename).

    Lines the package never reads are dropped as they are read (see pushdown.py), unless `read_all`.
    """
    from pyspark import StorageLevel
    from pyspark.sql import types as T

    sc = spark.sparkContext
    files = expand_uris(spark, files)
    shipped = sc.broadcast(pkg)
    threads = int(sc.getConf().get("spark.task.cpus", "1"))
    results = (
        grouped_records(spark, files, partitions, Reads.all() if read_all else Reads.of(pkg))
        .mapPartitions(lambda part: evaluate_partition(shipped.value, at, threads, part))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    schema = T.StructType(
        [
            T.StructField("patient", T.StringType(), False),
            T.StructField("evaluatedAt", T.StringType(), False),
            T.StructField("recommendations", T.ArrayType(T.StringType(), False), False),
            T.StructField("document", T.StringType(), False),
        ]
    )
    ok = results.filter(lambda r: r.line is not None).map(lambda r: (r.patient, at, r.fired, r.line))
    frame = spark.createDataFrame(ok, schema)
    hadoop_path = sc._jvm.org.apache.hadoop.fs.Path  # type: ignore[union-attr]
    final = hadoop_path(out)
    fs = final.getFileSystem(sc._jsc.hadoopConfiguration())
    tmp = hadoop_path(final.getParent(), f".{final.getName()}.{uuid.uuid4().hex}.tmp")
    try:
        frame.select("document").write.text(f"{tmp.toString()}/{NDJSON_DIR}")
        frame.write.parquet(f"{tmp.toString()}/{PARQUET_DIR}")
        summary = _summarise(results)
        summary.partitions = results.getNumPartitions()
        if fs.exists(final):
            fs.delete(final, True)
        if not fs.rename(tmp, final):
            raise BadInputError(f"{out}: could not move the results into place from {tmp.toString()}")
    finally:
        if fs.exists(tmp):
            fs.delete(tmp, True)
        results.unpersist()
    return summary


def _summarise(results: RDD[Row]) -> JobSummary:
    summary = JobSummary()
    counts = results.map(lambda r: (r.line is not None, len(r.fired))).countByKey()
    summary.evaluated = counts.get(True, 0)
    summary.records = summary.evaluated + counts.get(False, 0)
    summary.fired = dict(results.flatMap(lambda r: r.fired).countByValue())
    skipped = results.filter(lambda r: r.line is None).map(lambda r: (r.order, r.where, r.error or "")).collect()
    summary.skipped = [(w, e) for _, w, e in sorted(skipped)]
    return summary


def check_output(out: str) -> None:
    """A local --out must be new or an earlier result of this job (it is replaced whole); URIs are not checked."""
    if "://" in out and not out.startswith("file://"):
        return
    path = Path(out.removeprefix("file://"))
    if not path.resolve().parent.is_dir():
        raise UsageError(f"{out}: {path.resolve().parent} is not an existing folder; create it or choose another --out")
    if path.exists() and not (path.is_dir() and sorted(p.name for p in path.iterdir()) == [NDJSON_DIR, PARQUET_DIR]):
        raise UsageError(
            f"{out}: exists and is not an earlier result of this job (a folder holding only {NDJSON_DIR}/ and "
            f"{PARQUET_DIR}/); choose a new --out"
        )


def spark_session(master: str | None, app: str = "guideline-population") -> SparkSession:
    """A Spark session: `master` if given, else the one spark-submit set, else embedded `local[*]`; no web UI."""
    require_pyspark()
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if master is None or master.startswith("local"):
        # Embedded: Spark's JVM binds to loopback (it otherwise picks the host's first address and warns).
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Under spark-submit the gateway to its JVM already holds spark.master; started here, it holds none.
    SparkContext._ensure_initialized()
    conf = SparkConf()
    chosen = master or conf.get("spark.master", None) or "local[*]"
    builder = SparkSession.builder.appName(app).master(chosen)
    # No web UI and no console progress bar: the job reports on stderr itself.
    builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    if chosen.startswith("local"):
        # Embedded mode talks to itself only: bind the driver to loopback.
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
        # Python workers run this interpreter (the venv holding guideline), whatever python3 is on PATH.
        builder = builder.config("spark.pyspark.python", sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
