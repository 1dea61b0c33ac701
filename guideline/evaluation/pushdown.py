"""What the logic reads: the one definition every population reader uses to skip what no retrieve can return.

The libraries' data requirements (`elm.data_requirements`, the same ones `$data-requirements` and the CDS
prefetch give) name each retrieve's type and code filter. A CQL retrieve only ever returns resources of its
type whose code passes its filter, so a resource no retrieve can return changes no result:

- a line of a type no retrieve reads is skipped on its raw text (`skips`), never parsed: most of an EHR's
  export (Claims, ExplanationOfBenefits, Encounters, DiagnosticReports, ...);
- a resource of a read type, when every retrieve of that type filters `code` by a value set of the package
  (or by codes), is kept only if a coding of its `code` is in one of them (`keeps`);
- before that, such a line is dropped on its raw text (`drops`) when none of those codes appears in it as
  the string value of a `"code"` key anywhere (a superset of the exact check: a coding's code is such a
  value) and its patient is certain from the raw text too: the line has no backslash (no JSON escape that
  could spell a code, a key or a quote differently), `"subject"` or `"patient"` occurs once in it, as a key
  of the top-level object (outside strings, no bracket left open before it), and its value is
  `{"reference": "..."}` with the reference first and only plain strings after it. The patient is then the
  one `bulk.patient_key` finds on the parsed resource (same `ndjson.reference_patient`), so the dropped line
  places its patient exactly as a parsed one; its type is its first key, as for `skips`. Such a line is
  never parsed: a broken line (bad JSON or UTF-8) of a read type whose raw text matches no code is no longer
  reported; `--read-all` reports it. Any other line of the type is read as JSON (the cheap read that finds
  its patient and checks it) and, when `keeps` says no, still places its patient; only the expensive steps
  (the Bundle, the engine's FHIR parse) never see a dropped resource.

Anything unsure keeps the resource: a retrieve without a code filter, or filtering another element
(`medication[x]`), keeps its whole type; a value set without an expansion in the package keeps its type; a
line that does not start with its `resourceType` is parsed, and so is one `drops` cannot place. The
Patient and Bundle lines (reported as misplaced) are never skipped. Shared resources (Medication, ...) are
attached to a patient through the references of the resources kept; in this package only requests,
statements, administrations and dispenses, kept whole, name Medications. A line of a type never read is not
checked either: `--read-all` checks all.

The JVM receives the same decision as data (`Reads.spec`: the type pattern, the read types and their
codes, the raw-drop patterns), so the two readers cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from guideline.content.package import Package
from guideline.core import elm
from guideline.evaluation.ndjson import reference_patient

# The resource type of a line that starts with it, as FHIR servers and Synthea write them. A line whose
# first key is something else is parsed (a contained resource's type may come first in the text).
TYPE_PATTERN = r'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"'
# Bytes of a line looked at for its type (both readers): leading whitespace, the key and any type name fit.
TYPE_HEAD = 256
# Types never skipped: the Patient (the record's subject) and a Bundle (reported as a misplaced Bundle).
ALWAYS = frozenset({"Patient", "Bundle"})
# JSON's whitespace between tokens (RFC 8259), spelled for both regex engines (Python's bytes, Java's).
_WS = r"[ \t\n\r]*"
# A line's one key that places it (bulk.PATIENT_LINKS) with its value as `drops` trusts it: an object whose
# first key is the reference, then plain strings only (display, type).
LINK_PATTERN = (
    rf'"(?:subject|patient)"{_WS}:{_WS}\{{{_WS}"reference"{_WS}:{_WS}"([^"\\]*)"'
    rf'(?:{_WS},{_WS}"(?!reference")[^"\\]*"{_WS}:{_WS}"[^"\\]*")*{_WS}\}}'
)
# Every byte but a quote and JSON's brackets: deleted to see a line's structure (see `_top_level`).
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"{}[]')


@dataclass(frozen=True)
class Reads:
    """The types the logic reads and, per type, the codes that keep a resource (None: every resource).

    `everything` turns the push-down off (`--read-all`): every line is read as before.
    """

    types: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    everything: bool = False
    _type_re: re.Pattern[bytes] = field(default=re.compile(TYPE_PATTERN.encode()), repr=False, compare=False)
    # Per code-filtered type: the raw-text pattern of any of its codes as a `"code"` value (see `drops`).
    _code_patterns: Mapping[str, str] = field(init=False, repr=False, compare=False)
    # Per type read (as the raw bytes of its name): its codes' compiled pattern, or None when read whole.
    _kinds: Mapping[bytes, re.Pattern[bytes] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = {} if self.everything else {t: code_pattern(c) for t, c in self.types.items() if c}
        kinds: dict[bytes, re.Pattern[bytes] | None] = {t.encode(): None for t in (*ALWAYS, *self.types)}
        kinds.update({t.encode(): re.compile(p.encode()) for t, p in patterns.items()})
        object.__setattr__(self, "_code_patterns", patterns)
        object.__setattr__(self, "_kinds", kinds)

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
        """The decision as JSON for the JVM reader (None: read everything): the same patterns and codes."""
        if self.everything:
            return None
        return {
            "typePattern": TYPE_PATTERN,
            "head": TYPE_HEAD,
            "always": sorted(ALWAYS),
            "types": {k: sorted(v) if v is not None else None for k, v in sorted(self.types.items())},
            "drop": {"link": LINK_PATTERN, "codes": dict(sorted(self._code_patterns.items()))},
        }

    def skips(self, body: bytes) -> bool:
        """Whether a raw line (without a byte order mark) is of a type no retrieve reads: it is then never parsed."""
        return self.screen(body) is True

    def screen(self, body: bytes) -> Literal[True] | str | None:
        """A raw line (without a byte order mark) at once: True (`skips`), its patient (`drops`), or None: parse it."""
        if self.everything:
            return None
        m = self._type_re.match(body, 0, TYPE_HEAD)
        if m is None:
            return None
        try:
            codes = self._kinds[m[1]]
        except KeyError:
            return True
        if codes is None or codes.search(body) is not None:
            return None
        return _placed(body)

    def drops(self, body: bytes) -> str | None:
        """The patient of a raw line (without a byte order mark) `keeps` would refuse, when certain; else None.

        Certain means: a code-filtered type whose codes appear nowhere as a `"code"` value, and a patient
        found on the raw text exactly as `bulk.patient_key` finds it on the parsed resource (module
        docstring). The line is then never parsed; None: parse it (it may be kept, or its patient unsure).
        """
        found = self.screen(body)
        return found if isinstance(found, str) else None

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


_LINK_RE = re.compile(LINK_PATTERN.encode())


def _placed(body: bytes) -> str | None:
    """The patient a raw line names, when the raw text makes it certain (see the module docstring); else None."""
    if b"\\" in body:
        return None  # an escape could spell a code, a key or a quote otherwise
    # One link key in the whole line (a second could be the top-level one, or the duplicate JSON keeps); a
    # string value "subject" or "patient" counts too (unsure).
    at = body.find(b'"subject"')
    if at >= 0:
        if body.find(b'"subject"', at + 9) >= 0 or b'"patient"' in body:
            return None
    else:
        at = body.find(b'"patient"')
        if at < 0 or body.find(b'"patient"', at + 9) >= 0:
            return None
    link = _LINK_RE.match(body, at)
    if link is None or not _top_level(body[:at]):
        return None
    try:
        return reference_patient(link[1].decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _top_level(head: bytes) -> bool:
    """Whether the end of `head`, the start of a line without backslashes, is directly in its top-level object.

    Only quotes and brackets matter: a bracket is in a string when an odd number of quotes come before it. So
    dropping adjacent pairs of quotes (strings without brackets) changes nothing, nor does dropping `"[]"`
    (a string's `[Score]`, or an empty array between strings: no depth either way); the brackets left outside
    strings must be the object's own `{` only, the others closed. An open string (odd quotes) is unsure.
    """
    shape = head.translate(None, _NOT_STRUCTURE).replace(b'"[]"', b"").replace(b'""', b"")
    if b'"' in shape:
        pieces = shape.split(b'"')
        if len(pieces) % 2 == 0:
            return False
        shape = b"".join(pieces[::2])
    # Opening brackets less closing ones: the length less twice the closing ones.
    return len(shape) - 2 * (shape.count(b"}") + shape.count(b"]")) == 1


def code_pattern(pairs: frozenset[str]) -> str:
    """A regex (for Python's bytes and Java's Latin-1 text alike) finding any code of `system|code` pairs as a
    `"code"` string value in a raw line.

    A system may hold `|` too, so every text after a `|` is taken as a code (a superset); each byte that is
    not a letter or digit is written `\\xHH`, its UTF-8 byte, which both engines read the same way.
    """
    codes = {pair[i + 1 :] for pair in pairs for i, ch in enumerate(pair) if ch == "|"}
    alternatives = sorted(
        "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in code.encode("utf-8"))
        for code in codes
        if code
    )
    return rf'"code"{_WS}:{_WS}"(?:{"|".join(alternatives)})"'


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
