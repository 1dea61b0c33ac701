"""Verify `guideline render`: the page model, the diagram layout, the HTML and the atomic, deterministic writer."""

from __future__ import annotations

import copy
import dataclasses
import json
import struct
import time
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import BadInputError, ContentError, EngineError, ToolchainError
from guideline.evaluation import model as evaluation
from guideline.evaluation.model import activity_codes
from guideline.render import site as render_mod
from guideline.render.build import load_cases, site_model
from guideline.render.diagram import (
    CHAR_PX,
    INFO,
    MESSAGE,
    ORDER,
    PAD,
    STRIPE,
    ActivityNode,
    DiagramSpec,
    Layout,
    RecommendationNode,
    layout,
    to_svg,
)
from guideline.render.model import Site, humanize
from guideline.render.site import SCREENSHOT_KEY, screenshot_digest, site_files, write_site
from tests.support import CASES_DIR, ROOT
from tests.support.casedata import SAFETY_RULES
from tests.support.tiers import examples
from tools.browser import chromium_path, png_text, run_chromium, set_png_text

README_SHOT = ROOT / "docs" / "screenshot-index.png"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


def _resource(pkg: Package, rtype: str, rid: str) -> dict[str, Any]:
    return next(r for r in pkg.resources if r["resourceType"] == rtype and r["id"] == rid)


# ---------------------------------------------------------------- page model


def test_recommendations_follow_the_pathway(package: Package, site: Site) -> None:
    """Verify that the model lists the pathway's recommendations in its order, with titles, quotes and ratings."""
    pathway = _resource(package, "PlanDefinition", package.config.package.pathway)
    refs = [a["definitionCanonical"].split("/")[-1].split("|")[0] for a in pathway["action"][0]["action"]]
    assert [r.id for r in site.recommendations] == refs
    assert [r.short_title for r in site.recommendations] == [a["title"] for a in pathway["action"][0]["action"]]
    for r in site.recommendations:
        plan = _resource(package, "PlanDefinition", r.id)
        assert r.title == plan["title"]
        assert [q.text for q in r.quotes] == [d["citation"] for d in plan["action"][0]["documentation"]]
        assert r.strength is not None and r.strength.code == "weak", r.id
        assert r.quality is not None and r.quality.code == "very-low", r.id
        assert r.triggers == ("patient-view",)
    assert site.version == package.config.package.version
    assert site.citations and "iLive" in site.citations[0].text


def test_conditions_show_the_define_and_its_cql(site: Site) -> None:
    """Verify that each condition names its CQL define, carries that define's text and reads in plain language."""
    for r in site.recommendations:
        assert [c.definition.name for c in r.conditions] == ["Applies"], r.id
        cond = r.conditions[0]
        assert cond.definition.library == r.id
        assert 'define "Applies":' in cond.definition.cql
        assert cond.summary.startswith("has generalized lipodystrophy"), cond.summary
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    # Issue 13 (project safety rules 1-3): confirmed GL, alive, and not pregnant or post-partum; rule 15: no
    # bromocriptine order pending.
    assert r2.conditions[0].summary == (
        "has generalized lipodystrophy (Confirmed) and is alive AND (has hyperinsulinemia OR has prolactin "
        "excess features) AND NOT on bromocriptine AND NOT has pending bromocriptine order AND NOT is pregnant or "
        "postpartum"
    )
    plain = r2.conditions[0].plain
    assert plain.op == "all" and [c.op for c in plain.children] == ["ref", "any", "not", "not", "not"]
    # Named definitions expand to their own logic, across libraries (GLR2 -> GLCommon).
    hyper = plain.children[1].children[0]
    assert hyper.text == "has hyperinsulinemia" and hyper.children[0].op == "any"
    assert site.population.definition.qualified == 'GLPathway."Applies"'
    assert site.population.summary == "has generalized lipodystrophy and is alive"


