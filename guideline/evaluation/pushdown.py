"""What the logic reads: the one definition every population reader uses to skip what no retrieve can return.

The libraries' data requirements (`elm.data_requirements`, the same ones `$data-requirements` and the CDS
prefetch give) name each retrieve's type and code filter. A CQL retrieve only ever returns resources of its
type whose code passes its filter, so a resource no retrieve can return changes no result:

- a line of a type no retrieve reads is skipped on its raw text (`skips`), never parsed: most of an EHR's
  export (Claims, ExplanationOfBenefits, Encounters, DiagnosticReports, ...);
- a resource of a read type, when every retrieve of that type filters `code` by a value set of the package
  (or by codes), is kept only if a coding of its `code` is in one of them (`keeps`). Such a line is still
  read as JSON (the cheap read that finds its patient and checks it): a broken line of a type the logic reads
  is reported as before, and a dropped resource still places its patient; only the expensive steps (the
  Bundle, the engine's FHIR parse) never see it.

Anything unsure keeps the resource: a retrieve without a code filter, or filtering another element
(`medication[x]`), keeps its whole type; a value set without an expansion in the package keeps its type; a
line that does not start with its `resourceType` is parsed. The Patient and Bundle lines (reported as
misplaced) are never skipped. Shared resources (Medication, ...) are attached to a patient through the
references of the resources kept; in this package only requests, statements, administrations and dispenses,
kept whole, name Medications. A line of a type never read is not checked either: `--read-all` checks all.

The JVM receives the same decision as data (`Reads.spec`: the type pattern, the read types and their
codes), so the two readers cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guideline.content.package import Package
from guideline.core import elm

# The resource type of a line that starts with it, as FHIR servers and Synthea write them. A line whose
# first key is something else is parsed (a contained resource's type may come first in the text).
TYPE_PATTERN = r'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"'
# Bytes of a line looked at for its type (both readers): leading whitespace, the key and any type name fit.
TYPE_HEAD = 256
# Types never skipped: the Patient (the record's subject) and a Bundle (reported as a misplaced Bundle).
ALWAYS = frozenset({"Patient", "Bundle"})


@dataclass(frozen=True)
class Reads:
    """The types the logic reads and, per type, the codes that keep a resource (None: every resource).

    `everything` turns the push-down off (`--read-all`): every line is read as before.
    """

    types: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    everything: bool = False
    _type_re: re.Pattern[bytes] = field(default=re.compile(TYPE_PATTERN.encode()), repr=False, compare=False)

    @classmethod
    def all(cls) -> Reads:
        """Read every resource (the push-down off)."""
        return cls(everything=True)

    @classmethod
    def of(cls, pkg: Package) -> Reads:
        """What the package's libraries read, from their data requirements and the package's value sets."""
        return cls.of_requirements(elm.data_requirements(sorted(pkg.elm), pkg.elm), pkg.value_sets)

    @classmethod
    def of_requirements(
        cls, requirements: list[dict[str, Any]], value_sets: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]
    ) -> Reads:
        """From DataRequirements ({type, codeFilter: [{path, valueSet | code}]}) and value set expansions.

        `value_sets` maps a canonical URL to its expansion's codings per version (`Package.value_sets`).
        """
        keep: dict[str, set[str] | None] = {}
        for req in requirements:
            rtype = str(req.get("type", ""))
            codes = _filter_codes(req.get("codeFilter"), value_sets)
            if codes is None or keep.get(rtype, set()) is None:
                keep[rtype] = None
            else:
                have = keep.setdefault(rtype, set())
                assert have is not None  # noqa: S101 - checked just above
                have.update(codes)
        return cls({k: frozenset(v) if v is not None else None for k, v in keep.items()})

    def spec(self) -> dict[str, Any] | None:
        """The decision as JSON for the JVM reader (None: read everything): the same pattern and codes."""
        if self.everything:
            return None
        return {
            "typePattern": TYPE_PATTERN,
            "head": TYPE_HEAD,
            "always": sorted(ALWAYS),
            "types": {k: sorted(v) if v is not None else None for k, v in sorted(self.types.items())},
        }

    def skips(self, body: bytes) -> bool:
        """Whether a raw line (without a byte order mark) is of a type no retrieve reads: it is then never parsed."""
        if self.everything:
            return False
        m = self._type_re.match(body, 0, TYPE_HEAD)
        if m is None:
            return False  # unsure: parse it
        rtype = m[1].decode("ascii")
        return rtype not in ALWAYS and rtype not in self.types

    def keeps(self, resource: Mapping[str, Any]) -> bool:
        """Whether a parsed resource can be returned by some retrieve (the exact check after `skips`)."""
        rtype = resource.get("resourceType")
        if self.everything or rtype in ALWAYS:
            return True
        if not isinstance(rtype, str) or rtype not in self.types:
            return False
        codes = self.types[rtype]
        if codes is None:
            return True
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        if not isinstance(codings, list):
            return False
        return any(
            isinstance(c, dict) and f"{c.get('system')}|{c.get('code')}" in codes
            for c in codings
            if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
        )


def _filter_codes(filters: Any, value_sets: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]) -> set[str] | None:
    """The `system|code`s one retrieve's code filter passes, or None when it may pass anything we cannot list."""
    if not isinstance(filters, list) or len(filters) != 1 or not isinstance(filters[0], dict):
        return None
    cf = filters[0]
    if cf.get("path") != "code":
        return None  # medication[x] and other elements: the whole type is kept
    if isinstance(cf.get("valueSet"), str):
        # A canonical may carry its version (`url|0.3.0`); the package keys expansions by url, then version.
        versions = value_sets.get(cf["valueSet"].partition("|")[0])
        if not versions:
            return None  # no expansion in the package: nothing to check membership against
        codings: Any = [c for version in versions.values() for c in version]
    else:
        codings = cf.get("code")
    if not isinstance(codings, list) or not codings:
        return None
    pairs = [(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)]
    # A coding without a system or a code matches nothing we can name: keep the whole type.
    if len(pairs) != len(codings) or not all(isinstance(s, str) and s and isinstance(k, str) and k for s, k in pairs):
        return None
    return {f"{s}|{k}" for s, k in pairs}
