"""Typed exceptions with one root; the CLI maps each class to a fixed, never-reused exit code."""

from __future__ import annotations

from dataclasses import dataclass


class ExitCode:
    """Documented process exit codes (README, 'Exit codes'). Retired codes stay listed, unused."""

    OK = 0
    INVALID_CONTENT = 1  # validation or CQL compile errors in the knowledge content
    USAGE = 2  # bad command line
    TOOLCHAIN = 3  # a prerequisite (node, java, translator, schema) is missing
    SERVER_UNREACHABLE = 4  # transport errors / retries exhausted
    SERVER_REJECTED = 5  # the server answered with a non-retryable error (4xx, OperationOutcome)
    VERSION_CONFLICT = 6  # publish would overwrite a released version with different content
    BAD_INPUT = 7  # an input file (patient bundle, population) cannot be read or understood
    ENGINE_ERROR = 8  # the CQL engine failed while evaluating


@dataclass
class Finding:
    """One problem, located: severity, file, location (JSON path or CQL line:col), what to do."""

    severity: str  # "error" | "warning" | "information"
    file: str
    location: str
    message: str
    layer: str = ""

    def render(self) -> str:
        where = f"{self.file}:{self.location}" if self.location else self.file
        return f"{self.severity}: {where}: {self.message}"


class GuidelineError(Exception):
    """Root of every error the library raises; carries the exit code the CLI uses."""

    exit_code = ExitCode.INVALID_CONTENT

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class UsageError(GuidelineError):
    exit_code = ExitCode.USAGE


class ToolchainError(GuidelineError):
    exit_code = ExitCode.TOOLCHAIN


class BadInputError(GuidelineError):
    exit_code = ExitCode.BAD_INPUT


class EngineError(GuidelineError):
    exit_code = ExitCode.ENGINE_ERROR


class ContentError(GuidelineError):
    """The knowledge content is invalid (compile errors, validation errors); carries findings."""

    exit_code = ExitCode.INVALID_CONTENT

    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message, [f.render() for f in findings])
        self.findings = findings


class ServerUnreachableError(GuidelineError):
    exit_code = ExitCode.SERVER_UNREACHABLE


class ServerRejectedError(GuidelineError):
    exit_code = ExitCode.SERVER_REJECTED


class VersionConflictError(GuidelineError):
    exit_code = ExitCode.VERSION_CONFLICT