def test_definitions_cover_the_logic_without_fhirhelpers(site: Site) -> None:
    """Verify that a recommendation lists every definition its logic reaches, from every library but FHIRHelpers."""
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    names = {(d.library, d.name) for d in r2.definitions}
    assert ("GLR2Bromocriptine", "Card Detail") in names
    assert ("GLCommon", "Has Hyperinsulinemia") in names
    assert ("GLCommon", "Fasting Insulin Threshold") in names  # a parameter
    assert ("GLCommon", "Is Active") in names  # a function
    assert all(lib != "FHIRHelpers" for lib, _ in names)
    assert r2.definitions[0].library == "GLR2Bromocriptine", "the recommendation's own library comes first"
    for d in r2.definitions:
        assert d.cql and d.name in d.cql, d.qualified


def test_activities_carry_the_codes_the_engine_proposes(package: Package, site: Site) -> None:
    """Verify that each activity's codes are those $apply puts on the request, and the cases expect only those."""
    for r in site.recommendations:
        for a in r.activities:
            ad = _resource(package, "ActivityDefinition", a.definition_id)
            assert [f"{c.system}|{c.code}" for c in a.codes] == sorted(activity_codes(ad))
            assert a.order == (ad["kind"] != "CommunicationRequest")
    by_id = {r.id: {f"{c.system}|{c.code}" for a in r.activities for c in a.codes} for r in site.recommendations}
    for case in site.cases:
        for rid, codes in case.expected:
            assert set(codes) <= by_id[rid], f"{case.id}: {rid} expects codes the recommendation cannot propose"
    r5 = next(r for r in site.recommendations if r.id == "GLR5CareTeam")
    # Issue 13 (project safety rule 8): each referral has its own condition (not proposed again).
    conditions = {a.definition_id: a.condition.definition.name if a.condition else None for a in r5.activities}
    assert conditions == {
        "GLReferEndocrinologist": "Needs Endocrinology Referral",
        "GLReferPaediatricEndocrinologist": "Needs Paediatric Endocrinology Referral",  # rule 10
        "GLReferGeneticist": "Needs Genetics Referral",
        "GLReferPaediatrician": "Needs Paediatrician Referral",
    }


def test_informational_recommendations_are_marked(site: Site) -> None:
    """Verify that a recommendation proposing no order is informational and the others are not."""
    kinds = {r.id: r.informational for r in site.recommendations}
    assert kinds == {
        "GLR1InsulinAssessment": False,
        "GLR2Bromocriptine": False,
        "GLR3Levocarnitine": False,
        "GLR4Diet": False,
        "GLR5CareTeam": False,
        "GLR6Prognosis": True,
    }


def test_pages_hold_the_evaluation_model(package: Package, site: Site) -> None:
    """Verify that each page's card is the evaluation model's recommendation, with every activity's proposal."""
    for r in site.recommendations:
        assert isinstance(r.card, evaluation.Recommendation)
        assert r.card.id == r.id
        assert r.card.activities == [a.proposal for a in r.activities]
        assert r.informational == r.card.informational == (not any(a.order for a in r.activities))
        first = _resource(package, "PlanDefinition", r.id)["action"][0]
        assert (r.card.title, r.card.detail) == (first["title"], first["description"])
        for a in r.activities:
            ad = _resource(package, "ActivityDefinition", a.definition_id)
            assert a.proposal == evaluation.Activity.of_definition(ad)
            assert a.kind == ad["kind"]


def _with_loop(pkg: Package, *, through_second: bool) -> Package:
    """The package with its pathway also reaching the pathway again (directly or through a second pathway)."""
    resources = copy.deepcopy(pkg.resources)
    pathway = next(r for r in resources if r["resourceType"] == "PlanDefinition" and r["id"] == "GLPathway")
    target = pathway["url"]
    if through_second:
        second = {
            "resourceType": "PlanDefinition",
            "id": "GLPathwayLoop",
            "url": f"{pathway['url']}Loop",
            "type": pathway["type"],
            "action": [{"title": "back", "definitionCanonical": pathway["url"]}],
        }
        resources.append(second)
        target = second["url"]
    pathway["action"][0]["action"].append({"title": "loop", "definitionCanonical": target})
    return dataclasses.replace(pkg, resources=resources)


