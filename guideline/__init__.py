"""Computable FHIR guideline module for generalized lipodystrophy: build, validate, test, publish."""

__version__ = "0.1.0"
