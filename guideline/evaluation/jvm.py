"""The JVM batch evaluator (`batch/`): the package's CQL on the Java CQL engine HAPI runs, many patients on N threads.

One Java process per run, started when the package is loaded: it compiles `cql/` with the Java translator of
the engine's own release (cqframework 4.4.0, the project's translator options) and answers batch requests,
one JSON line each way (see `batch/src/main/java/.../Main.java`): define values as the Node worker's (for the
equality tests), or whole `recommend --json` lines, walked in Java over the package's PlanDefinitions by the
evaluation core the server shares (`engine/`), with the text `walkplan.compile_walk` renders (so Python never
touches a patient). For an NDJSON population the JVM also reads
the file itself; the records it would reject come back as byte ranges that Python's reader reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from guideline.content.package import Package
from guideline.core import toolchain
from guideline.core.config import Config
from guideline.core.errors import EngineError, ToolchainError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER
from guideline.evaluation.population import PatientResult
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import PatientRecord, Population, ndjson_slice
from guideline.evaluation.walkplan import compile_walk

MAIN_CLASS = "org.example.gl.batch.Main"
# C2 JIT and the parallel collector: a batch run is long enough for the slower start to pay off.
DEFAULT_JAVA_OPTS = "-Xmx1g -XX:+UseParallelGC"
# How every protocol line starts: a JSON object, or a stream tag (result, bad bytes, error, done).
_PROTOCOL_STARTS = (b"{", b"R\t", b"B\t", b"E\t", b"D\t")


def batch_classpath() -> str:
    """The evaluator jar and its dependencies as `scripts/setup` built them, or a ToolchainError."""
    target = toolchain.repo_root() / "batch" / "target"
    jar = target / "guideline-batch-0.1.0.jar"
    deps = target / "classpath.txt"
    if not jar.is_file() or not deps.is_file():
        raise ToolchainError(f"the JVM batch evaluator is not built ({jar}); {toolchain.SETUP_HINT}")
    return f"{jar}{os.pathsep}{deps.read_text(encoding='utf-8').strip()}"


class JavaEngine:
    """One JVM holding the compiled package; `evaluate_batch` as the Node worker's, evaluated on `threads`."""

    def __init__(self, pkg: Package, config: Config, threads: int, reads: Reads | None = None) -> None:
        """Start the JVM for `pkg`; its NDJSON reader skips what `reads` (default: what the package reads) skips."""
        java = shutil.which("java")
        if java is None:
            raise ToolchainError(f"java not found on PATH (the batch evaluator needs Java 17+); {toolchain.SETUP_HINT}")
        classpath = batch_classpath()
        self.key = pkg.key
        self._tmp = tempfile.TemporaryDirectory(prefix="guideline-jvm-")
        tmp = Path(self._tmp.name)
        (tmp / "valuesets.json").write_text(json.dumps(pkg.value_sets), encoding="utf-8")
        (tmp / "options.json").write_text(json.dumps(config.cql_options), encoding="utf-8")
        self.reads = reads or Reads.of(pkg)
        program = compile_walk(pkg, self.reads)
        self.walks = program is not None
        empty: dict[str, Any] = {"cards": {}, "activities": {}}
        (tmp / "program.json").write_text(json.dumps(program or empty), encoding="utf-8")
        # The JVM walks the PlanDefinitions itself (the evaluation core the server's CDS services use too)
        knowledge = [r for r in pkg.resources if r.get("resourceType") in ("PlanDefinition", "ActivityDefinition")]
        (tmp / "knowledge.json").write_text(json.dumps(knowledge if program else []), encoding="utf-8")
        self.last_stats: dict[str, Any] = {}
        self._log_path = tmp / "jvm.log"
        self._log = self._log_path.open("wb")
        opts = os.environ.get("GUIDELINE_BATCH_JAVA_OPTS", DEFAULT_JAVA_OPTS).split()
        args = ["--cql", str(config.cql_dir), "--fhirhelpers", str(toolchain.fhirhelpers_path())]
        args += ["--options", str(tmp / "options.json"), "--valuesets", str(tmp / "valuesets.json")]
        args += ["--program", str(tmp / "program.json"), "--knowledge", str(tmp / "knowledge.json")]
        self._proc = subprocess.Popen(  # noqa: S603 - our own evaluator, arguments built here
            [java, *opts, "-cp", classpath, MAIN_CLASS, *args, "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "TZ": "UTC"},
        )
        self._lock = threading.Lock()
        self._next = 0
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise EngineError(f"the JVM batch evaluator did not start: {ready.get('error', 'no answer')}")

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None  # noqa: S101 - both are PIPE
        return self._proc.stdin, self._proc.stdout

    def _line(self) -> bytes:
        """The next protocol line; anything else the JVM prints on stdout goes to its log.

        The JVM itself writes some messages to stdout whatever `Main` does with `System.out` (JFR's
        "Started recording", `-verbose:gc`, unified logging set up by GUIDELINE_BATCH_JAVA_OPTS): those
        lines start with neither `{` nor a protocol tag, so they are logged instead of breaking the protocol.
        Returns b"" when the JVM has stopped.
        """
        out = self._pipes()[1]
        while True:
            line = out.readline()
            if not line or line.startswith(_PROTOCOL_STARTS):
                return line
            self._log.write(b"stdout: " + line)

    def _read(self) -> dict[str, Any]:
        line = self._line()
        if not line:
            tail = self._log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise EngineError(f"the JVM batch evaluator stopped: {' | '.join(tail) or 'no output'}")
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError as e:
            raise EngineError(
                f"the JVM batch evaluator wrote a broken protocol line ({e}): {line[:120]!r}; "
                "check GUIDELINE_BATCH_JAVA_OPTS for options that print to stdout"
            ) from None
        return answer

    def evaluate_batch(
        self,
        key: str,
        libraries: Sequence[str],
        bundles_json: Sequence[str],
        at: str,
        expressions: Mapping[str, Sequence[str]] | None = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        plain: bool = False,  # noqa: ARG002 - the JVM has one way of evaluating
    ) -> list[dict[str, Any]]:
        """One row per bundle, in order, shaped as `Engine.evaluate_batch`'s (only Boolean and text values kept)."""
        if key != self.key:
            raise EngineError(f"no package loaded under key '{key}'")
        wanted = {k: list(v) for k, v in (expressions or {}).items()}
        request: dict[str, Any] = {"at": at, "libraries": list(libraries), "expressions": wanted}
        # The JVM sets "Evaluation Time" from `at`; other CQL parameters (typed as the Node worker's) go along.
        extra = {k: v for k, v in (parameters or {}).items() if k != EVALUATION_TIME_PARAMETER}
        if extra:
            request["parameters"] = extra
        head = json.dumps(request)
        with self._lock:
            self._next += 1
            self._send(f'{{"id":{self._next},{head[1:-1]},"bundles":[{",".join(bundles_json)}]}}\n')
            answer = self._read()
        rows: list[dict[str, Any]] = answer["rows"]
        return rows

    def walk_batch(self, records: Sequence[PatientRecord], at: str) -> list[PatientResult]:
        """One result per record, in order, walked in the JVM: the document line and what fired, or the error.

        One request per batch: a header line, then each Bundle's JSON text on a line of its own.
        """
        out = [PatientResult(r, error=r.error) for r in records]
        todo = [res for res in out if res.error is None]
        if not todo:
            return out
        with self._lock:
            self._next += 1
            head = {"id": self._next, "at": at, "walk": True, "count": len(todo)}
            head["patients"] = [str(res.record.patient) for res in todo]
            text = json.dumps(head) + "\n" + "".join(f"{res.record.bundle_json}\n" for res in todo)
            self._send(text)
            answer = self._read()
        for res, row in zip(todo, answer["rows"], strict=True):
            if row.get("ok"):
                res.line = row["line"] + "\n"
                res.fired = list(row["fired"])
                res.document = json.loads(row["line"])
            else:
                res.error = str(row.get("error", "unknown error"))
        return out

    def stream(self, population: Population, at: str) -> Iterator[PatientResult]:
        """Every record of an NDJSON population, read and evaluated by the JVM, in input order.

        Records the JVM would reject come back as byte ranges; they are read here with the same
        reader as `Population.records()`, so their positions and messages are the ones it gives.
        The JVM reads `population.text` (a `.gz` population's decompressed copy); messages name `path`.
        """
        shown, text = population.path, population.text
        with self._lock:
            self._next += 1
            self._send(json.dumps({"id": self._next, "at": at, "stream": str(text.resolve())}) + "\n")
            index = 0
            while True:
                line = self._line().decode("utf-8")
                if not line:
                    self._read()  # raises with the JVM's last words
                if line.startswith("D\t"):
                    self.last_stats = json.loads(line[2:]).get("stats", {})
                    return
                yield self._streamed(line, shown, text, index)
                index += 1

    def parse_only(self, path: Path) -> dict[str, Any]:
        """Read and group an NDJSON population and parse every resource with HAPI, nothing else (the ceiling).

        The same reader, threads and JSON library as `stream`, without evaluation: what any engine
        reading FHIR JSON pays. Returns the JVM's counters.
        """
        with self._lock:
            self._next += 1
            self._send(
                json.dumps({"id": self._next, "at": "", "stream": str(path.resolve()), "parseOnly": True}) + "\n"
            )
            line = self._line().decode("utf-8")
            if not line.startswith("D\t"):
                raise EngineError(f"the JVM batch evaluator stopped: {line.strip() or 'no output'}")
            stats: dict[str, Any] = json.loads(line[2:]).get("stats", {})
            return stats

    def cpu_seconds(self) -> float:
        """CPU time the JVM has used so far (user + system, from /proc; 0 where unavailable)."""
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _streamed(self, line: str, shown: Path, text: Path, index: int) -> PatientResult:
        tag, consumed, rest = line.split("\t", 2)
        if tag == "B":
            start, end, line_no = (int(x) for x in rest.split("\t"))
            records = ndjson_slice(text, start, end, line_no, index, shown=shown, reads=self.reads)
            if len(records) != 1 or records[0].error is None:
                raise EngineError(f"{shown}: the JVM and Python read the lines from {line_no} differently")
            records[0].progress = int(consumed)
            return PatientResult(records[0], error=records[0].error)
        first, last, rest = rest.split("\t", 2)
        where = f"{shown}:{first}" if first == last else f"{shown}:{first}-{last}"
        if tag == "R":
            fired, doc = rest.split("\t", 1)
            record = PatientRecord(index, where, progress=int(consumed))
            return PatientResult(record, line=doc, fired=fired.split(",") if fired else [])
        pid, message = rest.split("\t", 1)
        record = PatientRecord(index, where, json.loads(pid), progress=int(consumed))
        return PatientResult(record, error=str(json.loads(message)))

    def _send(self, text: str) -> None:
        stdin, _ = self._pipes()
        try:
            stdin.write(text.encode("utf-8"))
            stdin.flush()
        except OSError as e:
            raise EngineError(f"the JVM batch evaluator stopped: {e}") from None

    def stats(self) -> dict[str, int]:
        """The JVM's memory: current and peak resident set size, in KiB (from /proc; 0 where unavailable)."""
        out = {"rssKiB": 0, "maxRssKiB": 0}
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text(encoding="utf-8")
        except OSError:
            return out
        for line in status.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rssKiB" if line.startswith("VmRSS") else "maxRssKiB"] = int(line.split()[1])
        return out

    def close(self) -> None:
        """Stop the JVM (end of input, then a bounded wait) and remove its temporary files."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()
        self._tmp.cleanup()


class JavaPool:
    """The population pool for `--engine java`: one JVM, shared by two Python threads so walks overlap requests."""

    def __init__(self, config: Config, threads: int, *, read_all: bool = False) -> None:
        """A pool of `threads` JVM threads; `read_all` turns the push-down off (every resource parsed)."""
        self.config = config
        self.threads = threads
        self.read_all = read_all
        self._engine: JavaEngine | None = None
        self.engines: list[JavaEngine] = []

    def __enter__(self) -> JavaPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, pkg: Package) -> None:
        """Start the JVM for this package (once per package)."""
        if self._engine is not None and self._engine.key == pkg.key:
            return
        self.close()
        self._engine = JavaEngine(pkg, self.config, self.threads, Reads.all() if self.read_all else None)
        # Two handles on one JVM: while one thread waits for the JVM, the other walks its results.
        self.engines = [self._engine, self._engine]

    @property
    def walker(self) -> JavaEngine | None:
        """The JVM, when it walks this package's pathways itself (else Python walks its define values)."""
        return self._engine if self._engine is not None and self._engine.walks else None

    @contextmanager
    def engine(self) -> Iterator[JavaEngine]:
        """The JVM (requests are serialised inside it; the JVM spreads each batch over its threads)."""
        if self._engine is None:
            raise EngineError("the JVM batch evaluator has no package loaded")
        yield self._engine

    def stats(self) -> list[dict[str, int]]:
        """The JVM's memory (current and peak RSS, KiB)."""
        return [self._engine.stats()] if self._engine is not None else []

    def close(self) -> None:
        """Stop the JVM."""
        if self._engine is not None:
            self._engine.close()
        self._engine = None
        self.engines = []