@pytest.mark.parametrize(
    ("through_second", "where"),
    [
        (False, ("PlanDefinition/GLPathway", "action[0].action[6].definitionCanonical")),
        (True, ("PlanDefinition/GLPathwayLoop", "action[0].definitionCanonical")),
    ],
    ids=["self", "second-plan"],
)
def test_a_pathway_that_reaches_itself_is_refused(
    package: Package, cases: list[dict[str, Any]], through_second: bool, where: tuple[str, str]
) -> None:
    """Verify that the site model refuses a looping pathway with a ContentError at the looping reference."""
    with pytest.raises(ContentError) as err:
        site_model(_with_loop(package, through_second=through_second), cases)
    (finding,) = err.value.findings
    assert (finding.file, finding.location) == where
    assert "reaches PlanDefinition/GLPathway again" in finding.message


def test_value_sets_come_with_expansions(package: Package, site: Site) -> None:
    """Verify that each recommendation shows the value sets its logic uses, with their full expansions."""
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    ids = {v.id for v in r2.value_sets}
    assert {"gl-conditions", "gl-bromocriptine-medications", "gl-galactorrhoea-conditions"} <= ids
    assert "gl-levocarnitine-medications" not in ids
    r4 = next(r for r in site.recommendations if r.id == "GLR4Diet")
    # Issue 13: pregnancy/post-partum/breast-feeding (rule 3) and the triglyceride oil caution (rule 9); issue 23:
    # the related dietitian referral codes (rule 15), pregnancy from a qualitative hCG result (rule 13), and a
    # history of pancreatitis, which also triggers the oil caution (rule 17).
    assert sorted(v.id for v in r4.value_sets) == [
        "gl-conditions",
        "gl-delivery-procedures",
        "gl-dietitian-referrals",
        "gl-hcg-qualitative",
        "gl-lactation-findings",
        "gl-pancreatitis-conditions",
        "gl-pregnancy-conditions",
        "gl-triglycerides-tests",
    ]
    for r in site.recommendations:
        for v in r.value_sets:
            vs = _resource(package, "ValueSet", v.id)
            assert [(c.system, c.code) for c in v.expansion] == [
                (c["system"], c["code"]) for c in vs["expansion"]["contains"]
            ]


def test_cases_and_traceability(site: Site) -> None:
    """Verify that every test case appears with its expected recommendations, and every quote is traced."""
    dirs = sorted(p.name for p in CASES_DIR.iterdir() if (p / "expected.json").is_file())
    assert [c.id for c in site.cases] == dirs
    for c in site.cases:
        expected = json.loads((CASES_DIR / c.id / "expected.json").read_text(encoding="utf-8"))
        assert dict(c.expected) == {k: tuple(v) for k, v in expected["recommendations"].items()}
    for r in site.recommendations:
        assert set(r.fires_in) | set(r.silent_in) == set(dirs) and not set(r.fires_in) & set(r.silent_in)
        rows = [t for t in site.trace if t.artifact == f"PlanDefinition/{r.id}"]
        assert [t.quote for t in rows] == list(r.quotes)
        assert all(t.cases == r.fires_in for t in rows)
    assert any(t.artifact == "PlanDefinition/GLPathway" for t in site.trace)


