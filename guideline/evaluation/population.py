"""Population mode: stream many patients through N long-lived CQL workers, results in input order."""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core.errors import BadInputError, UsageError
from guideline.core.evaltime import time_parameters
from guideline.core.fhir import CQL_IDENTIFIER_LANGUAGES, ActionStep, iter_actions, walk_pathway
from guideline.evaluation.model import document
from guideline.evaluation.patient import ensure_loaded
from guideline.evaluation.records import PatientRecord, Population, compact
from guideline.evaluation.walk import pathways, walk_pathways

# A batch closes at this many records or this much bundle JSON, whichever comes first: large
# enough that the per-request cost (~1 ms) vanishes, small enough that memory stays flat and
# every worker gets work early (in flight at once: 2 batches per worker).
R = TypeVar("R")
T = TypeVar("T")
BATCH_RECORDS = 64
BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class PatientResult:
    """The outcome for one record: the `recommend --json` document, or why it was skipped."""

    record: PatientRecord
    document: dict[str, Any] | None = None
    error: str | None = None
    line: str | None = None  # the document as the JVM wrote it (the output line, newline included)
    fired: list[str] | None = None  # the ids of the recommendations that fired, when the JVM walked

    @property
    def evaluated(self) -> bool:
        """Whether the record was evaluated (else `error` says why it was skipped)."""
        return self.error is None and (self.document is not None or self.line is not None)


class _Missing(Exception):
    """The walk reached a library not evaluated yet for this patient."""

    def __init__(self, library: str) -> None:
        super().__init__(library)
        self.library = library


def _cql_identifiers(action: dict[str, Any]) -> list[str]:
    """The CQL defines an action's applicability conditions and dynamic values name."""
    exprs = [c.get("expression") for c in action.get("condition", []) if c.get("kind") == "applicability"]
    exprs += [dv.get("expression") for dv in action.get("dynamicValue", [])]
    return [
        e["expression"]
        for e in exprs
        if isinstance(e, dict)
        and e.get("language") in CQL_IDENTIFIER_LANGUAGES
        and isinstance(e.get("expression"), str)
    ]


@dataclass
class EvaluationPlan:
    """Which libraries a population evaluation asks the worker for, and which defines of each.

    `gate`: the pathways' own libraries, evaluated for everyone first; most patients in a
    registry are stopped there. `reachable`: every library a walk can reach, evaluated in a
    second request only for patients who pass the gate.
    """

    gate: list[str]
    reachable: list[str]
    expressions: dict[str, list[str]]

    @classmethod
    def of(cls, pkg: Package) -> EvaluationPlan:
        """The plan for a package: every action of every pathway and of every plan they reach.

        Libraries are listed in the order the walk first meets their plans. A plan that reaches
        itself through its actions is a ContentError (see `iter_actions`).
        """
        gate: list[str] = []
        reachable: list[str] = []
        expressions: dict[str, set[str]] = {}

        def meet(plan: dict[str, Any]) -> None:
            name = pkg.primary_library_name(plan)
            if name is not None and name not in reachable:
                reachable.append(name)

        def visit(step: ActionStep, target: dict[str, Any] | None) -> None:
            name = pkg.primary_library_name(step.plan)
            if name is not None:
                expressions.setdefault(name, set()).update(_cql_identifiers(step.action))
            if target is not None and target.get("resourceType") == "PlanDefinition":
                meet(target)  # before its actions, as the walk meets it

        def resolved(step: ActionStep) -> dict[str, Any] | None:
            ref = step.action.get("definitionCanonical")
            return pkg.resolve(ref) if isinstance(ref, str) else None

        for pathway in pathways(pkg):
            name = pkg.primary_library_name(pathway)
            if name is not None and name not in gate:
                gate.append(name)
            meet(pathway)
            for reached in walk_pathway(pathway, pkg.resolve):
                visit(reached.step, reached.target)
                if reached.recommendation is not None:
                    # Every branch, as any patient may take it; what the recommendation reaches in turn too.
                    for step in iter_actions(reached.recommendation, pkg.resolve):
                        visit(step, resolved(step))
        return cls(gate, reachable, {k: sorted(v) for k, v in expressions.items()})


class BatchEngine(Protocol):
    """What population mode asks of an engine: the Node worker (`Engine`) or the JVM (`jvm.JavaEngine`)."""

    def evaluate_batch(
        self,
        key: str,
        libraries: Sequence[str],
        bundles_json: Sequence[str],
        at: str,
        expressions: Mapping[str, Sequence[str]] | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        plain: bool = False,
    ) -> list[dict[str, Any]]:
        """One row per bundle: {"ok": true, "libraries": {library: {define: value}}} or {"ok": false, "error"}."""
        ...


class Walker(Protocol):
    """An engine that also walks the pathway itself (the JVM): whole documents back, not define values."""

    def walk_batch(self, records: Sequence[PatientRecord], at: str) -> list[PatientResult]:
        """One result per record, in order: the document line, or why the record was skipped."""
        ...

    def stream(self, population: Population, at: str) -> Iterator[PatientResult]:
        """Every record of an NDJSON population, read by the engine itself, in input order."""
        ...


