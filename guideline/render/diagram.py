"""Lays out the pathway decision diagram (trigger → population → recommendations → activities) and draws it as SVG."""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass, field

# Text metrics. SVG does not wrap text, so lines are wrapped here by an estimated character
# width. The estimates are for DejaVu Sans / DejaVu Sans Mono (what Debian's Chromium falls back
# to), rounded up; the browser test measures the real text against its box.
FONT_PX = {"badge": 11, "title": 14, "body": 13, "code": 12}
CHAR_PX = {"badge": 8.2, "title": 8.9, "body": 7.5, "code": 7.4}
LINE_PX = {"badge": 16, "title": 19, "body": 17, "code": 16}
PAD = 10  # inner padding of every box
STRIPE = 10  # width of the left stripe that carries each kind's fill pattern
MARGIN = 16
GAP_X = 48  # room between columns for the connector "bus" lines
GAP_Y = 10  # between activities of one recommendation
BAND_GAP = 22  # between recommendation bands

# Column widths (px at 100 % zoom): the diagram is ~1130 px wide and scrolls rather than shrinks.
TRIGGER_W = 150
POPULATION_W = 180
RECOMMENDATION_W = 340
ACTIVITY_W = 300

# Box roles. Orders, messages and information differ by label, border style and stripe pattern,
# never by colour alone, so they stay distinct in grey-scale print.
ORDER = "order"
MESSAGE = "message"
INFO = "info"
ROLES = ("trigger", "population", "recommendation", "recommendation-info", ORDER, MESSAGE, INFO)


@dataclass(frozen=True)
class ActivityNode:
    """One activity a recommendation proposes (or the information-only note of one that proposes none)."""

    key: str
    title: str
    kind: str  # ORDER | MESSAGE | INFO
    resource_type: str
    codes: tuple[str, ...] = ()
    condition: str = ""  # plain-language sub-action condition, if any
    href: str = ""


@dataclass(frozen=True)
class RecommendationNode:
    """One recommendation in the diagram: its condition, the define deciding it, and its activities."""

    key: str
    title: str
    condition: str  # plain-language applicability, one line
    define: str  # Library."Define" that decides it
    rating: str
    informational: bool
    href: str
    activities: tuple[ActivityNode, ...] = ()


@dataclass(frozen=True)
class DiagramSpec:
    """What the diagram shows, independent of where things go: trigger, population, recommendations."""

    title: str
    description: str
    triggers: tuple[str, ...]
    population: str  # plain-language pathway entry condition
    population_define: str
    population_href: str
    recommendations: tuple[RecommendationNode, ...]


@dataclass(frozen=True)
class Line:
    """One line of text in a box, in one of the text styles (badge, title, body, code)."""

    text: str
    style: str  # badge | title | body | code


@dataclass(frozen=True)
class Box:
    """A placed box: its role (which sets its look), position, size, text and link."""

    key: str
    role: str
    x: float
    y: float
    w: float
    h: float
    lines: tuple[Line, ...]
    href: str = ""
    tooltip: str = ""

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def overlaps(self, other: Box) -> bool:
        """Whether the two boxes share any area (touching edges do not count)."""
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom


@dataclass(frozen=True)
class Edge:
    """A connector: a polyline from one box to another, in a line style."""

    points: tuple[tuple[float, float], ...]
    style: str  # solid | dashed | dotted
    source: str
    target: str


@dataclass
class Layout:
    """The placed diagram: its size, boxes in drawing order, connectors, and the spec it shows."""

    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    spec: DiagramSpec | None = None

    def box(self, key: str) -> Box:
        """The box with this key (StopIteration if there is none)."""
        return next(b for b in self.boxes if b.key == key)


# ---------------------------------------------------------------- text


def wrap(text: str, width_px: float, style: str) -> list[str]:
    """Wrap text to lines that fit width_px in the given style (estimated)."""
    chars = max(8, int((width_px - 2 * PAD - STRIPE) / CHAR_PX[style]))
    return textwrap.wrap(text, chars, break_on_hyphens=False) or [""]


