"""Verify the rendered site in a real browser: headless Debian Chromium opens it from disk (file://)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import pytest

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.core.errors import ToolchainError
from guideline.render.indicators import render_report
from guideline.render.site import RenderResult, render
from tests.support import ROOT
from tests.support.indicators import fixture_measures, fixture_reports, with_fixture_measures
from tools.browser import chromium_path, dump_dom, run_chromium, screenshot

# Kept after the run (git-ignored), so a person can look at what the browser showed.
OUTPUT = ROOT / "test-output" / "render"
WIDTH, HEIGHT = 1280, 1600

# Runs inside the test harness page (never in the site, which has no scripts). For every page
# of the site, loaded in an iframe, it reports what the browser laid out: headings, links and ids
# from the live DOM, whether titles and the diagram are visible, and any diagram text that
# sticks out of its box (the layout wraps text by an estimated width; this measures the real one).
# style.css sets body{margin:0} (browsers default to 8px): a cheap sign the local sheet was applied.
HARNESS_JS = r"""
function visible(el, win) {
  const r = el.getBoundingClientRect();
  const cs = win.getComputedStyle(el);
  return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none' &&
    parseFloat(cs.opacity) > 0;
}
function inspect(frame) {
  const doc = frame.contentDocument, win = frame.contentWindow;
  const links = [...doc.querySelectorAll('[href],[src]')].map(e => e.getAttribute('href') ?? e.getAttribute('src'));
  const ids = [...doc.querySelectorAll('[id]')].map(e => e.id);
  const h1 = doc.querySelector('h1');
  const visibleLinks = [...doc.querySelectorAll('a')].filter(a => visible(a, win)).map(a => a.textContent.trim());
  const svg = doc.querySelector('svg#decision-diagram');
  let diagram = null;
  if (svg) {
    const r = svg.getBoundingClientRect();
    const overflow = [], boxes = [];
    for (const g of svg.querySelectorAll('g.box')) {
      const frameRect = g.querySelector('rect.frame').getBBox();
      boxes.push({id: g.id, visible: visible(g, win)});
      for (const t of g.querySelectorAll('text')) {
        const b = t.getBBox();
        if (b.x + b.width > frameRect.x + frameRect.width - 2 || b.y < frameRect.y ||
            b.y + b.height > frameRect.y + frameRect.height) {
          overflow.push(g.id + ': ' + t.textContent);
        }
      }
    }
    diagram = {visible: visible(svg, win), width: r.width, height: r.height,
               title: svg.querySelector(':scope > title')?.textContent ?? '',
               desc: svg.querySelector(':scope > desc')?.textContent ?? '', overflow, boxes};
  }
  return {title: doc.title, h1: h1 ? h1.textContent.trim() : null, h1Visible: h1 ? visible(h1, win) : false,
          links, ids, visibleLinks, diagram, scripts: doc.scripts.length,
          stylesheetApplied: win.getComputedStyle(doc.body).marginTop === '0px'};
}
window.addEventListener('load', () => {
  const out = {};
  for (const f of document.querySelectorAll('iframe')) {
    try { out[f.dataset.page] = inspect(f); } catch (e) { out[f.dataset.page] = {error: String(e)}; }
  }
  const pre = document.createElement('pre');
  pre.id = 'result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The system Chromium; missing means set-up did not run, which is a failure, not a skip."""
    try:
        return chromium_path()
    except ToolchainError as e:
        pytest.fail(f"{e.message} (the browser test needs it; it does not skip)")


@pytest.fixture(scope="module")
def site(config: Config, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> RenderResult:
    """The package's site, with the fixture Measures added so its indicator pages are browsed too."""
    pkg = with_fixture_measures(build_package(config, engine), engine)
    return render(tmp_path_factory.mktemp("browser") / "site", package=pkg)


@pytest.fixture(scope="module")
def browsed(site: RenderResult, chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every HTML page of the site as Chromium laid it out (one browser run, one iframe per page)."""
    pages = sorted(p.name for p in site.out_dir.glob("*.html"))
    frames = "\n".join(
        f'<iframe data-page="{p}" src="{(site.out_dir / p).as_uri()}" width="{WIDTH}" height="{HEIGHT}"></iframe>'
        for p in pages
    )
    harness = tmp_path_factory.mktemp("harness") / "harness.html"
    harness.write_text(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>harness</title></head><body>\n{frames}\n'
        f"<script>{HARNESS_JS}</script></body></html>\n",
        encoding="utf-8",
    )
    # The harness reads the iframes' DOM; file:// pages are cross-origin to each other without this flag.
    dom = dump_dom(harness.as_uri(), extra=("--allow-file-access-from-files", f"--window-size={WIDTH},{HEIGHT}"))
    parser = _ResultParser()
    parser.feed(dom)
    assert parser.result, f"the harness reported nothing; Chromium's DOM began: {dom[:300]!r}"
    data: dict[str, Any] = json.loads(parser.result)
    errors = {p: r["error"] for p, r in data.items() if "error" in r}
    assert not errors, f"pages the harness could not inspect: {errors}"
    assert sorted(data) == pages
    return data


class _ResultParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self._in = False
        self.result = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in = tag == "pre" and ("id", "result") in attrs

    def handle_endtag(self, tag: str) -> None:
        self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.result += data


class _DomParser(HTMLParser):
    """Text, ids and hrefs of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_index_dom_has_diagram_and_every_recommendation(site: RenderResult, chromium: Path) -> None:
    """Verify that Chromium's DOM of the index holds the titled diagram and every recommendation's title."""
    dom = dump_dom(site.index.as_uri())
    p = _DomParser()
    p.feed(dom)
    text = " ".join(" ".join(p.text).split())
    svgs = [a for t, a in p.tags if t == "svg" and a.get("id") == "decision-diagram"]
    assert len(svgs) == 1, "the index has exactly one decision diagram"
    assert any(t == "title" for t, _ in p.tags) and any(t == "desc" for t, _ in p.tags)
    assert not [t for t, _ in p.tags if t == "script"], "the site works without JavaScript: it has none"
    for r in site.site.recommendations:
        assert r.title in text, f"{r.title!r} missing from the index"
        assert any(a.get("id") == f"box-rec-{r.id}" for _, a in p.tags), f"{r.id} missing from the diagram"
        for a in r.activities:
            assert any(x.get("id") == f"box-act-{a.definition_id}" for _, x in p.tags), a.definition_id


def test_diagram_and_titles_are_visible(site: RenderResult, browsed: dict[str, Any]) -> None:
    """Verify that the diagram, its boxes and every recommendation title are laid out visibly, text inside boxes."""
    index = browsed["index.html"]
    diagram = index["diagram"]
    assert diagram is not None and diagram["visible"], "the decision diagram is not visible"
    assert diagram["width"] >= 1000 and diagram["height"] >= 600, "the diagram is drawn at 100 % (it scrolls)"
    assert diagram["title"] and diagram["desc"]
    assert all(b["visible"] for b in diagram["boxes"]), [b["id"] for b in diagram["boxes"] if not b["visible"]]
    assert not diagram["overflow"], "diagram text runs out of its box: " + "; ".join(diagram["overflow"])
    for r in site.site.recommendations:
        assert r.title in index["visibleLinks"], f"{r.title!r} is not a visible link on the index"
        page = browsed[r.page]
        assert page["h1"] == r.title and page["h1Visible"], f"{r.page}: heading {page['h1']!r}"
    for name, page in browsed.items():
        assert page["scripts"] == 0, f"{name} has scripts"
        assert page["stylesheetApplied"], f"{name}: the local style sheet was not applied"


def test_every_internal_link_resolves(site: RenderResult, browsed: dict[str, Any]) -> None:
    """Verify that every link in the rendered DOM is internal and reaches an existing file and anchor (no 404)."""
    ids = {name: set(page["ids"]) for name, page in browsed.items()}
    broken: list[str] = []
    reached = {"index.html"}
    for name, page in sorted(browsed.items()):
        for link in page["links"]:
            assert not link.startswith(("http:", "https:", "//", "data:", "javascript:")), (
                f"{name} links outside the site (must work offline): {link}"
            )
            path, frag = urldefrag(link)
            target = name if not path else str(Path(name).parent / unquote(path))
            file = site.out_dir / target
            if not file.is_file():
                broken.append(f"{name} -> {link}: no file {target}")
                continue
            reached.add(target)
            if file.suffix == ".json":
                json.loads(file.read_text(encoding="utf-8"))  # a raw JSON link must open as JSON
            if frag and frag not in ids.get(target, set()):
                broken.append(f"{name} -> {link}: no id {frag!r} in {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
    unreachable = sorted(set(browsed) - reached)
    assert not unreachable, f"pages no link reaches: {unreachable}"
    json_files = {str(p.relative_to(site.out_dir)) for p in site.out_dir.glob("json/*.json")}
    assert json_files <= reached, f"raw JSON files no page links to: {sorted(json_files - reached)[:5]}"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def output_dir() -> Iterator[Path]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    yield OUTPUT


def test_screenshot_of_index(site: RenderResult, chromium: Path, output_dir: Path) -> None:
    """Verify that Chromium renders the index to a screenshot (saved in test-output/render/ for people to see)."""
    out = screenshot(site.index.as_uri(), output_dir / "index.png", width=WIDTH, height=HEIGHT)
    assert _png_size(out) == (WIDTH, HEIGHT)
    assert out.stat().st_size > 20_000, "the screenshot is (nearly) blank"
    for r in site.site.recommendations[:1]:
        screenshot(site.out_dir.joinpath(r.page).as_uri(), output_dir / f"{r.id}.png", width=WIDTH, height=HEIGHT)


def test_indicator_pages_render(site: RenderResult, browsed: dict[str, Any]) -> None:
    """Verify that each indicator page is laid out with its visible title and is linked from the index."""
    assert site.site.indicators, "the fixture Measures give indicator pages"
    for ind in site.site.indicators:
        page = browsed[ind.page]
        assert page["h1"] == ind.title and page["h1Visible"], f"{ind.page}: heading {page['h1']!r}"
        assert ind.title in browsed["index.html"]["visibleLinks"], f"{ind.title!r} is not a visible link on the index"
        assert page["scripts"] == 0 and page["stylesheetApplied"], ind.page


# Runs in a harness page around the offline indicator report (which itself has no scripts): for
# every chart and bar, what the browser laid out, and every resource the report's window fetched.
REPORT_JS = r"""
function visible(el, win) {
  const r = el.getBoundingClientRect();
  const cs = win.getComputedStyle(el);
  return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
}
function inspect(frame) {
  const doc = frame.contentDocument, win = frame.contentWindow;
  const charts = [...doc.querySelectorAll('svg[id^="chart-"]')].map(svg => {
    const width = svg.viewBox.baseVal.width;
    const rows = [...svg.querySelectorAll('g.row')].map(g => {
      const texts = [...g.querySelectorAll(':scope > text')];
      const label = texts[0], value = texts[texts.length - 1];
      const bar = g.querySelector('rect.bar'), box = g.querySelector('rect.track, rect.none');
      const lb = label.getBBox(), vb = value.getBBox(), bb = box.getBBox();
      return {label: label.textContent, value: value.textContent,
              title: g.querySelector(':scope > title')?.textContent ?? '',
              barWidth: bar ? bar.getBBox().width : null, undefined: !!g.querySelector('rect.none'),
              labelFits: lb.x >= 0 && lb.x + lb.width <= bb.x,
              valueFits: vb.x >= bb.x + bb.width && vb.x + vb.width <= width,
              top: lb.y, bottom: lb.y + lb.height,
              visible: visible(g, win), fontPx: parseFloat(win.getComputedStyle(label).fontSize)};
    });
    return {id: svg.id, visible: visible(svg, win), title: svg.querySelector(':scope > title')?.textContent ?? '',
            rows};
  });
  return {title: doc.title, charts, scripts: doc.scripts.length,
          resources: win.performance.getEntriesByType('resource').map(e => e.name)};
}
window.addEventListener('load', () => {
  const f = document.querySelector('iframe');
  let out;
  try { out = inspect(f); } catch (e) { out = {error: String(e)}; }
  const pre = document.createElement('pre');
  pre.id = 'result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


@pytest.fixture(scope="module")
def report(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline indicator report of the fixture MeasureReports, as `guideline measure --html` writes it."""
    out = tmp_path_factory.mktemp("report") / "indicators.html"
    out.write_text(render_report(fixture_reports(config), fixture_measures(config)), encoding="utf-8")
    return out


def test_indicator_report_in_the_browser(
    report: Path, config: Config, chromium: Path, tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> None:
    """Verify that Chromium draws a bar for each indicator and stratum with readable labels, no console message
    and no request: the report works offline."""
    harness = tmp_path_factory.mktemp("report-harness") / "harness.html"
    harness.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>harness</title></head><body>\n'
        f'<iframe src="{report.as_uri()}" width="{WIDTH}" height="{HEIGHT}"></iframe>\n'
        f"<script>{REPORT_JS}</script></body></html>\n",
        encoding="utf-8",
    )
    # --enable-logging=stderr prints every console message (a CSP violation, a failed load) as a CONSOLE line.
    run = run_chromium(
        [
            "--allow-file-access-from-files",
            f"--window-size={WIDTH},{HEIGHT}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            harness.as_uri(),
        ]
    )
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "console messages:\n" + "\n".join(console)
    parser = _ResultParser()
    parser.feed(run.stdout)
    assert parser.result, f"the harness reported nothing; Chromium's DOM began: {run.stdout[:300]!r}"
    data: dict[str, Any] = json.loads(parser.result)
    assert "error" not in data, data.get("error")
    assert data["resources"] == [], f"the report fetched: {data['resources']}"
    assert data["scripts"] == 0
    reports = fixture_reports(config)
    assert len(data["charts"]) == len(reports)
    for chart, rep in zip(data["charts"], reports, strict=True):
        strata = [
            s["value"].get("text") or s["value"]["coding"][0]["code"]
            for st in rep["group"][0].get("stratifier", [])
            for s in st["stratum"]
        ]
        assert chart["visible"] and chart["title"], chart["id"]
        assert [r["label"] for r in chart["rows"]] == ["All patients", *strata], chart["id"]
        for row in chart["rows"]:
            where = f"{chart['id']} {row['label']}"
            assert row["visible"] and row["fontPx"] >= 12, f"{where}: not readable"
            assert row["labelFits"] and row["valueFits"], f"{where}: text runs into the bar or out of the chart"
            assert row["title"] and row["value"] in row["title"], f"{where}: the hover title lacks the counts"
            if row["undefined"]:
                assert row["barWidth"] is None and row["value"] == "undefined (denominator 0)", where
        tops = sorted((r["top"], r["bottom"]) for r in chart["rows"])
        assert all(a[1] <= b[0] for a, b in zip(tops, tops[1:], strict=False)), f"{chart['id']}: labels overlap"
    first = {r["label"]: r for r in data["charts"][0]["rows"]}
    assert first["female"]["barWidth"] > first["male"]["barWidth"] > 0, "50 % is drawn longer than 33 %"
    screenshot(report.as_uri(), output_dir / "indicators.png", width=WIDTH, height=HEIGHT)
