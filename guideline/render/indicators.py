"""Draws summary MeasureReports as one offline HTML page: a bar chart per indicator, overall and per stratum.

`guideline measure --html FILE` writes what `render_report` returns. The page has no scripts and
loads nothing (a Content-Security-Policy forbids it): bars are inline SVG, counts are printed as
labels and repeated in each bar's `<title>` (shown on hover), and a table under each chart holds
the same numbers for readers who cannot see the chart. A proportion whose denominator is 0 has no
score: it is labelled "undefined", never drawn as 0 %.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from guideline.core.errors import BadInputError

# MeasureReport.group.population.code (http://terminology.hl7.org/CodeSystem/measure-population).
INITIAL = "initial-population"
DENOMINATOR = "denominator"
EXCLUSION = "denominator-exclusion"
EXCEPTION = "denominator-exception"
NUMERATOR = "numerator"
# Measure.scoring codes (http://terminology.hl7.org/CodeSystem/measure-scoring) drawn as a count, not a share.
COUNT_SCORING = frozenset({"cohort", "continuous-variable"})
# Project safety rules are marked on artifacts as relatedArtifact labelled so (docs/traceability.md section 5).
_SAFETY_LABEL = re.compile(r"^project-safety-rule-\d+$")

# Chart geometry in px. The label column is sized from the longest label at CHAR_PX per character
# (a generous estimate for the sans-serif below at 14 px), so labels never run into the bars.
BAR_W = 360
ROW_H = 30
BAR_H = 18
CHAR_PX = 8.2
GAP = 12
HEAD_H = 24

CSS = """\
*{box-sizing:border-box}
html{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;font-size:16px;line-height:1.5;color:#111;background:#fff}
body{margin:0;padding:0 1.5rem 2rem;max-width:76rem}
h1{font-size:1.6rem;margin:1.25rem 0 .5rem}
h2{font-size:1.25rem;margin:2rem 0 .25rem;border-bottom:2px solid #111}
p.meta{margin:.25rem 0;color:#333}
.chart{overflow-x:auto}
.chart svg{display:block}
.chart text{font-size:14px;fill:#111}
.chart text.group{font-weight:bold}
.chart rect.track{fill:#f1f1f1;stroke:#999}
.chart rect.bar{fill:#2b5d8a}
.chart rect.bar.count{fill:#555}
.chart rect.bar.alert{fill:#b00020}
.chart rect.none{stroke:#777;stroke-dasharray:4 3}
.chart text.alert{fill:#b00020;font-weight:bold}
.flag{display:inline-block;border:2px solid #b00020;color:#b00020;font-weight:bold;padding:0 .4rem}
.ok{display:inline-block;border:2px solid #111;padding:0 .4rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #999;padding:.25rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f4f4f4}
caption{text-align:left;font-weight:bold}
.note{border:1px dashed #999;padding:.5rem .75rem;background:#fafafa}
"""

# Nothing may load: no scripts, no fonts, no images from anywhere; only the inline style sheet.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class Row:
    """One bar: the whole population or one stratum, its population counts and score (None: undefined)."""

    label: str
    counts: dict[str, int]
    score: float | None

    @property
    def effective_denominator(self) -> int | None:
        """Denominator less exclusions and exceptions; None when the report gives no denominator."""
        if DENOMINATOR not in self.counts:
            return None
        return self.counts[DENOMINATOR] - self.counts.get(EXCLUSION, 0) - self.counts.get(EXCEPTION, 0)


@dataclass(frozen=True)
class Chart:
    """One indicator's chart: what it is, its period, and its rows grouped as overall then each stratifier."""

    key: str
    title: str
    description: str
    period: str
    counted: str  # the population drawn as a count (a safety indicator, expected 0); "" for a share
    groups: tuple[tuple[str, tuple[Row, ...]], ...]

    @property
    def count(self) -> bool:
        """Drawn as a count of patients rather than as a share."""
        return bool(self.counted)


def _e(text: object) -> str:
    """Text escaped for HTML and SVG, quotes included (it goes into attributes too)."""
    return html.escape(str(text), quote=True)


def _int(value: Any, where: str) -> int:
    """A population count, or a BadInputError at `where` (a bool is no count, though Python says it is an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInputError(f"{where}.count: a population count must be a whole number >= 0, not {value!r}")
    return value


def _concept_text(concept: Any) -> str:
    """A CodeableConcept as a label: its text, else the first coding's display, else its code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    for c in concept.get("coding") or []:
        if isinstance(c, dict) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


def _counts(pops: Any, where: str) -> dict[str, int]:
    """A group's or stratum's population counts by population code."""
    counts: dict[str, int] = {}
    for i, pop in enumerate(pops or []):
        if not isinstance(pop, dict):
            raise BadInputError(f"{where}.population[{i}]: not an object")
        code = _code_of(pop.get("code"))
        if code:
            counts[code] = _int(pop.get("count", 0), f"{where}.population[{i}]")
    return counts


def _score(node: dict[str, Any], counts: dict[str, int], where: str) -> float | None:
    """The reported score, or the numerator over the effective denominator; None when there is none."""
    row = Row("", counts, None)
    denominator = row.effective_denominator
    if denominator is not None and denominator <= 0:
        return None  # no one to measure: undefined, whatever a server wrote
    value = (node.get("measureScore") or {}).get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInputError(f"{where}.measureScore.value: a number is needed, not {value!r}")
        return float(value)
    if denominator is not None and NUMERATOR in counts:
        return counts[NUMERATOR] / denominator
    return None


def _stratum_label(stratum: dict[str, Any]) -> str:
    """A stratum's value as a label (its components joined when it has several)."""
    label = _concept_text(stratum.get("value"))
    if label:
        return label
    parts = [_concept_text(c.get("value")) for c in stratum.get("component") or [] if isinstance(c, dict)]
    return ", ".join(p for p in parts if p) or "(no value)"


def _period(report: dict[str, Any]) -> str:
    """The measurement period as the page states it."""
    period = report.get("period") or {}
    start, end = str(period.get("start", "")), str(period.get("end", ""))
    return f"{start} to {end}" if start or end else "not given"


def _canonical(url: str) -> str:
    """A canonical without its |version: a report names the Measure version it used, the match ignores it."""
    return url.partition("|")[0]


def _code_of(concept: Any) -> str:
    """A CodeableConcept's first code ("" without one)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for c in codings or []:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            return str(c["code"])
    return ""


def counted_population(measure: dict[str, Any]) -> str:
    """The population a Measure's results are read as a count of patients (expected 0), or "" for a share.

    A cohort counts its initial population. A safety indicator scored as a proportion (so that servers
    report its at-risk denominator too) counts its numerator: one whose improvementNotation is
    `decrease` and that names the project safety rules it checks (relatedArtifact `project-safety-rule-N`).
    """
    scoring = _code_of(measure.get("scoring"))
    if scoring in COUNT_SCORING:
        return INITIAL
    safety = any(
        isinstance(ra, dict) and _SAFETY_LABEL.match(str(ra.get("label", "")))
        for ra in measure.get("relatedArtifact") or []
    )
    if safety and _code_of(measure.get("improvementNotation")) == "decrease":
        return NUMERATOR
    return ""


def _chart(report: Any, index: int, measures: dict[str, dict[str, Any]]) -> Chart:
    """What one report's chart shows; BadInputError located in `reports[index]` when it cannot be drawn."""
    where = f"reports[{index}]"
    if not isinstance(report, dict) or report.get("resourceType") != "MeasureReport":
        raise BadInputError(f"{where}: not a MeasureReport")
    groups = report.get("group") or []
    if not groups or not isinstance(groups[0], dict):
        raise BadInputError(f"{where}.group: a summary MeasureReport needs a group[0] with the population counts")
    group = groups[0]
    gwhere = f"{where}.group[0]"
    url = _canonical(str(report.get("measure", "")))
    measure = measures.get(url)
    counts = _counts(group.get("population"), gwhere)
    # Without the Measure, a report with no denominator can only be a count.
    if measure is not None:
        counted = counted_population(measure)
    else:
        counted = INITIAL if DENOMINATOR not in counts else ""
    count = bool(counted)
    rows: list[tuple[str, tuple[Row, ...]]] = [
        ("Overall", (Row("All patients", counts, None if count else _score(group, counts, gwhere)),))
    ]
    for s, strat in enumerate(group.get("stratifier") or []):
        swhere = f"{gwhere}.stratifier[{s}]"
        if not isinstance(strat, dict):
            raise BadInputError(f"{swhere}: not an object")
        name = ", ".join(t for t in (_concept_text(c) for c in strat.get("code") or []) if t) or f"Stratifier {s + 1}"
        strata: list[Row] = []
        for t, stratum in enumerate(strat.get("stratum") or []):
            twhere = f"{swhere}.stratum[{t}]"
            if not isinstance(stratum, dict):
                raise BadInputError(f"{twhere}: not an object")
            sc = _counts(stratum.get("population"), twhere)
            strata.append(Row(_stratum_label(stratum), sc, None if count else _score(stratum, sc, twhere)))
        rows.append((f"By {name}", tuple(strata)))
    m = measure or {}
    title = str(m.get("title") or m.get("name") or url or f"MeasureReport {report.get('id', index)}")
    return Chart(
        key=str(m.get("name") or report.get("id") or index),
        title=title,
        description=str(m.get("description", "")),
        period=_period(report),
        counted=counted,
        groups=tuple(rows),
    )


def _pct(score: float) -> str:
    """A score (0 to 1) as a percentage with one decimal."""
    return f"{score * 100:.1f} %"


def _value_text(chart: Chart, row: Row) -> str:
    """What a bar says beside it: the score with its counts, the count, or why there is no score."""
    if chart.count:
        n = row.counts.get(chart.counted, 0)
        # A safety proportion's denominator is who was at risk: "2 of 5 patients".
        den = row.effective_denominator if chart.counted == NUMERATOR else None
        of = f" of {den}" if den is not None else ""
        return f"{n}{of} patient{'s' if (den if den is not None else n) != 1 else ''}" + (" (expected 0)" if n else "")
    if row.score is None:
        return "undefined (denominator 0)"
    num, den = row.counts.get(NUMERATOR), row.effective_denominator
    return _pct(row.score) + (f" ({num} of {den})" if num is not None and den is not None else "")


def _hover(chart: Chart, row: Row) -> str:
    """A bar's hover text: what it says beside it, then every population count."""
    counts = ", ".join(f"{k} {v}" for k, v in row.counts.items()) or "no population counts"
    return f"{chart.title}, {row.label}: {_value_text(chart, row)}; {counts}"


def _svg(chart: Chart, n: int) -> str:
    """The chart as inline SVG: a track per row, the bar inside it, the value to its right."""
    labels = [row.label for _, rows in chart.groups for row in rows] + [g for g, _ in chart.groups]
    label_w = int(max(len(x) for x in labels) * CHAR_PX) + GAP
    top = 0
    body: list[str] = []
    max_count = max((row.counts.get(chart.counted, 0) for _, rows in chart.groups for row in rows), default=0) or 1
    for group, rows in chart.groups:
        top += HEAD_H
        body.append(f'<text class="group" x="0" y="{top - 6}">{_e(group)}</text>')
        if not rows:
            body.append(f'<text x="{label_w}" y="{top + 18}">no strata reported</text>')
            top += ROW_H
        for row in rows:
            y = top + (ROW_H - BAR_H) // 2
            text_y = top + ROW_H // 2 + 5
            if chart.count:
                people = row.counts.get(chart.counted, 0)
                # Against who was at risk when the report says (a safety proportion's denominator), so
                # "1 of 3" is a third of the track; a cohort against the largest count in the chart.
                den = row.effective_denominator if chart.counted == NUMERATOR else None
                w = round(BAR_W * min(people / den, 1.0)) if den else round(BAR_W * people / max_count)
                cls = "bar count alert" if people else "bar count"
            elif row.score is not None:
                w = round(BAR_W * min(max(row.score, 0.0), 1.0))
                cls = "bar"
            else:
                w, cls = 0, ""
            shape = (
                f'<rect class="none" fill="url(#hatch-{n})" x="{label_w}" y="{y}" width="{BAR_W}" height="{BAR_H}"/>'
                if not chart.count and row.score is None
                else f'<rect class="track" x="{label_w}" y="{y}" width="{BAR_W}" height="{BAR_H}"/>'
                f'<rect class="{cls}" x="{label_w}" y="{y}" width="{w}" height="{BAR_H}"/>'
            )
            alert = ' class="alert"' if chart.count and row.counts.get(chart.counted, 0) else ""
            body.append(
                f'<g class="row" data-label="{_e(row.label)}"><title>{_e(_hover(chart, row))}</title>'
                f'<text x="0" y="{text_y}">{_e(row.label)}</text>{shape}'
                f'<text{alert} x="{label_w + BAR_W + 8}" y="{text_y}">{_e(_value_text(chart, row))}</text></g>'
            )
            top += ROW_H
    value_w = int(max(len(_value_text(chart, row)) for _, rows in chart.groups for row in rows) * CHAR_PX) + GAP
    width = label_w + BAR_W + 8 + value_w
    what = "count of patients" if chart.count else "share of the denominator, 0 to 100 %"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="chart-{n}" role="img" width="{width}" height="{top + 6}" '
        f'viewBox="0 0 {width} {top + 6}" aria-labelledby="chart-{n}-title">'
        f'<title id="chart-{n}-title">{_e(chart.title)}: {what}, overall and per stratum</title>'
        f'<defs><pattern id="hatch-{n}" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        '<rect width="8" height="8" fill="#fff"/><line x1="0" y1="0" x2="0" y2="8" stroke="#bbb" stroke-width="3"/>'
        "</pattern></defs>" + "".join(body) + "</svg>"
    )


def _table(chart: Chart) -> str:
    """The chart's numbers as a table, for readers who cannot see the chart."""
    codes = [INITIAL, DENOMINATOR, EXCLUSION, EXCEPTION, NUMERATOR]
    seen = [c for c in codes if any(c in row.counts for _, rows in chart.groups for row in rows)]
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in seen)
    score_head = "" if chart.count else '<th scope="col">score</th>'
    body = "".join(
        f'<tr><th scope="row">{_e(group if row.label == group else f"{group}: {row.label}")}</th>'
        + "".join(f'<td class="n">{row.counts[c] if c in row.counts else "-"}</td>' for c in seen)
        + ("" if chart.count else f"<td>{_e(_pct(row.score) if row.score is not None else 'undefined')}</td>")
        + "</tr>"
        for group, rows in chart.groups
        for row in rows
    )
    return (
        f"<table><caption>Counts for {_e(chart.title)}</caption>"
        f'<thead><tr><th scope="col">Group</th>{head}{score_head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _section(chart: Chart, n: int) -> str:
    """One indicator's section: heading, description, period, the chart and its table."""
    total = chart.groups[0][1][0].counts.get(chart.counted, 0)
    if chart.count:
        status = (
            f'<p><span class="flag">{total} patient{"s" if total != 1 else ""}: expected 0</span> '
            "A count that should be 0; every patient counted needs review.</p>"
            if total
            else '<p><span class="ok">0 patients</span> as expected.</p>'
        )
    else:
        status = ""
    desc = f"<p>{_e(chart.description)}</p>" if chart.description else ""
    kind = f"count of the {chart.counted} (expected 0)" if chart.count else "proportion"
    return (
        f'<section id="indicator-{n}" aria-labelledby="indicator-{n}-h"><h2 id="indicator-{n}-h">{_e(chart.title)}'
        f"</h2>{desc}"
        f'<p class="meta">Measurement period: <strong>{_e(chart.period)}</strong> · scoring: {kind} · '
        f"<code>{_e(chart.key)}</code></p>{status}"
        f'<div class="chart">{_svg(chart, n)}</div>'
        f"<details><summary>The numbers as a table</summary>{_table(chart)}</details></section>"
    )


def render_report(reports: list[dict[str, Any]], measures: list[dict[str, Any]]) -> str:
    """One complete, offline HTML page with a bar chart per indicator (one per summary MeasureReport).

    Each report is matched to its Measure by `MeasureReport.measure` (version ignored) for its title,
    description and scoring; without one, the report's canonical is the title and a report without a
    denominator is drawn as a count. Raises BadInputError, located as `reports[i].group[0]...`, when
    a report is not a summary MeasureReport with whole-number counts.
    """
    by_url = {_canonical(str(m.get("url", ""))): m for m in measures if isinstance(m, dict) and m.get("url")}
    charts = [_chart(r, i, by_url) for i, r in enumerate(reports)]
    periods = sorted({c.period for c in charts})
    period = periods[0] if len(periods) == 1 else "see each indicator"
    plural = "s" if len(charts) != 1 else ""
    sections = "".join(_section(c, i + 1) for i, c in enumerate(charts)) or "<p><i>No MeasureReport given.</i></p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Indicators · {len(charts)} MeasureReport{plural}</title>
<style>
{CSS}</style>
</head>
<body>
<main>
<h1>Indicators</h1>
<p class="meta">Measurement period: <strong>{_e(period)}</strong> · {len(charts)} indicator{plural}</p>
<p class="note">These indicators are the project's, not the source guideline's: they measure how often what the
recommendations propose happened. A bar is a score overall and per stratum; hover a bar for its counts. A hatched,
empty bar is an undefined score (no one in the denominator), not 0 %. A count indicator shows patients who should
not exist (expected 0) and is marked when it is not 0.</p>
{sections}
</main>
</body>
</html>
"""