class Pool(Protocol):
    """Engines for population mode: `EnginePool` (Node workers) or `jvm.JavaPool` (one JVM, N threads)."""

    @property
    def walker(self) -> Walker | None:
        """The engine that walks the pathway itself, if the pool has one and the package allows it."""
        ...

    @property
    def engines(self) -> Sequence[Any]:
        """One entry per batch evaluated at once."""
        ...

    def load(self, pkg: Package) -> None:
        """Give the engines the package."""
        ...

    def engine(self) -> AbstractContextManager[BatchEngine]:
        """A free engine for the duration of the block."""
        ...

    def stats(self) -> list[dict[str, int]]:
        """Each engine process's memory (current and peak RSS, KiB)."""
        ...


class Evaluator:
    """Evaluates batches of records on one engine: the same walk as `recommend`, batched requests."""

    def __init__(self, pkg: Package, at: str, *, plain: bool = False) -> None:
        self.pkg = pkg
        self.at = at
        self.plain = plain  # without the worker's population speed-ups: for tests and benchmarks
        self.key = pkg.key
        self.plan = EvaluationPlan.of(pkg)

    def evaluate(self, engine: BatchEngine, records: list[PatientRecord]) -> list[PatientResult]:
        """One result per record, in order: each walk asks for the libraries it reaches, in rounds."""
        out = [PatientResult(r, error=r.error) for r in records]
        have: list[dict[str, dict[str, Any]]] = [{} for _ in records]
        want: dict[int, list[str]] = {i: list(self.plan.gate) for i, r in enumerate(records) if r.error is None}
        # Each round evaluates what the walks asked for; two rounds suffice for a pathway whose
        # recommendations are all in `reachable`, the bound only guards against a content loop.
        for _ in range(len(self.plan.reachable) + 2):
            if not want:
                break
            by_libraries: dict[tuple[str, ...], list[int]] = {}
            for i, libs in want.items():
                by_libraries.setdefault(tuple(libs), []).append(i)
            asked: list[int] = []
            for names, idx in by_libraries.items():
                if names:
                    self._request(
                        engine, names, [records[i] for i in idx], [have[i] for i in idx], [out[i] for i in idx]
                    )
                asked.extend(idx)
            want = {}
            for i in sorted(asked):
                if out[i].error is None:
                    missing = self._walk(out[i], have[i])
                    if missing is not None:
                        want[i] = missing
        for i in want:
            out[i].error = "the pathway walk did not finish (library evaluation loop); check the PlanDefinitions"
        return out

    def _request(
        self,
        engine: BatchEngine,
        libraries: tuple[str, ...],
        records: list[PatientRecord],
        have: list[dict[str, dict[str, Any]]],
        results: list[PatientResult],
    ) -> None:
        bundles = [r.bundle_json or "" for r in records]
        expressions = {k: v for k, v in self.plan.expressions.items() if k in libraries}
        rows = engine.evaluate_batch(
            self.key, libraries, bundles, self.at, expressions, time_parameters(self.at), plain=self.plain
        )
        for row, got, res in zip(rows, have, results, strict=True):
            if row.get("ok"):
                got.update(row.get("libraries") or {})
            else:
                res.error = f"the CQL engine failed on this patient: {row.get('error', 'unknown error')}"

    def _walk(self, result: PatientResult, have: dict[str, dict[str, Any]]) -> list[str] | None:
        """Finish the result, or name the libraries to evaluate next (all it may still reach)."""

        def fetch(library: str) -> dict[str, Any]:
            if library in have:
                return have[library]
            raise _Missing(library)

        try:
            recs = walk_pathways(self.pkg, fetch)
        except _Missing as m:
            rest = [name for name in self.plan.reachable if name not in have]
            return rest if m.library in rest else [m.library]
        result.document = document(str(result.record.patient), self.at, recs)
        return None


