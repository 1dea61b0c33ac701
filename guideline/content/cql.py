"""CQL compile and evaluate through one long-lived Node worker (reference translator + cql-execution)."""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from guideline.content.sources import cql_header
from guideline.core import toolchain
from guideline.core.config import load_config
from guideline.core.errors import EngineError, ToolchainError

# Every worker call is bounded: a cold compile with FHIRHelpers takes ~3 s on 2 cores, a
# population chunk a few seconds; anything near this limit means the worker is wedged.
DEFAULT_TIMEOUT_S = 300.0
# Where compiled libraries are kept between runs (see CompileCache): a folder, or "off".
CACHE_ENV = "GUIDELINE_CQL_CACHE"


@dataclass(frozen=True)
class CqlMessage:
    """A translator message with the library it is in and its 1-based position."""

    severity: str
    message: str
    library: str
    line: int | None = None
    col: int | None = None
    end_line: int | None = None
    end_col: int | None = None
    kind: str = ""

    @property
    def location(self) -> str:
        return f"{self.line}:{self.col}" if self.line is not None else ""

    def render(self, file: str | None = None) -> str:
        """The message as one `file:line:col: severity: message (library L)` line."""
        where = file or f"{self.library}.cql"
        pos = f":{self.location}" if self.location else ""
        return f"{where}{pos}: {self.severity}: {self.message} (library {self.library})"