def test_bad_expected_file_is_named(tmp_path: Path) -> None:
    """Verify that an unreadable expected.json fails as bad input naming the file."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "expected.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"broken/expected\.json"):
        load_cases(tmp_path)
    (tmp_path / "broken" / "expected.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BadInputError, match="recommendations"):
        load_cases(tmp_path)
    assert load_cases(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("Has Prolactin Excess Features", "has prolactin excess features"),
        ("HbA1c At Or Above Threshold", "HbA1c at or above threshold"),
        ("Has GL", "has GL"),
        ("Insulin In uIU/mL", "insulin in uIU/mL"),
    ],
)
def test_humanize_keeps_acronyms(name: str, plain: str) -> None:
    """Verify that define names read as plain words while acronyms and units keep their case."""
    assert humanize(name) == plain


# ---------------------------------------------------------------- diagram layout


def _assert_sound(lay: Layout, spec: DiagramSpec) -> None:
    boxes = lay.boxes
    keys = [b.key for b in boxes]
    assert len(keys) == len(set(keys)), "box keys are unique"
    for i, a in enumerate(boxes):
        assert a.x >= 0 and a.y >= 0 and a.right <= lay.width and a.bottom <= lay.height, f"{a.key} off canvas"
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), f"{a.key} overlaps {b.key}"
        for line in a.lines:
            assert len(line.text) * CHAR_PX[line.style] <= a.w - 2 * PAD - STRIPE + 0.01 or " " not in line.text, (
                f"{a.key}: {line.text!r} is wider than its box"
            )
    for r in spec.recommendations:
        assert f"rec-{r.key}" in keys
        for act in r.activities:
            assert f"act-{act.key}" in keys
    by_key = {b.key: b for b in boxes}
    for e in lay.edges:
        src, dst = by_key[e.source], by_key[e.target]
        assert e.points[0] == (src.right, src.cy) and e.points[-1] == (dst.x, dst.cy), "edges join box sides"
    targets = {e.target for e in lay.edges}
    assert targets == set(keys) - {"trigger"} - {k for k in keys if k.startswith("legend-")}


def test_diagram_layout_of_the_package(site: Site) -> None:
    """Verify that the package's diagram has every recommendation and activity, no overlaps, joined edges."""
    spec = render_mod.diagram_spec(site)
    lay = layout(spec)
    _assert_sound(lay, spec)
    for r in site.recommendations:
        assert any(n.key == r.id for n in spec.recommendations)
        node = next(n for n in spec.recommendations if n.key == r.id)
        if r.informational:
            assert [a.kind for a in node.activities] == [INFO] and not r.activities
        else:
            assert [a.key for a in node.activities] == [a.definition_id for a in r.activities]
    # Readable at 100 %: drawn at its own size (the page scrolls), not squeezed into a narrow column.
    assert 1000 <= lay.width <= 1200


_words = st.text(alphabet="abcdefghij KLM-", min_size=1, max_size=60).map(lambda s: s.strip() or "x")
_activity = st.builds(
    ActivityNode,
    key=st.uuids().map(str),
    title=_words,
    kind=st.sampled_from([ORDER, MESSAGE, INFO]),
    resource_type=st.sampled_from(["ServiceRequest", "CommunicationRequest", ""]),
    codes=st.lists(_words, max_size=3).map(tuple),
    condition=_words | st.just(""),
)
_rec = st.builds(
    RecommendationNode,
    key=st.uuids().map(str),
    title=_words,
    condition=st.text(alphabet="abc DEF()", max_size=200),
    define=_words,
    rating=_words,
    informational=st.booleans(),
    href=st.just("x.html"),
    activities=st.lists(_activity, max_size=5).map(tuple),
)


@settings(max_examples=examples(60), deadline=None)
@given(recs=st.lists(_rec, max_size=8), population=_words)
def test_diagram_layout_never_overlaps(recs: list[RecommendationNode], population: str) -> None:
    """Verify that any pathway (0-8 recommendations, 0-5 activities, long words) lays out without overlaps."""
    spec = DiagramSpec("t", "d", ("patient-view",), population, 'L."Applies"', "#p", tuple(recs))
    lay = layout(spec)
    _assert_sound(lay, spec)
    ET.fromstring(to_svg(lay))  # noqa: S314 - our own output: it must be well-formed XML whatever the text