def _lines(width: float, *parts: tuple[str, str]) -> tuple[Line, ...]:
    out: list[Line] = []
    for text, style in parts:
        if text:
            out.extend(Line(t, style) for t in wrap(text, width, style))
    return tuple(out)


def text_height(lines: tuple[Line, ...]) -> float:
    """The height the lines take, at each style's line height."""
    return sum(LINE_PX[line.style] for line in lines)


def _box(key: str, role: str, x: float, w: float, lines: tuple[Line, ...], href: str = "", tooltip: str = "") -> Box:
    return Box(key, role, x, 0.0, w, text_height(lines) + 2 * PAD, lines, href, tooltip)


def _at(box: Box, y: float) -> Box:
    return Box(box.key, box.role, box.x, y, box.w, box.h, box.lines, box.href, box.tooltip)


# ---------------------------------------------------------------- layout

ACTIVITY_BADGE = {ORDER: "ORDER", MESSAGE: "MESSAGE", INFO: "INFORMATION ONLY"}
LEGEND = (
    ("legend-recommendation", "recommendation", "RECOMMENDATION", "applies when its condition is true"),
    ("legend-order", ORDER, "ORDER", "a request is proposed (solid border)"),
    ("legend-message", MESSAGE, "MESSAGE", "text for the patient (dashed border)"),
    ("legend-info", INFO, "INFORMATION ONLY", "card text, nothing ordered (dotted)"),
)


def _activity_box(a: ActivityNode, x: float) -> Box:
    badge = ACTIVITY_BADGE[a.kind] + (f" · {a.resource_type}" if a.resource_type else "")
    return _box(
        f"act-{a.key}",
        a.kind,
        x,
        ACTIVITY_W,
        _lines(
            ACTIVITY_W,
            (badge, "badge"),
            (a.title, "title"),
            (" · ".join(a.codes), "code"),
            (f"only if: {a.condition}" if a.condition else "", "body"),
        ),
        a.href,
        a.title,
    )


def _legend(width: float) -> list[Box]:
    """The legend row across the top: one box per kind of box, placed at the top margin."""
    legend_w = (width - 2 * MARGIN - 3 * 16) / 4
    legend = [
        _box(key, role, MARGIN + i * (legend_w + 16), legend_w, _lines(legend_w, (badge, "badge"), (text, "body")))
        for i, (key, role, badge, text) in enumerate(LEGEND)
    ]
    return [_at(b, MARGIN) for b in legend]


def _recommendation_box(rec: RecommendationNode, x: float) -> Box:
    role = "recommendation-info" if rec.informational else "recommendation"
    return _box(
        f"rec-{rec.key}",
        role,
        x,
        RECOMMENDATION_W,
        _lines(
            RECOMMENDATION_W,
            ("RECOMMENDATION" + (" · INFORMATION ONLY" if rec.informational else ""), "badge"),
            (rec.title, "title"),
            (f"when {rec.condition}", "body"),
            (rec.define, "code"),
            (rec.rating, "body"),
        ),
        rec.href,
        rec.title,
    )


def _band(out: Layout, rec: RecommendationNode, y: float, x_rec: float, x_act: float) -> tuple[Box, float]:
    """Place one recommendation's band at `y`: its box beside its stacked activities, both centred.

    Adds the boxes and the recommendation-to-activity connectors to `out`; returns the
    recommendation's box and the band's height.
    """
    rbox = _recommendation_box(rec, x_rec)
    acts = [_activity_box(a, x_act) for a in rec.activities]
    stack_h = sum(b.h for b in acts) + GAP_Y * max(0, len(acts) - 1)
    band_h = max(rbox.h, stack_h)
    rbox = _at(rbox, y + (band_h - rbox.h) / 2)
    out.boxes.append(rbox)
    ay = y + (band_h - stack_h) / 2
    bus = rbox.right + GAP_X / 2
    for a, abox in zip(rec.activities, acts, strict=True):
        abox = _at(abox, ay)
        out.boxes.append(abox)
        style = "dotted" if a.kind == INFO else "dashed" if a.kind == MESSAGE else "solid"
        out.edges.append(
            Edge(
                ((rbox.right, rbox.cy), (bus, rbox.cy), (bus, abox.cy), (abox.x, abox.cy)),
                style,
                rbox.key,
                abox.key,
            )
        )
        ay += abox.h + GAP_Y
    return rbox, band_h


