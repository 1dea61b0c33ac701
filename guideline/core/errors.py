"""Typed exceptions with one root; the CLI maps each class to a fixed, never-reused exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    DISAGREEMENT = 9  # conformance: a server's answers differ from the expected results (report written)


@dataclass
class Finding:
    """One problem, located: severity, file, location (JSON path or CQL line:col), what to do."""

    severity: str  # "error" | "warning" | "information"
    file: str
    location: str
    message: str
    layer: str = ""

    def render(self) -> str:
        """One line: `severity: file:location: message`."""
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
    """The command line is wrong (a flag, a value, a combination)."""

    exit_code = ExitCode.USAGE


class ToolchainError(GuidelineError):
    """A prerequisite (node, java, the translator, a schema) is missing or broken."""

    exit_code = ExitCode.TOOLCHAIN


class BadInputError(GuidelineError):
    """An input file (patient bundle, population, config, token file) cannot be read or understood."""

    exit_code = ExitCode.BAD_INPUT


class EngineError(GuidelineError):
    """The CQL engine (ours or the server's) failed while evaluating."""

    exit_code = ExitCode.ENGINE_ERROR


class ContentError(GuidelineError):
    """The knowledge content is invalid (compile errors, validation errors); carries findings."""

    exit_code = ExitCode.INVALID_CONTENT

    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message, [f.render() for f in findings])
        self.findings = findings


class ServerUnreachableError(GuidelineError):
    """The server could not be reached, or kept failing until the retries ran out."""

    exit_code = ExitCode.SERVER_UNREACHABLE


class ServerRejectedError(GuidelineError):
    """The server answered, and the answer is a refusal or unusable; keeps the HTTP status and OperationOutcome.

    `status` is the HTTP status when the refusal was an HTTP answer (None when the body was wrong, not
    the status); `outcome` is the server's OperationOutcome when it sent one, for callers that want
    more than the message (which already carries its text).
    """

    exit_code = ExitCode.SERVER_REJECTED

    def __init__(
        self,
        message: str,
        details: list[str] | None = None,
        *,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details)
        self.status = status
        self.outcome = outcome


class NotFoundError(ServerRejectedError):
    """HTTP 404 or 410: the server has no such resource or endpoint (or it was deleted)."""


class ForbiddenError(ServerRejectedError):
    """HTTP 401 or 403: the server wants credentials, or the ones sent may not do this."""


class PreconditionFailedError(ServerRejectedError):
    """HTTP 412: a conditional request's precondition (If-Match, a conditional update's search) failed."""


class VersionConflictError(GuidelineError):
    """Publishing would overwrite a released url|version with different content."""

    exit_code = ExitCode.VERSION_CONFLICT
