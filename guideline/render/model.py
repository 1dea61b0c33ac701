"""The page model of the rendered site: recommendations, conditions in plain language, CQL, value sets, cases.

Data only: `render.build` fills it from the package, `render.logic` reads the CQL it shows.

A page's recommendation and activities hold the evaluation model's (`guideline.evaluation.model`)
for what they share with `recommend` (id, card, what each activity proposes, informational), and
add only what the pages show besides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from guideline.evaluation import model as evaluation

# The full scales of the two HL7 code systems (the GRADE categories), shown beside each rating
# so a reader sees where "weak" and "very-low" sit.
STRENGTH_SCALE = ("strong", "weak")
QUALITY_SCALE = ("high", "moderate", "low", "very-low")

# Short names for the code systems the package uses; anything else is shown by its URL.
SYSTEM_NAMES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://www.orpha.net": "Orphanet",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-activity-type-cs": "CPG activity type",
    "http://terminology.hl7.org/CodeSystem/condition-clinical": "Condition clinical status",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status": "Condition verification status",
}


# ---------------------------------------------------------------- page model


@dataclass(frozen=True)
class Coding:
    """A coding as the pages show it: system (with a short name), code and display."""

    system: str
    code: str
    display: str = ""

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system, self.system)

    @property
    def label(self) -> str:
        return f"{self.system_name} {self.code}"


@dataclass(frozen=True)
class Rating:
    """A strength-of-recommendation or quality-of-evidence rating from an action's extension."""

    code: str
    display: str
    text: str
    system: str
    extension: str


@dataclass(frozen=True)
class Quote:
    """A passage of the source, verbatim, and where it is from."""

    text: str
    cite: str


@dataclass(frozen=True)
class Definition:
    """A CQL definition (define, function or parameter) with its source text."""

    library: str
    name: str
    kind: str  # define | function | parameter
    cql: str

    @property
    def anchor(self) -> str:
        return anchor("def", self.library, self.name)

    @property
    def qualified(self) -> str:
        return f'{self.library}."{self.name}"'


@dataclass(frozen=True)
class Plain:
    """A condition in plain language: all/any/not over named definitions; CQL text at the leaves."""

    op: str  # all | any | not | ref | cql
    text: str = ""
    anchor: str = ""
    children: tuple[Plain, ...] = ()


@dataclass(frozen=True)
class Condition:
    """An applicability condition: the CQL define that decides it, in plain language and on one line."""

    definition: Definition
    plain: Plain
    summary: str  # one line, for the diagram


@dataclass(frozen=True)
class Activity:
    """An activity on a recommendation's page: what it proposes (the evaluation model) and what the page shows."""

    proposal: evaluation.Activity  # the request $apply creates and its codes, as `recommend` reports them
    title: str
    action_title: str
    action_description: str
    description: str
    codes: tuple[Coding, ...]  # proposal.codes, with their displays
    codings: tuple[tuple[str, Coding], ...]  # every coding on the definition: (element, coding)
    text: str  # message text (CommunicationRequest) or dosage text
    intent: str
    priority: str
    condition: Condition | None
    json_href: str

    @property
    def definition_id(self) -> str:
        return self.proposal.definition

    @property
    def kind(self) -> str:
        return self.proposal.resource_type

    @property
    def order(self) -> bool:
        return self.proposal.order

    @property
    def anchor(self) -> str:
        return anchor("act", self.definition_id)


@dataclass(frozen=True)
class ValueSet:
    """A value set the logic uses, with its expansion."""

    id: str
    url: str
    title: str
    description: str
    expansion: tuple[Coding, ...]
    json_href: str

    @property
    def anchor(self) -> str:
        return anchor("vs", self.id)


@dataclass(frozen=True)
class CodeUse:
    """A CQL code declaration the logic uses directly."""

    library: str
    name: str
    coding: Coding


@dataclass(frozen=True)
class DynamicText:
    """A card element computed per patient by a CQL define (an action's dynamicValue)."""

    path: str
    definition: Definition


@dataclass(frozen=True)
class Recommendation:
    """A recommendation's page: its card as `recommend` reports it when every action applies, and what is behind it.

    `card` is the evaluation model's recommendation (id, title and text of the card, source, and
    every activity's proposal); the other fields are the evidence, logic and cases the page shows.
    """

    card: evaluation.Recommendation
    short_title: str  # the pathway's action title
    title: str  # the PlanDefinition title
    description: str
    usage: str
    quotes: tuple[Quote, ...]
    strength: Rating | None
    quality: Rating | None
    triggers: tuple[str, ...]
    conditions: tuple[Condition, ...]
    activities: tuple[Activity, ...]  # the page's view of card.activities, in the same order
    dynamic: tuple[DynamicText, ...]
    definitions: tuple[Definition, ...]
    value_sets: tuple[ValueSet, ...]
    codes: tuple[CodeUse, ...]
    json_links: tuple[tuple[str, str], ...]  # (label, href)
    fires_in: tuple[str, ...] = ()
    silent_in: tuple[str, ...] = ()
    safety_rules: tuple[SafetyRule, ...] = ()  # project safety rules that shape this recommendation

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def informational(self) -> bool:
        return self.card.informational

    @property
    def page(self) -> str:
        return f"rec-{self.id}.html"