def _entry_boxes(spec: DiagramSpec, x_trigger: float, x_population: float, top: float, mid: float) -> tuple[Box, Box]:
    """The trigger and population boxes, centred on `mid` but never above the bands' `top`.

    (A short pathway would otherwise push them into the legend.)
    """
    tbox = _box(
        "trigger",
        "trigger",
        x_trigger,
        TRIGGER_W,
        _lines(TRIGGER_W, ("TRIGGER", "badge"), (", ".join(spec.triggers) or "(none)", "title"), ("CDS Hooks", "body")),
        tooltip="Trigger",
    )
    pbox = _box(
        "population",
        "population",
        x_population,
        POPULATION_W,
        _lines(
            POPULATION_W,
            ("POPULATION", "badge"),
            (spec.population, "title"),
            (spec.population_define, "code"),
        ),
        spec.population_href,
        "Population",
    )
    return _at(tbox, max(top, mid - tbox.h / 2)), _at(pbox, max(top, mid - pbox.h / 2))


def layout(spec: DiagramSpec) -> Layout:
    """Place every box and connector; columns left to right, one horizontal band per recommendation."""
    x_trigger = MARGIN
    x_population = x_trigger + TRIGGER_W + GAP_X
    x_rec = x_population + POPULATION_W + GAP_X
    x_act = x_rec + RECOMMENDATION_W + GAP_X
    width = x_act + ACTIVITY_W + MARGIN
    out = Layout(width=width, height=0.0, spec=spec)
    legend = _legend(width)
    out.boxes.extend(legend)
    top = MARGIN + max(b.h for b in legend) + 28

    y = top
    rec_boxes: list[Box] = []
    for rec in spec.recommendations:
        rbox, band_h = _band(out, rec, y, x_rec, x_act)
        rec_boxes.append(rbox)
        y += band_h + BAND_GAP
    bottom = y - BAND_GAP if spec.recommendations else top

    # Trigger and population, centred on the recommendation bands; drawn right after the legend.
    tbox, pbox = _entry_boxes(spec, x_trigger, x_population, top, (top + bottom) / 2)
    out.boxes[len(legend) : len(legend)] = [tbox, pbox]
    out.edges.insert(0, Edge(((tbox.right, tbox.cy), (pbox.x, pbox.cy)), "solid", tbox.key, pbox.key))
    bus = pbox.right + GAP_X / 2
    for i, rbox in enumerate(rec_boxes):
        out.edges.insert(
            1 + i,
            Edge(
                ((pbox.right, pbox.cy), (bus, pbox.cy), (bus, rbox.cy), (rbox.x, rbox.cy)), "solid", pbox.key, rbox.key
            ),
        )
    out.height = max(bottom, tbox.bottom, pbox.bottom) + MARGIN
    return out


# ---------------------------------------------------------------- SVG

_STYLE = """
text{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;fill:#111}
.badge{font-size:11px;font-weight:bold;letter-spacing:.04em;fill:#333}
.title{font-size:14px;font-weight:bold}
.body{font-size:13px}
.code{font-size:12px;font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
.edge{fill:none;stroke:#333;stroke-width:1.6}
.dashed{stroke-dasharray:7 4}
.dotted{stroke-dasharray:2 4}
a:focus rect.frame,a:hover rect.frame{stroke-width:4}
"""

