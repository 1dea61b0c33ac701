"""What the package-level layers check: resources (Item), CQL libraries (CqlLib), the package (Subject)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guideline.core.elm import defs as elm_defs

# One step of a JSON path: an element name or an array index.
PathPart = str | int

# An absolute URI starts with a scheme (RFC 3986 §3.1); canonicals and code systems must have one.
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# An ELM locator, "line:col-line:col" (the translator's EnableLocators option).
_LOCATOR = re.compile(r"^(\d+):(\d+)")


def fhirpath(prefix: str, parts: Sequence[PathPart]) -> str:
    """A FHIRPath-like location: prefix + .name / [index] segments."""
    out = prefix
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def list_of(node: Any, key: str) -> list[Any]:
    """node[key] when it is a JSON array, else [] (malformed input is the schema layer's to report)."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


@dataclass
class Item:
    """One resource under validation, with where its findings point."""

    resource: dict[str, Any]
    file: str
    prefix: str  # location prefix: "PlanDefinition" or "Bundle.entry[3].resource"
    external: bool = False  # published elsewhere (FHIRHelpers): not judged by project conventions

    @property
    def rtype(self) -> str:
        rt = self.resource.get("resourceType")
        return rt if isinstance(rt, str) else ""

    @property
    def rid(self) -> str:
        rid = self.resource.get("id")
        return rid if isinstance(rid, str) else ""

    @property
    def key(self) -> str:
        return f"{self.rtype}/{self.rid}"

    def str_field(self, name: str) -> str | None:
        """The top-level element `name` when it is a string, else None."""
        v = self.resource.get(name)
        return v if isinstance(v, str) else None

    def at(self, *parts: PathPart) -> str:
        """The location of an element of this resource, given as path parts."""
        return fhirpath(self.prefix, parts)

    def at_path(self, path: str, *parts: PathPart) -> str:
        """The location of an element below `path`, a JSON path such as `action[0].action[1]`."""
        return fhirpath(f"{self.prefix}.{path}" if self.prefix else path, parts)


@dataclass
class CqlLib:
    """A CQL library of the package: its ELM and where its line:col positions point."""

    name: str
    version: str | None
    elm: dict[str, Any] | None
    text: str | None
    file: str
    pos_prefix: str = ""  # "" when `file` is the .cql itself; "Library/X CQL " inside a bundle
    item: Item | None = None

    def loc(self, node: Any) -> str:
        """line:col of an ELM node (its locator), or of the library header."""
        locator = node.get("locator") if isinstance(node, dict) else None
        m = _LOCATOR.match(locator) if isinstance(locator, str) else None
        return f"{self.pos_prefix}{m.group(1)}:{m.group(2)}" if m else f"{self.pos_prefix}1:1"

    def header_loc(self) -> str:
        """line:col of the `library` declaration in the CQL text (1:1 when there is no text)."""
        m = re.search(r"^\s*library\b", self.text or "", re.MULTILINE)
        if not m or self.text is None:
            return f"{self.pos_prefix}1:1"
        start = m.end() - len("library")
        line = self.text.count("\n", 0, start) + 1
        col = start - (self.text.rfind("\n", 0, start) + 1) + 1
        return f"{self.pos_prefix}{line}:{col}"

    def defs(self, section: str) -> list[dict[str, Any]]:
        """The definitions of an ELM section (`statements`, `includes`, `valueSets`, `codes`...)."""
        return elm_defs(self.elm, section)


@dataclass
class Subject:
    """Everything validated together: the package's resources and CQL libraries."""

    items: list[Item]
    libs: dict[str, CqlLib] = field(default_factory=dict)  # by CQL library name
    canonical_base: str | None = None  # the package's own namespace, e.g. http://example.org/fhir/x
    # Where to tell users to put a missing CQL file / resource (source layout), if known.
    cql_hint: str = "cql/{name}.cql"
    # CQL library names whose compile failed (already reported): do not pile on.
    failed_cql: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.by_url: dict[str, list[Item]] = {}
        for it in self.items:
            url = it.str_field("url")
            if url:
                self.by_url.setdefault(url, []).append(it)
        self.lib_of_item: dict[int, CqlLib] = {id(lib.item): lib for lib in self.libs.values() if lib.item}

    def resolve(self, canonical: str) -> list[Item]:
        """Package resources with this url (any version)."""
        return self.by_url.get(canonical.partition("|")[0], [])

    def own(self, url: str) -> bool:
        """Whether `url` lies in the package's own namespace (its canonical base)."""
        return bool(self.canonical_base) and url.startswith(f"{self.canonical_base}/")