class EnginePool:
    """N long-lived CQL workers (one Node process each), started together, each holding the package."""

    walker: Walker | None = None  # the Node workers return define values; the walk is Python's

    def __init__(self, size: int) -> None:
        if size < 1:
            raise UsageError(f"--workers must be at least 1, not {size}")
        self.engines: list[Engine] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def start() -> None:
            try:
                eng = Engine()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the others started
                with lock:
                    errors.append(e)
                return
            with lock:
                self.engines.append(eng)

        # Starting a worker takes ~0.3 s of mostly module loading: start them side by side.
        threads = [threading.Thread(target=start, daemon=True) for _ in range(size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        self._free: queue.Queue[Engine] = queue.Queue()
        for eng in self.engines:
            self._free.put(eng)

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker."""
        for eng in self.engines:
            eng.close()

    def load(self, pkg: Package) -> None:
        """Give every worker the package (once per worker and package)."""
        for eng in self.engines:
            ensure_loaded(pkg, eng)

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        """A free worker for the duration of the block (waits until one is free)."""
        eng = self._free.get()
        try:
            yield eng
        finally:
            self._free.put(eng)

    def stats(self) -> list[dict[str, int]]:
        """Each worker's memory (current and peak resident set size, KiB), for benchmarks."""
        return [eng.stats() for eng in self.engines]


# The first batch holds this many records and each next one twice as many, up to the batch size:
# input is streamed, so its length is unknown, and a small population (20 patients for a quick
# screen) would otherwise be one batch on one worker while the others idle.
FIRST_BATCH_RECORDS = 4


def record_batches(records: Iterable[PatientRecord], size: int, max_bytes: int) -> Iterator[list[PatientRecord]]:
    """The records in input order, in batches of at most `size` records and about `max_bytes` (the first smaller)."""
    batch: list[PatientRecord] = []
    nbytes = 0
    limit = min(size, FIRST_BATCH_RECORDS)
    for rec in records:
        batch.append(rec)
        nbytes += len(rec.bundle_json or "")
        if len(batch) >= limit or nbytes >= max_bytes:
            yield batch
            batch, nbytes = [], 0
            limit = min(size, limit * 2)
    if batch:
        yield batch


def evaluate_population(
    pkg: Package,
    records: Iterable[PatientRecord],
    at: str,
    pool: Pool,
    *,
    batch_records: int = BATCH_RECORDS,
    batch_bytes: int = BATCH_BYTES,
    plain: bool = False,
) -> Iterator[PatientResult]:
    """Evaluate every record, yielding results in input order as soon as they are ready.

    Batches go to the pool's workers in parallel, at most two per worker in flight, so memory
    is bounded by the batch size whatever the size of the population.
    """
    pool.load(pkg)
    evaluator = Evaluator(pkg, at, plain=plain)
    workers = len(pool.engines)
    walker = None if plain else pool.walker

    def run(batch: list[PatientRecord]) -> list[PatientResult]:
        if walker is not None:
            return walker.walk_batch(batch, at)
        with pool.engine() as eng:
            return evaluator.evaluate(eng, batch)

    return run_in_order(record_batches(records, batch_records, batch_bytes), run, workers)


def run_in_order(batches: Iterable[list[R]], run: Callable[[list[R]], list[T]], workers: int) -> Iterator[T]:
    """`run` on each batch in `workers` threads, the results yielded in batch order as soon as they are ready.

    At most two batches per worker are in flight (one running, one waiting), so memory is bounded by the batch
    size whatever the size of the input; a failure in any batch is raised here, and the batches not yet run are
    cancelled. Population mode and the indicators both evaluate through it.
    """
    inflight: deque[Future[list[T]]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="population")
    try:
        for batch in batches:
            if len(inflight) >= 2 * workers:
                yield from inflight.popleft().result()
            inflight.append(executor.submit(run, batch))
        while inflight:
            yield from inflight.popleft().result()
    finally:
        for fut in inflight:
            fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def evaluate_opened(pkg: Package, population: Population, at: str, pool: Pool) -> Iterator[PatientResult]:
    """Every record of an opened population, in input order: an NDJSON file read by the JVM itself when it walks.

    Otherwise (a folder of Bundles, a Bulk export, the Node workers) Python reads the records and
    `evaluate_population` sends them to the pool.
    """
    pool.load(pkg)
    walker = pool.walker
    if walker is not None and population.kind == "ndjson":
        return walker.stream(population, at)
    return evaluate_population(pkg, population.records(), at, pool)


# ---------------------------------------------------------------- output


def result_line(result: PatientResult) -> str:
    """One output line: the `recommend --json` document, compact (as the JVM wrote it, or from the document)."""
    if result.line is not None:
        return result.line
    return compact(result.document) + "\n"


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at `path` only when the block succeeds (temp file, then rename)."""
    path = path.resolve()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise BadInputError(f"{path}: cannot write the results: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are ordinary output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Summary:
    """Counts for the end of a population run."""

    records: int = 0
    evaluated: int = 0
    skipped: int = 0
    fired: dict[str, int] = field(default_factory=dict)

    def add(self, result: PatientResult) -> None:
        """Count one result: evaluated (and what fired) or skipped."""
        self.records += 1
        if not result.evaluated:
            self.skipped += 1
            return
        self.evaluated += 1
        ids = result.fired
        if ids is None:
            ids = [rec["id"] for rec in (result.document or {}).get("recommendations", [])]
        for rid in ids:
            self.fired[rid] = self.fired.get(rid, 0) + 1


def progress_line(done: int, units: int, total: int, unit: str, elapsed: float, width: int = 30) -> str:
    """A one-line progress bar: patients done, rate, percent of the input and ETA."""
    frac = min(1.0, units / total) if total else 1.0
    filled = int(frac * width)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
    eta_text = f"{int(eta) // 60}:{int(eta) % 60:02d}" if frac > 0 else "?:??"
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:,} patients  {frac:4.0%}  {rate:,.0f}/s  ETA {eta_text}"