# role -> (fill, stroke, stroke-width, dash array, stripe fill, corner radius)
_LOOK: dict[str, tuple[str, str, str, str, str, str]] = {
    "trigger": ("#eef6ee", "#2e5e2e", "2", "", "url(#pat-trigger)", "18"),
    "population": ("#eef6ee", "#2e5e2e", "2", "", "url(#pat-trigger)", "4"),
    "recommendation": ("#ffffff", "#111111", "2.5", "", "#111111", "4"),
    "recommendation-info": ("#ffffff", "#111111", "2.5", "2 4", "url(#pat-info)", "4"),
    ORDER: ("#e6f0fa", "#1f4e79", "2", "", "#1f4e79", "2"),
    MESSAGE: ("#fff6dc", "#6b4e00", "2", "7 4", "url(#pat-message)", "2"),
    INFO: ("#f2f2f2", "#444444", "2", "2 4", "url(#pat-info)", "2"),
}

_DEFS = """<defs>
<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">\
<path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>
<pattern id="pat-info" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">\
<rect width="6" height="6" fill="#ffffff"/><rect width="2.5" height="6" fill="#444444"/></pattern>
<pattern id="pat-message" width="6" height="6" patternUnits="userSpaceOnUse">\
<rect width="6" height="6" fill="#ffffff"/><rect width="6" height="2.5" fill="#6b4e00"/></pattern>
<pattern id="pat-trigger" width="6" height="6" patternUnits="userSpaceOnUse">\
<rect width="6" height="6" fill="#ffffff"/><circle cx="3" cy="3" r="1.6" fill="#2e5e2e"/></pattern>
</defs>"""


def _n(v: float) -> str:
    """Coordinates with at most one decimal, so the SVG is byte-stable across platforms."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _box_svg(b: Box) -> str:
    fill, stroke, sw, dash, stripe, rx = _LOOK[b.role]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    parts = [
        f'<g class="box {b.role}" id="box-{_esc(b.key)}">',
        f"<title>{_esc(b.tooltip or ' '.join(line.text for line in b.lines))}</title>",
        f'<rect class="frame" x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" height="{_n(b.h)}" rx="{rx}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="{sw}"{dash_attr}/>',
        f'<rect x="{_n(b.x + 1)}" y="{_n(b.y + 1)}" width="{STRIPE}" height="{_n(b.h - 2)}" fill="{stripe}"/>',
    ]
    ty = b.y + PAD
    for line in b.lines:
        ty += LINE_PX[line.style]
        # Baseline a quarter line above the line box bottom leaves room for descenders.
        base = ty - LINE_PX[line.style] / 4
        parts.append(f'<text class="{line.style}" x="{_n(b.x + STRIPE + PAD)}" y="{_n(base)}">{_esc(line.text)}</text>')
    parts.append("</g>")
    body = "".join(parts)
    if b.href:
        return f'<a href="{_esc(b.href)}">{body}</a>'
    return body


def to_svg(lay: Layout, *, svg_id: str = "decision-diagram") -> str:
    """The layout as an inline SVG element with a title and a description (no scripts, no external refs)."""
    spec = lay.spec
    title = spec.title if spec else "Decision diagram"
    desc = spec.description if spec else ""
    w, h = _n(lay.width), _n(lay.height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{svg_id}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'aria-labelledby="{svg_id}-title {svg_id}-desc">',
        f'<title id="{svg_id}-title">{_esc(title)}</title>',
        f'<desc id="{svg_id}-desc">{_esc(desc)}</desc>',
        f"<style>{_STYLE.strip()}</style>",
        _DEFS,
        '<g class="edges">',
    ]
    for e in lay.edges:
        pts = " ".join(f"{_n(x)},{_n(y)}" for x, y in e.points)
        out.append(
            f'<polyline class="edge {e.style}" data-from="{_esc(e.source)}" data-to="{_esc(e.target)}" '
            f'points="{pts}" marker-end="url(#arrow)"/>'
        )
    out.append("</g>")
    out.append('<g class="boxes">')
    out.extend(_box_svg(b) for b in lay.boxes)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
