"""Locates the installed toolchain (node, worker, FHIRHelpers, R4 schema) and says how to fix gaps."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from guideline.core.errors import ToolchainError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # guideline/ (this file is guideline/core/toolchain.py)
WORKER = PACKAGE_DIR / "worker" / "worker.mjs"
# FHIRHelpers 4.0.1 as shipped in the cqframework `quick` artifact (Apache-2.0); extracted by
# scripts/setup and checked against this digest so a different file can never slip in.
FHIRHELPERS_SHA256 = "6748661c16fe66dd07a68f07f77f7fea44e8b933d265dcc3c575964ba8329591"
SCHEMA_ID = "http://hl7.org/fhir/json-schema/4.0"
SETUP_HINT = "run ./scripts/setup"


def repo_root() -> Path:
    """The checkout the package runs from (node_modules and .toolchain live there)."""
    return PACKAGE_DIR.parent


def toolchain_dir() -> Path:
    """Where scripts/setup puts FHIRHelpers and the Maven-fetched jars (`.toolchain/`)."""
    return repo_root() / ".toolchain"


def node_executable() -> str:
    """The `node` on PATH, or a ToolchainError saying how to install it."""
    node = shutil.which("node")
    if not node:
        raise ToolchainError("node not found on PATH; install Node.js 20+ (e.g. apt-get install nodejs npm)")
    return node


def node_modules() -> Path:
    """The npm-installed CQL toolchain (translator, engine), or a ToolchainError naming scripts/setup."""
    nm = repo_root() / "node_modules"
    if not (nm / "cql-execution").is_dir() or not (nm / "@cqframework" / "cql").is_dir():
        raise ToolchainError(f"CQL toolchain not installed in {nm}; {SETUP_HINT} (it runs npm ci)")
    return nm


def fhirhelpers_path() -> Path:
    """FHIRHelpers 4.0.1 as extracted by scripts/setup, or a ToolchainError."""
    p = toolchain_dir() / "FHIRHelpers-4.0.1.cql"
    if not p.is_file():
        raise ToolchainError(f"FHIRHelpers 4.0.1 not found at {p}; {SETUP_HINT}")
    return p


def fhirhelpers_text() -> str:
    """FHIRHelpers 4.0.1's CQL, checked against its pinned SHA-256 so no other file slips in."""
    p = fhirhelpers_path()
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != FHIRHELPERS_SHA256:
        raise ToolchainError(f"{p} is not the expected FHIRHelpers 4.0.1 (sha256 differs); {SETUP_HINT}")
    return data.decode("utf-8")


def fhir_schema_path() -> Path:
    """The official FHIR R4 JSON schema from the npm package, or a ToolchainError."""
    p = node_modules() / "@asymmetrik" / "fhir-json-schema-validator" / "fhir.schema.json"
    if not p.is_file():
        raise ToolchainError(f"FHIR R4 JSON schema not found at {p}; {SETUP_HINT}")
    return p