@dataclass
class CompileResult:
    """The outcome of compiling one library: its ELM (None if it failed) and the translator's messages."""

    library: str
    elm: dict[str, Any] | None
    messages: list[CqlMessage] = field(default_factory=list)

    @property
    def errors(self) -> list[CqlMessage]:
        return [m for m in self.messages if m.severity == "error"]

    @property
    def warnings(self) -> list[CqlMessage]:
        return [m for m in self.messages if m.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.elm is not None and not self.errors


class Worker:
    """The Node process; requests are answered in order over JSON lines."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        node = toolchain.node_executable()
        toolchain.node_modules()
        env = {**os.environ, "TZ": "UTC"}
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stderr_tail: list[str] = []
        try:
            self._proc = subprocess.Popen(
                [node, str(toolchain.WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env=env,
                cwd=str(toolchain.repo_root()),
            )
        except OSError as e:
            raise ToolchainError(f"cannot start the CQL worker ({node}): {e}") from None
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._read_response(0)

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None  # noqa: S101 - set by Popen(stderr=PIPE)
        for line in self._proc.stderr:
            self._stderr_tail.append(line.rstrip("\n"))
            del self._stderr_tail[:-40]

    def _read_response(self, want_id: int) -> dict[str, Any]:
        assert self._proc.stdout is not None  # noqa: S101
        result: list[str] = []

        def read() -> None:
            assert self._proc.stdout is not None  # noqa: S101
            result.append(self._proc.stdout.readline())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            self.close()
            raise EngineError(f"CQL worker did not answer within {self.timeout_s:.0f} s; it was stopped")
        line = result[0] if result else ""
        if not line:
            tail = "\n".join(self._stderr_tail[-20:])
            raise ToolchainError(f"CQL worker exited unexpectedly; its last log lines:\n{tail}")
        msg: dict[str, Any] = json.loads(line)
        if msg.get("id") != want_id:
            raise EngineError(f"CQL worker protocol out of step (expected id {want_id}, got {msg.get('id')})")
        return msg

    def call(self, op: str, raw_json: Mapping[str, str] | None = None, **payload: Any) -> Any:
        """One request and its answer. `raw_json` adds members whose values are JSON text already
        (one line, no line breaks), so data read as text is not parsed and encoded again."""
        with self._lock:
            if self._proc.poll() is not None:
                raise ToolchainError("CQL worker is not running")
            rid = next(self._ids)
            assert self._proc.stdin is not None  # noqa: S101
            request = json.dumps({"id": rid, "op": op, **payload})
            if raw_json:
                request = request[:-1] + "".join(f",{json.dumps(k)}:{v}" for k, v in raw_json.items()) + "}"
            try:
                self._proc.stdin.write(request + "\n")
                self._proc.stdin.flush()
            except BrokenPipeError:
                raise ToolchainError("CQL worker closed its input unexpectedly") from None
            msg = self._read_response(rid)
        if not msg.get("ok"):
            err = msg.get("error") or {}
            raise EngineError(f"CQL worker {op} failed: {err.get('message', 'unknown error')}")
        return msg.get("result")

    def close(self) -> None:
        """End the Node process: close its input and wait, killing it if it does not exit in 5 s."""
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=5)


def _to_message(m: Mapping[str, Any], default_library: str) -> CqlMessage:
    return CqlMessage(
        severity=str(m.get("severity", "error")),
        message=str(m.get("message", "")),
        library=str(m.get("library") or default_library),
        line=m.get("startLine"),
        col=m.get("startChar"),
        end_line=m.get("endLine"),
        end_col=m.get("endChar"),
        kind=str(m.get("kind", "")),
    )


class Engine:
    """Compiles CQL and evaluates ELM for patients, reusing one Node worker.

    Use as a context manager, or `shared_engine()` for a process-wide instance.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._worker = Worker(timeout_s)
        self._loaded: set[str] = set()
        self._cache = CompileCache.from_environment()
        self._versions: dict[str, str] | None = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker."""
        self._worker.close()

    def versions(self) -> dict[str, str]:
        """The versions of the toolchain the worker runs (CQL translator, engine, ...)."""
        result: dict[str, str] = self._worker.call("ping")
        return result

    def compile(
        self,
        target: str,
        libraries: Mapping[str, str],
        options: Mapping[str, Any],
    ) -> CompileResult:
        """Compile library `target`; `libraries` maps CQL library names to source text.

        FHIRHelpers 4.0.1 is always available to include.
        """
        sources = {"FHIRHelpers": toolchain.fhirhelpers_text(), **libraries}
        cache = self._cache
        if cache is None:
            res = self._worker.call("compile", target=target, libraries=sources, options=dict(options))
        else:
            if self._versions is None:
                self._versions = self.versions()  # once per worker: part of every key
            key = cache.key(target, sources, options, self._versions)
            res = cache.get(key)
            if res is None:
                res = self._worker.call("compile", target=target, libraries=sources, options=dict(options))
                cache.put(key, res)
        messages = [_to_message(m, target) for m in res.get("messages", [])]
        return CompileResult(library=target, elm=res.get("elm"), messages=messages)

    def load(
        self,
        key: str,
        elm_libraries: Mapping[str, dict[str, Any]],
        value_sets: Mapping[str, Mapping[str, list[dict[str, str]]]] | None = None,
    ) -> None:
        """Register ELM libraries and value-set expansions ({url: {version: [{system, code}]}})."""
        self._worker.call("load", key=key, libraries=dict(elm_libraries), valueSets=dict(value_sets or {}))
        self._loaded.add(key)

    def evaluate(
        self,
        key: str,
        library: str,
        bundles: Iterable[dict[str, Any]],
        at: str,
        parameters: Mapping[str, Any] | None = None,
        expressions: list[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Evaluate `library` for each patient bundle at `at` (ISO datetime WITH offset).

        Returns {patient id: {define: value}} with values in the worker's JSON shape.
        """
        if key not in self._loaded:
            raise EngineError(f"no package loaded under key '{key}'")
        res = self._worker.call(
            "execute",
            key=key,
            library=library,
            bundles=list(bundles),
            executionDateTime=at,
            parameters=dict(parameters or {}),
            expressions=expressions,
        )
        patients: dict[str, dict[str, Any]] = res["patients"]
        return patients

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
        """Evaluate several libraries for many patients in one worker request.

        `bundles_json` holds one collection Bundle per patient as JSON text without line breaks.
        `expressions` limits the defines evaluated per library (default: all). Returns one entry
        per bundle, in order: {"ok": true, "libraries": {library: {define: value}}} or
        {"ok": false, "error": message} when that patient's evaluation failed. `plain` turns off
        the worker's population speed-ups (the reference that tests and benchmarks compare with).
        """
        if key not in self._loaded:
            raise EngineError(f"no package loaded under key '{key}'")
        res = self._worker.call(
            "batch",
            raw_json={"bundles": "[" + ",".join(bundles_json) + "]"},
            key=key,
            libraries=list(libraries),
            expressions={k: list(v) for k, v in (expressions or {}).items()},
            executionDateTime=at,
            parameters=dict(parameters or {}),
            plain=plain,
        )
        results: list[dict[str, Any]] = res["results"]
        return results

    def stats(self) -> dict[str, int]:
        """The worker's memory: current and peak resident set size, in KiB."""
        result: dict[str, int] = self._worker.call("stats")
        return result


_shared: Engine | None = None


class CompileCache:
    """Compiled libraries kept between runs: the translator's answer for one target, its sources and options.

    Translating the package's libraries costs seconds of every command that builds the package (`recommend`,
    `measure`, `build`, the tests), although the CQL rarely changes between two runs. The translator is
    deterministic, so its answer (ELM and messages) is kept under a digest of everything it depends on: the
    target, the text of every library it may include (FHIRHelpers too), the options, the toolchain's versions
    and the worker's own code. A changed library, option or toolchain is a new key, never a stale answer.
    Entries are written whole (temp file, then rename), so two runs sharing the folder never read half an
    entry; an unreadable entry is compiled again. The folder is `.toolchain/cql-cache` unless GUIDELINE_CQL_CACHE
    names another (or is `off`); it keeps the newest MAX_ENTRIES entries.
    """

    MAX_ENTRIES = 400

    def __init__(self, folder: Path) -> None:
        """A cache in `folder` (created on the first write)."""
        self.folder = folder
        self._worker_digest = hashlib.sha256(toolchain.WORKER.read_bytes()).hexdigest()

    @classmethod
    def from_environment(cls) -> CompileCache | None:
        """The cache GUIDELINE_CQL_CACHE asks for: its folder, none when `off`, else `.toolchain/cql-cache`."""
        value = os.environ.get(CACHE_ENV, "").strip()
        if value.lower() == "off":
            return None
        return cls(Path(value) if value else toolchain.toolchain_dir() / "cql-cache")

    def key(self, target: str, sources: Mapping[str, str], options: Mapping[str, Any], versions: Any) -> str:
        """The digest of everything the translator's answer depends on."""
        basis = {
            "target": target,
            "sources": dict(sources),
            "options": dict(options),
            "versions": versions,
            "worker": self._worker_digest,
        }
        return hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The kept answer for `key`, or None (absent, or unreadable: it is then compiled again)."""
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "messages" in data else None

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Keep `answer` under `key`; a folder that cannot be written only means no cache (never an error)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(json.dumps(answer), encoding="utf-8")
            os.replace(tmp, self.folder / f"{key}.json")
            entries = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
            for old in entries[: max(0, len(entries) - self.MAX_ENTRIES)]:
                old.unlink(missing_ok=True)
        except OSError:
            return


def shared_engine() -> Engine:
    """A process-wide engine (one Node worker), closed at interpreter exit."""
    global _shared
    if _shared is None:
        _shared = Engine()
        atexit.register(_shared.close)
    return _shared


def compile_cql(
    source: str | Path,
    *,
    libraries: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    engine: Engine | None = None,
) -> CompileResult:
    """Compile one CQL library (text or file) with the reference translator.

    `libraries` supplies the sources of libraries it includes (name -> CQL text); options
    default to the project's `cql/cql-options.json`.
    """
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    name = library_name(text)
    if options is None:
        options = load_config().cql_options
    eng = engine or shared_engine()
    return eng.compile(name, {**(libraries or {}), name: text}, options)


def library_name(text: str) -> str:
    """The identifier from a CQL `library X version 'v'` header (or 'Anonymous')."""
    header = cql_header(text)
    return header[0] if header is not None else "Anonymous"
