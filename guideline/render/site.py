"""Renders the built package as a static, offline HTML site: decision diagram, recommendations, traceability, cases."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config, load_config
from guideline.core.fhir import QUALITY_EXT, QUALITY_SYSTEM, STRENGTH_EXT, STRENGTH_SYSTEM
from guideline.core.fsutil import check_out_dir, write_tree
from guideline.render.build import load_cases, site_model
from guideline.render.diagram import INFO, MESSAGE, ORDER, ActivityNode, DiagramSpec, RecommendationNode, layout, to_svg
from guideline.render.model import (
    QUALITY_SCALE,
    STRENGTH_SCALE,
    Activity,
    Coding,
    Condition,
    Criterion,
    Definition,
    Indicator,
    Plain,
    Quote,
    Recommendation,
    SafetyRule,
    Site,
    anchor,
    json_href,
)

# ---------------------------------------------------------------- diagram


def _rating_line(r: Recommendation) -> str:
    parts = []
    if r.strength:
        parts.append(f"strength: {r.strength.code}")
    if r.quality:
        parts.append(f"evidence: {r.quality.code}")
    return " · ".join(parts)


def diagram_spec(site: Site) -> DiagramSpec:
    """What the diagram shows: a node per recommendation and activity (an information node where nothing is ordered)."""
    recs: list[RecommendationNode] = []
    for r in site.recommendations:
        acts = [
            ActivityNode(
                key=a.definition_id,
                title=a.title,
                kind=ORDER if a.order else MESSAGE,
                resource_type=a.kind,
                codes=tuple(c.label for c in a.codes),
                condition=a.condition.summary if a.condition else "",
                href=f"{r.page}#{a.anchor}",
            )
            for a in r.activities
        ]
        if not acts:
            acts = [
                ActivityNode(
                    key=f"{r.id}-card",
                    title="Card text only; nothing is ordered",
                    kind=INFO,
                    resource_type="",
                    href=f"{r.page}#proposes",
                )
            ]
        cond = " AND ".join(c.summary for c in r.conditions) or "always"
        define = ", ".join(c.definition.qualified for c in r.conditions)
        recs.append(
            RecommendationNode(r.id, r.short_title, cond, define, _rating_line(r), r.informational, r.page, tuple(acts))
        )
    lines = [
        f"Pathway {site.pathway_id}. Trigger: {', '.join(site.triggers) or 'none'}. "
        f"Population: {site.population.summary} ({site.population.definition.qualified})."
    ]
    for r in site.recommendations:
        acts_text = (
            "; ".join(
                f"{'order' if a.order else 'non-order'} {a.kind} {a.title}"
                + (f" ({', '.join(c.label for c in a.codes)})" if a.codes else "")
                + (f" only if {a.condition.summary}" if a.condition else "")
                for a in r.activities
            )
            or "information only, nothing ordered"
        )
        lines.append(f"{r.short_title}: when {' AND '.join(c.summary for c in r.conditions)}; proposes {acts_text}.")
    return DiagramSpec(
        title=f"Decision diagram: {site.pathway_title}",
        description=" ".join(lines),
        triggers=site.triggers,
        population=site.population.summary[:1].upper() + site.population.summary[1:],
        population_define=site.population.definition.qualified,
        population_href="#population",
        recommendations=tuple(recs),
    )


# ---------------------------------------------------------------- HTML

CSS = """\
:root{--fg:#111;--muted:#444;--line:#999;--soft:#f4f4f4;--link:#0b4f8a}
*{box-sizing:border-box}
html{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;font-size:16px;line-height:1.5;color:var(--fg);background:#fff}
body{margin:0}
a{color:var(--link)}
a:focus{outline:3px solid #000;outline-offset:2px}
.skip{position:absolute;left:-999px}
.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}
header.site,footer.site{background:var(--soft);border-bottom:1px solid var(--line);padding:.5rem 1.5rem}
footer.site{border-top:1px solid var(--line);border-bottom:0;margin-top:3rem;font-size:.875rem;color:var(--muted)}
header.site p{margin:0;font-weight:bold}
header.site nav ul{list-style:none;margin:.25rem 0 0;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1.25rem}
main{padding:0 1.5rem;max-width:76rem}
h1{font-size:1.75rem;line-height:1.25;margin:1.25rem 0 .5rem}
h2{font-size:1.35rem;margin:2rem 0 .5rem;border-bottom:2px solid var(--fg)}
h3{font-size:1.1rem;margin:1.5rem 0 .5rem}
h4{font-size:1rem;margin:1rem 0 .25rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem}
dl.meta dt{font-weight:bold}
dl.meta dd{margin:0}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th{background:var(--soft)}
caption{text-align:left;font-weight:bold;padding:.25rem 0}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.85rem}
pre{background:var(--soft);border-left:4px solid var(--fg);padding:.5rem .75rem;overflow-x:auto;white-space:pre-wrap}
td blockquote{margin:0}
figure.quote{margin:.75rem 0 1rem;border-left:6px double var(--fg);padding:.25rem 1rem}
figure.quote blockquote{margin:0;font-size:1.05rem}
figure.quote figcaption{color:var(--muted);font-size:.875rem}
figure.diagram-figure{margin:1rem 0}
.facts span{white-space:nowrap}
.diagram{overflow-x:auto;border:1px solid var(--line);padding:.25rem;background:#fff}
.diagram svg{display:block}
.pair{display:grid;grid-template-columns:minmax(16rem,1fr) minmax(20rem,1.4fr);gap:1rem;align-items:start}
@media (max-width:56rem){.pair{grid-template-columns:1fr}}
.plain ul{margin:.25rem 0;padding-left:1.25rem}
.op{font-weight:bold;letter-spacing:.03em}
.tag{display:inline-block;border:2px solid var(--fg);padding:0 .4rem;font-size:.8rem;font-weight:bold}
.tag.info{border-style:dotted}
.tag.message{border-style:dashed}
.note{border:1px dashed var(--line);padding:.5rem .75rem;background:#fafafa}
ul.cases{columns:16rem;padding-left:1.25rem}
@media print{header.site nav,.skip{display:none}.diagram{overflow:visible;border:0}a{color:inherit}}
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _nav(current: str) -> str:
    items = [
        ("index.html", "Overview and diagram"),
        ("traceability.html", "Traceability"),
        ("cases.html", "Test cases"),
        ("resources.html", "Raw FHIR JSON"),
    ]
    current_attr = ' aria-current="page"'
    lis = "".join(f'<li><a href="{h}"{current_attr if h == current else ""}>{_e(t)}</a></li>' for h, t in items)
    return f'<nav aria-label="Site"><ul>{lis}</ul></nav>'


def _page(site: Site, current: str, title: str, body: str) -> bytes:
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · {_e(site.name)} {_e(site.version)}</title>
<link rel="stylesheet" href="style.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="site">
<p><a href="index.html">{_e(site.title)}</a> · version {_e(site.version)} · {_e(site.status)}</p>
{_nav(current)}
</header>
<main id="main">
{body}
</main>
<footer class="site">
<p>Generated by <code>guideline render</code> from package {_e(site.package_id)}#{_e(site.version)} \
({_e(site.date)}). Static pages: no scripts, no external resources.</p>
</footer>
</body>
</html>
"""
    return doc.encode("utf-8")


def _quote_html(q: Quote) -> str:
    cite = f"<figcaption>— <cite>{_e(q.cite)}</cite></figcaption>" if q.cite else ""
    return f'<figure class="quote"><blockquote><p>{_e(q.text)}</p></blockquote>{cite}</figure>'


def _plain_html(p: Plain) -> str:
    if p.op in ("all", "any"):
        head = "all of these are true:" if p.op == "all" else "any of these is true:"
        items = "".join(f"<li>{_plain_html(c)}</li>" for c in p.children)
        return f'<span class="op">{head}</span><ul>{items}</ul>'
    if p.op == "not":
        return '<span class="op">NOT</span> ' + "".join(_plain_html(c) for c in p.children)
    if p.op == "ref":
        name = f'<a href="#{_e(p.anchor)}">{_e(p.text)}</a>' if p.anchor else _e(p.text)
        if p.children:
            return f"{name}, that is {_plain_html(p.children[0])}"
        return name
    return f"<code>{_e(p.text)}</code>"


def _condition_html(c: Condition, lead: str) -> str:
    return (
        '<div class="pair">'
        f'<div class="plain"><p>{_e(lead)} {_plain_html(c.plain)}</p></div>'
        f'<div class="cql"><p>CQL define <a href="#{_e(c.definition.anchor)}"><code>{_e(c.definition.qualified)}'
        f"</code></a>:</p><pre><code>{_e(c.definition.cql)}</code></pre></div>"
        "</div>"
    )


def _codings_table(rows: list[tuple[str, Coding]], caption: str, first: str = "") -> str:
    if not rows:
        return ""
    head = (f'<th scope="col">{_e(first)}</th>' if first else "") + (
        '<th scope="col">System</th><th scope="col">Code</th><th scope="col">Display</th>'
    )
    body = "".join(
        "<tr>"
        + (f"<td>{_e(k)}</td>" if first else "")
        + f"<td>{_e(c.system_name)}<br><code>{_e(c.system)}</code></td><td><code>{_e(c.code)}</code></td>"
        f"<td>{_e(c.display) or '<i>(no display)</i>'}</td></tr>"
        for k, c in rows
    )
    return f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rating_rows(r: Recommendation) -> str:
    rows = []
    for label, rating, scale in (
        ("Strength of recommendation", r.strength, STRENGTH_SCALE),
        ("Quality of evidence", r.quality, QUALITY_SCALE),
    ):
        if rating is None:
            rows.append(f'<tr><th scope="row">{label}</th><td colspan="3"><i>not rated</i></td></tr>')
            continue
        rows.append(
            f'<tr><th scope="row">{label}</th><td><strong>{_e(rating.display or rating.code)}</strong> '
            f"(<code>{_e(rating.code)}</code>)</td><td>{_e(' | '.join(scale))}</td><td>{_e(rating.text)}</td></tr>"
        )
    return "".join(rows)


def _case_links(ids: tuple[str, ...]) -> str:
    if not ids:
        return "<p><i>none</i></p>"
    return (
        '<ul class="cases">'
        + "".join(f'<li><a href="cases.html#{_e(anchor("case", i))}">{_e(i)}</a></li>' for i in ids)
        + "</ul>"
    )


def _definitions_html(defs: tuple[Definition, ...], level: int) -> str:
    out: list[str] = []
    lib = ""
    for d in defs:
        if d.library != lib:
            lib = d.library
            out.append(f"<h{level}>Library {_e(lib)}</h{level}>")
        out.append(
            f'<section id="{_e(d.anchor)}" aria-label="{_e(d.qualified)}"><h{level + 1}>{_e(d.name)} '
            f"<small>({_e(d.kind)})</small></h{level + 1}><pre><code>{_e(d.cql)}</code></pre></section>"
        )
    return "".join(out)


def _about_html(site: Site) -> str:
    """The package metadata as a definition list."""
    meta = [
        ("Version", site.version),
        ("Status", site.status + (" (experimental)" if site.experimental else "")),
        ("Date", site.date),
        ("Publisher", site.publisher),
        ("Canonical base", site.canonical),
        ("Package", f"{site.package_id}#{site.version}"),
        ("FHIR version", site.fhir_version),
        ("License", site.license),
    ]
    return "".join(
        f"<dt>{_e(k)}</dt><dd>{f'<code>{_e(v)}</code>' if k in ('Canonical base', 'Package') else _e(v)}</dd>"
        for k, v in meta
    )


def _recommendation_row(r: Recommendation) -> str:
    """A recommendation's row in the overview table: conditions, ratings, what it proposes, cases."""
    proposes = (
        "<ul>"
        + "".join(
            f'<li><a href="{r.page}#{_e(a.anchor)}">{_e(a.title)}</a> '
            f'<span class="tag{"" if a.order else " message"}">{"ORDER" if a.order else "MESSAGE"}</span></li>'
            for a in r.activities
        )
        + "</ul>"
        if r.activities
        else '<span class="tag info">INFORMATION ONLY</span>'
    )
    return (
        f'<tr><td><a href="{r.page}">{_e(r.title)}</a><br>{_e(r.short_title)}</td>'
        f"<td>{_e(' AND '.join(c.summary for c in r.conditions))}</td>"
        f"<td>{_e(r.strength.code if r.strength else '-')}</td><td>{_e(r.quality.code if r.quality else '-')}</td>"
        f"<td>{proposes}</td><td>{len(r.fires_in)}</td></tr>"
    )


def _index_page(site: Site, svg: str) -> bytes:
    dl = _about_html(site)
    rows = [_recommendation_row(r) for r in site.recommendations]
    citations = "".join(_quote_html(q) for q in site.citations) or "<p><i>no citation recorded</i></p>"
    source = site.citations[0].cite or site.citations[0].text if site.citations else "not recorded"
    facts = " · ".join(
        f"<span><strong>{_e(k)}</strong> {_e(v)}</span>"
        for k, v in (("Version", site.version), ("Status", site.status), ("Publisher", site.publisher))
    )
    body = f"""<h1>{_e(site.title)}</h1>
<p class="facts">{facts}</p>
<p><strong>Source:</strong> <a href="#source">{_e(source)}</a></p>
<h2 id="diagram">Decision diagram</h2>
<figure class="diagram-figure">
<div class="diagram">
{svg}
</div>
<figcaption>Left to right: the trigger, the population the pathway applies to
(<a href="#population">its condition</a>), each recommendation with the condition that decides it, and
what it proposes. Orders have a solid border and a solid stripe; messages to the patient a dashed border and
a lined stripe; information-only items a dotted border and a hatched stripe. Each box links to its
details; <a href="#recommendations">the table below</a> has the same content.</figcaption>
</figure>
<h2 id="recommendations">Recommendations</h2>
<p>{_e(site.pathway_description)}</p>
<table>
<caption>Recommendations of {_e(site.pathway_title)}, in pathway order</caption>
<thead><tr><th scope="col">Recommendation</th><th scope="col">Applies when</th><th scope="col">Strength</th>
<th scope="col">Evidence</th><th scope="col">Proposes</th><th scope="col">Test cases where it fires</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
{_indicators_html(site)}<h2 id="about">About this package</h2>
<dl class="meta">{dl}</dl>
<h2 id="source">Source</h2>
{citations}
<p>Every recommendation quotes the source sentences it rests on (see each recommendation and the
<a href="traceability.html">traceability table</a>).</p>
{_safety_html(site.safety_rules, _RULES_INTRO)}
<h2 id="population">Population</h2>
<p>The pathway <code>PlanDefinition/{_e(site.pathway_id)}</code> runs for
{_e(", ".join(site.triggers) or "no trigger")} (CDS Hooks) and applies to a patient when its condition is true.
Each recommendation then checks its own condition.</p>
{_condition_html(site.population, "Applies when")}
{_definitions_html(site.definitions, 3)}
<h2 id="usage">Usage notes</h2>
<p class="note">{_e(site.pathway_usage) or "<i>none</i>"}</p>
"""
    return _page(site, "index.html", "Overview", body)


def _activity_html(r: Recommendation, a: Activity) -> str:
    kind = "ORDER" if a.order else "MESSAGE" if a.kind == "CommunicationRequest" else "NOT AN ORDER"
    rows = [
        ("Creates", f"{a.kind} (intent {a.intent})" if a.intent else a.kind),
        ("Priority", a.priority),
        ("Action in the PlanDefinition", a.action_title),
        ("Definition", a.description),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows if v)
    text = ""
    if a.text:
        label = "Message text" if a.kind == "CommunicationRequest" else "Dosage"
        text = f'<p><strong>{label}:</strong></p><p class="note">{_e(a.text)}</p>'
    cond = _condition_html(a.condition, "Only when") if a.condition else ""
    codes = (
        "<p>Codes on the generated request: "
        + ", ".join(f"<code>{_e(c.label)}</code>" + (f" ({_e(c.display)})" if c.display else "") for c in a.codes)
        + ".</p>"
        if a.codes
        else "<p>The generated request carries no clinical code.</p>"
    )
    return f"""<section id="{_e(a.anchor)}" aria-label="{_e(a.title)}">
<h3>{_e(a.title)} <span class="tag{"" if a.order else " message"}">{kind}</span></h3>
<dl class="meta">{dl}</dl>
{codes}
{_codings_table(list(a.codings), f"Codings on ActivityDefinition/{a.definition_id}", "Element")}
{text}
{cond}
<p>Raw JSON: <a href="{_e(a.json_href)}">ActivityDefinition/{_e(a.definition_id)}</a></p>
</section>"""


def _proposes_html(r: Recommendation) -> str:
    """What a recommendation's page says it proposes: dynamic card text, then each activity."""
    dyn = "".join(
        f"<p>The card's <code>{_e(d.path)}</code> is computed per patient by "
        f'<a href="#{_e(d.definition.anchor)}"><code>{_e(d.definition.qualified)}</code></a>; '
        "the text above is the static default.</p>"
        for d in r.dynamic
    )
    if r.activities:
        acts = "".join(_activity_html(r, a) for a in r.activities)
    else:
        acts = (
            '<p><span class="tag info">INFORMATION ONLY</span> This recommendation shows the card text above; '
            "nothing is ordered.</p>"
        )
    return f"{dyn}\n{acts}"


def _value_sets_html(r: Recommendation) -> str:
    """Each value set the logic uses, with its expansion; then the codes it uses directly."""
    vsets = (
        "".join(
            f'<section id="{_e(v.anchor)}" aria-label="{_e(v.title)}"><h3>{_e(v.title)}</h3>'
            f"<p><code>{_e(v.url)}</code> — {_e(v.description)}</p>"
            f"{_codings_table([('', c) for c in v.expansion], f'Expansion of {v.id} ({len(v.expansion)} codes)')}"
            f'<p>Raw JSON: <a href="{_e(v.json_href)}">ValueSet/{_e(v.id)}</a></p></section>'
            for v in r.value_sets
        )
        or "<p><i>The logic uses no value set.</i></p>"
    )
    codes = ""
    if r.codes:
        body = "".join(
            f"<tr><td><code>{_e(c.library)}.&quot;{_e(c.name)}&quot;</code></td><td>{_e(c.coding.system_name)}</td>"
            f"<td><code>{_e(c.coding.code)}</code></td><td>{_e(c.coding.display)}</td></tr>"
            for c in r.codes
        )
        codes = (
            "<h3>Codes used directly</h3><table><caption>CQL code declarations the logic uses</caption>"
            '<thead><tr><th scope="col">CQL code</th><th scope="col">System</th><th scope="col">Code</th>'
            f'<th scope="col">Display</th></tr></thead><tbody>{body}</tbody></table>'
        )
    return f"{vsets}\n{codes}"


def _safety_html(rules: tuple[SafetyRule, ...], intro: str) -> str:
    """The project safety rules as their own section, apart from the source's quoted statements."""
    if not rules:
        return ""
    items = "".join(
        f'<li id="{_e(s.anchor)}"><b>Rule {s.number}.</b> {_e(s.text)}<br><small>Basis: {_e(s.basis)}</small></li>'
        for s in rules
    )
    return (
        '<h2 id="safety">Project safety rules (not from the source)</h2>'
        f'<p class="note">{_e(intro)}</p><ul class="safety">{items}</ul>'
    )


_RULES_INTRO = (
    "Added by the project's knowledge engineers so that no card reaches a patient it must not reach; they are "
    "not statements of the source and do not change its ratings. See the traceability page, section "
    '"Project safety rules".'
)


def _measured_by_html(site: Site, r: Recommendation) -> str:
    """The indicators that measure a recommendation (nothing when none does)."""
    inds = [i for i in site.indicators if any(page == r.page for _, page in i.measures)]
    if not inds:
        return ""
    items = "".join(f'<li><a href="{_e(i.page)}">{_e(i.title)}</a></li>' for i in inds)
    return f"<h2 id=\"indicators\">Indicators that measure it (the project's, not the source's)</h2><ul>{items}</ul>"


def _recommendation_page(site: Site, r: Recommendation) -> bytes:
    quotes = "".join(_quote_html(q) for q in r.quotes) or "<p><i>no quote recorded</i></p>"
    conds = "".join(
        f"<h3>Condition <code>{_e(c.definition.qualified)}</code></h3>{_condition_html(c, 'Applies when')}"
        for c in r.conditions
    )
    links = "".join(f'<li><a href="{_e(h)}">{_e(k)}</a></li>' for k, h in r.json_links)
    usage = f'<h2>Usage notes</h2><p class="note">{_e(r.usage)}</p>' if r.usage else ""
    kind = (
        '<span class="tag info">INFORMATION ONLY</span>'
        if r.informational
        else '<span class="tag">PROPOSES ORDERS</span>'
    )
    body = f"""<h1>{_e(r.title)}</h1>
<p>{kind} {_e(r.short_title)}. {_e(r.description)}</p>
<h2>Source</h2>
{quotes}
{_safety_html(r.safety_rules, _RULES_INTRO)}
<h2>Rating</h2>
<table>
<caption>Ratings (extensions on the PlanDefinition action)</caption>
<thead><tr><th scope="col">Rating</th><th scope="col">Value</th><th scope="col">Scale</th>
<th scope="col">Note</th></tr></thead>
<tbody>{_rating_rows(r)}</tbody>
</table>
<p>Rating system: the GRADE categories as HL7 terminology — strength of recommendation from
<code>{STRENGTH_SYSTEM}</code> (extension <code>{STRENGTH_EXT}</code>) and quality of evidence from
<code>{QUALITY_SYSTEM}</code> (extension <code>{QUALITY_EXT}</code>). The source grades nothing; these
ratings are the project's reading of it (its <code>docs/ratings.md</code> gives the reasons).</p>
<h2 id="applies">When it applies</h2>
<p>Trigger: {_e(", ".join(r.triggers) or "none")} (CDS Hooks). The patient must first be in the
<a href="index.html#population">pathway's population</a>.</p>
{conds}
<h2 id="proposes">What it proposes</h2>
<p><strong>Card:</strong> {_e(r.card.title)}</p>
<p class="note">{_e(r.card.detail)}</p>
{_proposes_html(r)}
<h2 id="value-sets">Value sets</h2>
{_value_sets_html(r)}
<h2 id="cql">CQL definitions it runs</h2>
<p>Every definition the conditions and card text use, from the Libraries' <code>text/cql</code>
(FHIRHelpers omitted).</p>
{_definitions_html(r.definitions, 3)}
<h2 id="cases">Test cases</h2>
<h3>Fires in ({len(r.fires_in)})</h3>
{_case_links(r.fires_in)}
<h3>Does not fire in ({len(r.silent_in)})</h3>
{_case_links(r.silent_in)}
{usage}
{_measured_by_html(site, r)}
<h2 id="json">Raw JSON</h2>
<ul>{links}</ul>
"""
    return _page(site, r.page, r.title, body)


_INDICATORS_INTRO = (
    "Indicators are the project's, not the source's: the source recommends and states no indicator. Each "
    "measures, over a population and a measurement period, how often what a recommendation proposes happened "
    "(a proportion) or, for a safety indicator, how many patients received what a project safety rule should "
    "have stopped (a count that should be 0). guideline measure --html FILE draws their results."
)


def _scoring_text(ind: Indicator) -> str:
    """How the indicator is scored, in words."""
    if ind.count:
        return (
            f"{ind.scoring}: the {ind.counted} is a count of patients a project safety rule should have stopped "
            "(expected 0)"
        )
    return f"{ind.scoring}: numerator over denominator, per measurement period" if ind.scoring else "not given"


def _indicators_html(site: Site) -> str:
    """The index's list of indicator pages (nothing when the package has no Measure)."""
    if not site.indicators:
        return ""
    rows = "".join(
        f'<tr><td><a href="{_e(i.page)}">{_e(i.title)}</a><br><code>{_e(i.name)}</code></td>'
        f"<td>{_e(i.description)}</td><td>{_e(i.scoring)}</td><td>"
        + (", ".join(f'<a href="{_e(h)}">{_e(label)}</a>' for label, h in i.measures) or "<i>none</i>")
        + "</td></tr>"
        for i in site.indicators
    )
    return f"""<h2 id="indicators">Indicators (the project's, not the source's)</h2>
<p class="note">{_e(_INDICATORS_INTRO)}</p>
<table>
<caption>Indicators: FHIR Measures of the package ({len(site.indicators)})</caption>
<thead><tr><th scope="col">Indicator</th><th scope="col">Definition</th><th scope="col">Scoring</th>
<th scope="col">Measures</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
"""


def _criteria_html(items: tuple[Criterion, ...], what: str) -> str:
    """Each population or stratifier with the CQL of the define it names."""
    if not items:
        return f"<p><i>No {_e(what)}.</i></p>"
    return "".join(
        f'<section id="{_e(c.anchor)}" aria-label="{_e(c.code)}"><h3><code>{_e(c.code)}</code></h3>'
        + (f"<p>{_e(c.description)}</p>" if c.description else "")
        + f'<div class="cql"><p>CQL define <a href="#{_e(c.definition.anchor)}"><code>{_e(c.definition.qualified)}'
        f"</code></a>:</p><pre><code>{_e(c.definition.cql)}</code></pre></div></section>"
        for c in items
    )


def _criteria_table(ind: Indicator) -> str:
    """Populations and stratifiers at a glance: what each is and the define that decides it."""
    rows = "".join(
        f'<tr><td>{_e(kind)}</td><td><a href="#{_e(c.anchor)}"><code>{_e(c.code)}</code></a></td>'
        f'<td>{_e(c.description)}</td><td><a href="#{_e(c.definition.anchor)}"><code>{_e(c.definition.qualified)}'
        "</code></a></td></tr>"
        for kind, items in (("population", ind.populations), ("stratifier", ind.stratifiers))
        for c in items
    )
    return (
        f"<table><caption>Populations and stratifiers of Measure/{_e(ind.id)}</caption>"
        '<thead><tr><th scope="col">Kind</th><th scope="col">Code</th><th scope="col">Description</th>'
        f'<th scope="col">CQL define</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _indicator_page(site: Site, ind: Indicator) -> bytes:
    """A Measure's page: definition, usage, what it measures, safety rules, criteria, CQL, raw JSON."""
    measured = (
        "<ul>" + "".join(f'<li><a href="{_e(h)}">{_e(label)}</a></li>' for label, h in ind.measures) + "</ul>"
        if ind.measures
        else "<p><i>No recommendation of the package is named in its relatedArtifact.</i></p>"
    )
    other = (
        "<p>Also related:</p><ul>" + "".join(f"<li>{_e(t)}</li>" for t in ind.other_artifacts) + "</ul>"
        if ind.other_artifacts
        else ""
    )
    meta = "".join(
        f"<dt>{_e(k)}</dt><dd>{v}</dd>"
        for k, v in (
            ("Canonical", f"<code>{_e(ind.url)}</code>"),
            ("Scoring", _e(_scoring_text(ind))),
            ("CQL library", f"<code>{_e(ind.library)}</code>"),
        )
    )
    links = "".join(f'<li><a href="{_e(h)}">{_e(k)}</a></li>' for k, h in ind.json_links)
    usage = _e(ind.usage) if ind.usage else _e(_INDICATORS_INTRO)
    tag = '<span class="tag">SAFETY COUNT, EXPECTED 0</span>' if ind.count else '<span class="tag">PROPORTION</span>'
    body = f"""<h1>{_e(ind.title)}</h1>
<p>{tag} <span class="tag info">PROJECT INDICATOR, NOT FROM THE SOURCE</span> {_e(ind.description)}</p>
<h2 id="usage">Usage: the project's indicator, not the source's</h2>
<p class="note">{usage}</p>
<dl class="meta">{meta}</dl>
<h2 id="measures">What it measures</h2>
{measured}
{other}
{_safety_html(ind.safety_rules, _RULES_INTRO)}
<h2 id="populations">Population criteria</h2>
{"".join(f"<p>{_e(d)}</p>" for d in ind.group_descriptions)}
{_criteria_table(ind)}
{_criteria_html(ind.populations, "population")}
<h2 id="stratifiers">Stratifiers</h2>
{_criteria_html(ind.stratifiers, "stratifier")}
<h2 id="cql">CQL definitions it runs</h2>
<p>Every definition the populations and stratifiers use, from the Libraries' <code>text/cql</code>
(FHIRHelpers omitted).</p>
{_definitions_html(ind.definitions, 3)}
<h2 id="json">Raw JSON</h2>
<ul>{links}</ul>
"""
    return _page(site, ind.page, ind.title, body)


def _traceability_page(site: Site) -> bytes:
    pages = {r.page: r for r in site.recommendations}
    rows = []
    for t in site.trace:
        rec = pages.get(t.page)
        target = f'<a href="{t.page}">{_e(rec.title if rec else site.pathway_title)}</a>'
        encoded = "<ul>" + "".join(f"<li><code>{_e(x)}</code></li>" for x in t.encoded) + "</ul>"
        cases = (
            ", ".join(f'<a href="cases.html#{_e(anchor("case", c))}">{_e(c)}</a>' for c in t.cases)
            if t.cases
            else "<i>none</i>"
        )
        cite = f"<br><small>— {_e(t.quote.cite)}</small>" if t.quote.cite else ""
        rows.append(
            f"<tr><td><blockquote><p>{_e(t.quote.text)}</p></blockquote>{cite}</td>"
            f"<td>{target}<br><code>{_e(t.artifact)}</code>{encoded}</td>"
            f"<td><p>{len(t.cases)} {_e(t.cases_note)}:</p><p>{cases}</p></td></tr>"
        )
    body = f"""<h1>Traceability</h1>
<p>Each row is a passage of the source, quoted verbatim in the artifact's
<code>action.documentation</code>, the artifact and definitions that encode it, and the test cases
(<code>tests/cases/*/expected.json</code>) in which it fires.</p>
<table>
<caption>Source sentence → artifact → test cases ({len(site.trace)} passages)</caption>
<thead><tr><th scope="col">Source sentence</th><th scope="col">Encoded in</th>
<th scope="col">Test cases</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
{_safety_trace_html(site)}
"""
    return _page(site, "traceability.html", "Traceability", body)


def _safety_trace_html(site: Site) -> str:
    """The project safety rules in a table of their own: rule, basis, and the recommendations they shape."""
    if not site.safety_rules:
        return ""
    rows = []
    for s in site.safety_rules:
        shaped = [r for r in site.recommendations if any(x.number == s.number for x in r.safety_rules)]
        recs = ", ".join(f'<a href="{_e(r.page)}">{_e(r.short_title)}</a>' for r in shaped) or "<i>none</i>"
        rows.append(f"<tr><td>{s.number}</td><td>{_e(s.text)}</td><td>{_e(s.basis)}</td><td>{recs}</td></tr>")
    return f"""<h2 id="safety">Project safety rules (the project's, not the source's)</h2>
<p>These rules are not in the source. They decide who must not get a card (or which card text a clinician
reads) and rest on the basis given; each is marked in the CQL, in the artifacts' <code>usage</code> and as a
<code>relatedArtifact</code> of type <code>documentation</code> labelled <code>project-safety-rule-N</code>.</p>
<table>
<caption>Project safety rules ({len(site.safety_rules)})</caption>
<thead><tr><th scope="col">#</th><th scope="col">Rule</th><th scope="col">Basis</th>
<th scope="col">Shapes</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
"""


def _code_html(code: str) -> str:
    """'http://loinc.org|1558-6' as 'LOINC 1558-6', the full system|code kept in the title."""
    system, _, value = code.partition("|")
    return f'<code title="{_e(code)}">{_e(Coding(system, value).label)}</code>'


def _cases_page(site: Site) -> bytes:
    recs = {r.id: r for r in site.recommendations}
    rows = []
    for c in site.cases:
        items = []
        for rid, codes in c.expected:
            r = recs.get(rid)
            name = f'<a href="{r.page}">{_e(r.short_title)}</a>' if r else f"<code>{_e(rid)}</code>"
            code_text = ", ".join(_code_html(x) for x in codes) or "<i>no codes (information)</i>"
            items.append(f"<li>{name}: {code_text}</li>")
        expected = f"<ul>{''.join(items)}</ul>" if items else "<p><i>no recommendation</i></p>"
        defines = ""
        if c.defines:
            defines = (
                "<details><summary>Expected define values</summary><ul>"
                + "".join(f"<li><code>{_e(lib)}.&quot;{_e(n)}&quot; = {_e(v)}</code></li>" for lib, n, v in c.defines)
                + "</ul></details>"
            )
        patient = f'<br><a href="{_e(c.patient_href)}">patient bundle (JSON)</a>' if c.patient_href else ""
        rows.append(
            f'<tr id="{_e(c.anchor)}"><th scope="row"><code>{_e(c.id)}</code>{patient}</th>'
            f"<td>{_e(c.description)}</td><td><code>{_e(c.at)}</code></td><td>{expected}{defines}</td></tr>"
        )
    body = f"""<h1>Test cases</h1>
<p>{len(site.cases)} patient scenarios from <code>tests/cases</code>. Each is evaluated at the time given;
the test suite checks that exactly the expected recommendations fire, with exactly these activity codes.</p>
<table>
<caption>Test cases and their expected recommendations</caption>
<thead><tr><th scope="col">Case</th><th scope="col">Scenario</th><th scope="col">Evaluated at</th>
<th scope="col">Expected recommendations (activity codes)</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
"""
    return _page(site, "cases.html", "Test cases", body)


def _resources_page(site: Site) -> bytes:
    rows = "".join(
        f'<tr><td>{_e(r.resource_type)}</td><td><a href="{_e(r.href)}"><code>{_e(r.id)}</code></a></td>'
        f"<td>{_e(r.title)}</td><td>{_e(r.version)}</td></tr>"
        for r in site.resources
    )
    body = f"""<h1>Raw FHIR JSON</h1>
<p>Every resource of the package as built (the same JSON as in <code>dist/bundle.json</code>), one file each.</p>
<table>
<caption>{len(site.resources)} resources</caption>
<thead><tr><th scope="col">Type</th><th scope="col">Id</th><th scope="col">Title</th>
<th scope="col">Version</th></tr></thead>
<tbody>{rows}</tbody>
</table>
"""
    return _page(site, "resources.html", "Raw FHIR JSON", body)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def site_files(pkg: Package, cases: list[dict[str, Any]], site: Site | None = None) -> dict[str, bytes]:
    """Every file of the site (relative path -> bytes); the same package and cases give the same bytes."""
    site = site or site_model(pkg, cases)
    svg = to_svg(layout(diagram_spec(site)))
    files: dict[str, bytes] = {
        "index.html": _index_page(site, svg),
        "traceability.html": _traceability_page(site),
        "cases.html": _cases_page(site),
        "resources.html": _resources_page(site),
        "style.css": CSS.encode("utf-8"),
    }
    for r in site.recommendations:
        files[r.page] = _recommendation_page(site, r)
    for ind in site.indicators:
        files[ind.page] = _indicator_page(site, ind)
    for res in pkg.resources:
        files[json_href(res)] = _dumps(res)
    for c in cases:
        patient = Path(c["_patient"])
        if patient.is_file():
            files[f"json/case-{c['id']}.json"] = patient.read_bytes()
    return dict(sorted(files.items()))


# The README's screenshot shows the index down to the diagram's caption; its PNG records this
# digest of that part of the page (scripts/screenshot), and a test compares it with a fresh render.
SCREENSHOT_KEY = "guideline:index-top-sha256"
_SCREENSHOT_END = b'<h2 id="recommendations">'


def screenshot_digest(index_html: bytes) -> str:
    """sha256 of the part of index.html the README screenshot shows (header, facts, diagram)."""
    return hashlib.sha256(index_html.partition(_SCREENSHOT_END)[0]).hexdigest()


# ---------------------------------------------------------------- writing


@dataclass
class RenderResult:
    """What `render` wrote: the site directory, its files, and the model they show."""

    out_dir: Path
    files: list[Path]
    site: Site

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


def write_site(files: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write the site atomically (see fsutil.write_tree).

    Raises UsageError (before writing anything) when `out_dir` is not a folder it may replace.
    """
    check_out_dir(out_dir, "index.html", "site")
    return write_tree(out_dir, files)


def render(
    out_dir: Path | None = None,
    cfg: Config | None = None,
    engine: Engine | None = None,
    *,
    package: Package | None = None,
) -> RenderResult:
    """Programmatic `guideline render`: build (unless given a package), model, write the site atomically."""
    cfg = cfg or (package.config if package else load_config())
    pkg = package or build_package(cfg, engine)
    cases = load_cases(cfg.cases_dir)
    site = site_model(pkg, cases)
    files = site_files(pkg, cases, site)
    out = out_dir or cfg.root / "site"
    return RenderResult(out.resolve(), write_site(files, out), site)


# ---------------------------------------------------------------- CLI