def test_svg_is_titled_and_self_contained(files: dict[str, bytes]) -> None:
    """Verify that the diagram is well-formed SVG with a title and description, links inside, no scripts."""
    index = files["index.html"].decode("utf-8")
    start, end = index.index("<svg"), index.index("</svg>") + len("</svg>")
    root = ET.fromstring(index[start:end])  # noqa: S314 - our own output, parsed to prove it is well-formed
    title = root.find(f"{SVG}title")
    assert title is not None and (title.text or "").startswith("Decision")
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "R2 Consider bromocriptine" in (desc.text or "")
    assert root.get("aria-labelledby") == "decision-diagram-title decision-diagram-desc"
    assert not root.findall(f".//{SVG}script") and not root.findall(f".//{SVG}image")
    hrefs = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert hrefs and all(h and not h.startswith(("http:", "https:")) for h in hrefs)
    # Kinds differ by label and line style, not colour alone (grey-scale print).
    styles: dict[str | None, str | None] = {}
    for g in root.iter(f"{SVG}g"):
        frame = g.find(f"{SVG}rect")
        if (g.get("class") or "").startswith("box ") and frame is not None:
            styles[g.get("class")] = frame.get("stroke-dasharray")
    assert styles["box order"] is None and styles["box message"] == "7 4" and styles["box info"] == "2 4"


# ---------------------------------------------------------------- HTML


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[int] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.tables = 0
        self.table_has_th: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))
        if tag == "table":
            self.table_has_th.append(False)
        if tag == "th" and self.table_has_th:
            self.table_has_th[-1] = True


def _parse(data: bytes) -> _Page:
    p = _Page()
    p.feed(data.decode("utf-8"))
    return p


def test_pages_are_semantic_and_offline(files: dict[str, bytes], site: Site) -> None:
    """Verify that every page has one h1, headings in order, headed tables, no scripts and no external URLs."""
    pages = [name for name in files if name.endswith(".html")]
    assert sorted(pages) == sorted(
        [
            "index.html",
            "traceability.html",
            "cases.html",
            "resources.html",
            *(r.page for r in site.recommendations),
            *(i.page for i in site.indicators),
        ]
    )
    for name in pages:
        p = _parse(files[name])
        assert p.headings[0] == 1 and p.headings.count(1) == 1, f"{name}: one h1, first"
        for prev, cur in zip(p.headings, p.headings[1:], strict=False):
            assert cur <= prev + 1, f"{name}: heading h{cur} follows h{prev}"
        assert p.table_has_th and all(p.table_has_th), f"{name}: every table has header cells"
        assert ("html", {"lang": "en"}) in p.tags
        assert len(p.ids) == len(set(p.ids)), f"{name}: duplicate ids"
        for tag, a in p.tags:
            assert tag != "script", f"{name}: has a script"
            for attr in ("href", "src"):
                v = a.get(attr) or ""
                assert not v.startswith(("http:", "https:", "//")), f"{name}: external {attr} {v}"
    css = files["style.css"].decode("utf-8")
    assert "@import" not in css and "url(" not in css, "the style sheet loads nothing"


def test_internal_links_resolve_in_the_files(files: dict[str, bytes]) -> None:
    """Verify that every href in every page names a file of the site and, with a fragment, an id in it."""
    ids = {name: set(_parse(data).ids) for name, data in files.items() if name.endswith(".html")}
    for name in ids:
        for tag, a in _parse(files[name]).tags:
            link = a.get("href")
            if not link or tag == "svg":
                continue
            path, frag = urldefrag(link)
            target = name if not path else str(Path(name).parent / unquote(path))
            assert target in files, f"{name} -> {link}"
            if frag:
                assert frag in ids[target], f"{name} -> {link}: no such id"


