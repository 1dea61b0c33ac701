"""Shared foundations used by every stage: typed errors, configuration, toolchain paths, FHIR helpers, atomic files."""