@dataclass(frozen=True)
class Case:
    """A test case: its scenario, evaluation time, expected recommendations and define values."""

    id: str
    description: str
    at: str
    expected: tuple[tuple[str, tuple[str, ...]], ...]  # (PlanDefinition id, activity codes)
    defines: tuple[tuple[str, str, str], ...]  # (library, define, JSON value)
    patient_href: str

    @property
    def anchor(self) -> str:
        return anchor("case", self.id)


@dataclass(frozen=True)
class SafetyRule:
    """A project safety rule (the project's addition, never the source's words) and its basis."""

    number: int
    text: str
    basis: str

    @property
    def anchor(self) -> str:
        return anchor("safety-rule", str(self.number))


@dataclass(frozen=True)
class TraceRow:
    """A row of the traceability table: a source passage, what encodes it, and the cases where it fires."""

    quote: Quote
    artifact: str
    page: str
    encoded: tuple[str, ...]
    cases: tuple[str, ...]
    cases_note: str


@dataclass(frozen=True)
class ResourceLink:
    """A package resource in the raw-JSON listing."""

    resource_type: str
    id: str
    title: str
    version: str
    href: str


@dataclass(frozen=True)
class Criterion:
    """A Measure population or stratifier: its code (or stratifier name), description and the CQL define it runs."""

    kind: str  # population | stratifier
    code: str
    description: str
    definition: Definition  # the define its criteria name

    @property
    def anchor(self) -> str:
        return anchor(self.kind, self.code)


@dataclass(frozen=True)
class Indicator:
    """A Measure's page: what it measures, its populations and stratifiers, its CQL and what it measures."""

    id: str
    url: str
    name: str
    title: str
    description: str
    usage: str
    scoring: str  # Measure.scoring code: proportion, cohort, ...
    counted: str  # the population read as a count of patients, expected 0 (a safety indicator); "" for a share
    library: str  # the CQL library's name
    populations: tuple[Criterion, ...]
    stratifiers: tuple[Criterion, ...]
    group_descriptions: tuple[str, ...]  # what each Measure.group counts, in words (those that say)
    measures: tuple[tuple[str, str], ...]  # (label, page) of each recommendation it measures
    other_artifacts: tuple[str, ...]  # relatedArtifact targets that are no page of the site, as text
    definitions: tuple[Definition, ...]
    safety_rules: tuple[SafetyRule, ...]
    json_links: tuple[tuple[str, str], ...]  # (label, href)

    @property
    def page(self) -> str:
        return f"ind-{self.id}.html"

    @property
    def count(self) -> bool:
        """Read as a count of patients: a safety indicator expected to be 0 (render.indicators.counted_population)."""
        return bool(self.counted)


@dataclass(frozen=True)
class Site:
    """Everything the site shows: package metadata, the pathway, its recommendations, cases and traceability."""

    title: str
    name: str
    package_id: str
    version: str
    status: str
    experimental: bool
    date: str
    publisher: str
    canonical: str
    license: str
    fhir_version: str
    citations: tuple[Quote, ...]
    pathway_id: str
    pathway_title: str
    pathway_description: str
    pathway_usage: str
    pathway_quotes: tuple[Quote, ...]
    population: Condition
    triggers: tuple[str, ...]
    recommendations: tuple[Recommendation, ...]
    cases: tuple[Case, ...]
    trace: tuple[TraceRow, ...]
    resources: tuple[ResourceLink, ...]
    definitions: tuple[Definition, ...] = field(default=())  # the pathway's own CQL
    safety_rules: tuple[SafetyRule, ...] = ()  # every project safety rule, as the pathway lists them
    indicators: tuple[Indicator, ...] = ()  # the package's Measures, by id


def anchor(prefix: str, *parts: str) -> str:
    """A stable, URL-safe fragment id."""
    body = "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts)
    return f"{prefix}-{body}"


def json_href(resource: dict[str, Any]) -> str:
    """Where the site keeps a resource's raw JSON (relative to the site root)."""
    return f"json/{resource['resourceType']}-{resource['id']}.json"


def humanize(name: str) -> str:
    """'Has Prolactin Excess Features' -> 'has prolactin excess features' (acronyms like HbA1c, GL kept)."""
    return " ".join(w.lower() if w[:1].isupper() and (len(w) == 1 or w[1:].islower()) else w for w in name.split())