def test_recommendation_page_content(files: dict[str, bytes], site: Site) -> None:
    """Verify that a recommendation page quotes the source, shows ratings, define text, codes and JSON links."""
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    page = files[r2.page].decode("utf-8")
    assert "In a number of cases, treatment with parlodel was successfully used" in page
    assert "recommendation-strength" in page and "evidence-quality" in page and "very-low" in page
    assert "GLR2Bromocriptine.&quot;Applies&quot;" in page and "define &quot;Applies&quot;:" in page
    assert "RxNorm 1760" in page and "G02CB01" in page
    for _, href in r2.json_links:
        assert f'href="{href}"' in page and href in files
    assert json.loads(files["json/PlanDefinition-GLR2Bromocriptine.json"])["id"] == "GLR2Bromocriptine"


def test_safety_rules_are_read_from_the_artifacts(package: Package, cases: list[dict[str, Any]]) -> None:
    """Verify that the pages list whatever project safety rules the artifacts declare, in rule order and apart from
    the source, with no list of rules in the renderer: a rule the artifacts gain (a hypothetical rule 99, on the
    pathway and R2) appears beside rules 1-17 without a change to the renderer."""
    resources = copy.deepcopy(package.resources)
    plans = {r["id"]: r for r in resources if r["resourceType"] == "PlanDefinition"}
    marker = {
        "type": "documentation",
        "label": "project-safety-rule-99",
        "display": "Project safety rule 99 (not from the source): injected rule 99.",
        "citation": "Basis: injected basis 99.",
    }
    for pid in ("GLPathway", "GLR2Bromocriptine"):
        plans[pid]["relatedArtifact"].append(dict(marker))
    extended = dataclasses.replace(package, resources=resources)
    site = site_model(extended, cases)
    want = [*SAFETY_RULES, 99]
    assert [r.number for r in site.safety_rules] == want
    assert set(range(10, 18)) <= {r.number for r in site.safety_rules}
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    assert {11, 13, 17, 99} <= {r.number for r in r2.safety_rules}
    files = site_files(extended, cases, site)
    index = files["index.html"].decode("utf-8")
    safety = index[index.index('<h2 id="safety">') :]
    for n in want:
        assert f'id="safety-rule-{n}"' in safety
    assert "injected rule 99." in safety and "injected rule 99." not in index[: index.index('<h2 id="safety">')]
    page = files[r2.page].decode("utf-8")
    section = page[page.index('<h2 id="safety">') : page.index("<h2>Rating</h2>")]
    assert "<b>Rule 99.</b>" in section and "injected basis 99" in section


def test_safety_rules_are_shown_apart_from_the_source(files: dict[str, bytes], site: Site, package: Package) -> None:
    """Verify that the index, each recommendation page and the traceability page list the project safety
    rules in a section of their own, after the source's quotes, never inside a quote."""
    assert [s.number for s in site.safety_rules] == SAFETY_RULES
    heading = "Project safety rules (not from the source)"
    index = files["index.html"].decode("utf-8")
    assert heading in index and index.index('<h2 id="source">') < index.index('<h2 id="safety">')
    for n in SAFETY_RULES:
        assert f'id="safety-rule-{n}"' in index
    for r in site.recommendations:
        plan = next(p for p in package.resources if p.get("id") == r.id and p["resourceType"] == "PlanDefinition")
        declared = {
            a["label"]
            for a in plan.get("relatedArtifact", [])
            if a.get("type") == "documentation" and str(a.get("label", "")).startswith("project-safety-rule-")
        }
        assert {f"project-safety-rule-{s.number}" for s in r.safety_rules} == declared
        # Labelled context (rule 17's metreleptin approvals) is neither a rule nor a quote of the source.
        assert not any("metreleptin" in q.text.lower() for q in r.quotes), r.id
        page = files[r.page].decode("utf-8")
        if r.safety_rules:
            section = page[page.index('<h2 id="safety">') : page.index("<h2>Rating</h2>")]
            assert heading in section and "<blockquote" not in section
            assert page.index("<h2>Source</h2>") < page.index('<h2 id="safety">')
            for s in r.safety_rules:
                assert f"<b>Rule {s.number}.</b>" in section and "Basis:" in section
    trace = files["traceability.html"].decode("utf-8")
    table = trace[trace.index('<h2 id="safety">') :]
    assert "(the project's, not the source's)" in table and table.count("<tr><td>") == len(SAFETY_RULES)
    # Rule 3 (pregnancy) shapes the drug and diet recommendations at least.
    row3 = table[table.index("<tr><td>3</td>") :].split("</tr>")[0]
    for rid in ("GLR2Bromocriptine", "GLR3Levocarnitine", "GLR4Diet"):
        assert f"{rid}.html" in row3


# ---------------------------------------------------------------- writing


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rendering_is_deterministic(package: Package, cases: list[dict[str, Any]], tmp_path: Path) -> None:
    """Verify that the same package renders to the same bytes, file for file."""
    first = site_files(package, cases)
    second = site_files(package, cases)
    assert first == second
    write_site(first, tmp_path / "a")
    write_site(second, tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b") == first


def test_writing_is_atomic(files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that a failed render leaves the previous site untouched and no temp folder behind."""
    out = tmp_path / "site"
    write_site({"index.html": b"old"}, out)
    real = Path.write_bytes
    calls = {"n": 0}

    def failing(self: Path, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        write_site(files, out)
    monkeypatch.undo()
    assert _tree(out) == {"index.html": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    write_site(files, out)
    assert _tree(out) == files and sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_cli_render(package: Package, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Verify that `guideline render --out DIR` writes the site and prints the index path."""
    monkeypatch.setattr(render_mod, "build_package", lambda cfg, engine=None: package)
    assert cli.main(["render", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "out" / "index.html") in out and "6 recommendations" in out
    assert (tmp_path / "out" / "index.html").is_file()


# ---------------------------------------------------------------- the browser driver


def test_missing_chromium_is_a_toolchain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that a missing browser is reported with how to install it."""
    monkeypatch.setenv("GUIDELINE_CHROMIUM", str(tmp_path / "nope"))
    with pytest.raises(ToolchainError, match="scripts/setup"):
        chromium_path()


def test_browser_runs_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that a browser that hangs is killed with its child processes at the timeout."""
    fake = tmp_path / "chromium"
    pidfile = tmp_path / "child.pid"
    fake.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pidfile}\nwait\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("GUIDELINE_CHROMIUM", str(fake))
    start = time.monotonic()
    with pytest.raises(EngineError, match="did not finish within"):
        run_chromium(["about:blank"], timeout=1.0)
    assert time.monotonic() - start < 10
    child = int(pidfile.read_text().strip())
    time.sleep(0.2)
    # The helper went with the group: gone, or a zombie waiting for a reaper (not running).
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z"), "a browser helper outlived the timeout"


# ---------------------------------------------------------------- the README screenshot


def test_readme_screenshot_is_current(files: dict[str, bytes]) -> None:
    """Verify that docs/screenshot-index.png shows the index as the current package renders it."""
    assert README_SHOT.is_file(), "docs/screenshot-index.png is missing: run ./scripts/screenshot"
    recorded = png_text(README_SHOT).get(SCREENSHOT_KEY)
    assert recorded == screenshot_digest(files["index.html"]), (
        "docs/screenshot-index.png shows an older index page (header or diagram changed): run ./scripts/screenshot"
    )


def test_png_text_round_trip(tmp_path: Path) -> None:
    """Verify that setting a PNG text entry twice keeps one entry and every chunk's CRC stays valid."""
    png = tmp_path / "x.png"
    png.write_bytes(README_SHOT.read_bytes())
    set_png_text(png, "k", "one")
    set_png_text(png, "k", "two")
    assert png_text(png)["k"] == "two"
    data = png.read_bytes()
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and kinds.count(b"tEXt") == len(png_text(png))
