"""Open an interp HTML report in headless Chromium and check that it renders without errors.

Usage: python scripts/check_report.py REPORT.html [--screenshot OUT.png] [--layout]

``--layout`` (:func:`check_layout`) also loads the page in a 1,280 × 800 window and checks that the
verdict lines are all within the first screen and that nothing makes the page wider than the window
(no horizontal scroll bar).

A copy of the report gets a first script that records uncaught errors, unhandled promise rejections
and console.error calls into the page; Chromium (Debian package `chromium`) runs it headless with no
network and dumps the DOM after the scripts ran. The check fails (exit 1) when any error was recorded,
when a plot image is missing, when a circuitsvis view stayed empty, or when the page's title changed
while it ran, or when, after loading, an element carries an ``onerror``/``onload``/… handler or a
``<script>`` other than the circuitsvis bundles is in the DOM (a script from the data ran, or could: the report must render data, never
run it). Exit 2: Chromium not found.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html import unescape
from pathlib import Path

_CAPTURE = """<script>
window.__errors = [];
function __record(msg) { window.__errors.push(String(msg)); var el = document.getElementById('__errors');
  if (el) { el.textContent = JSON.stringify(window.__errors); } }
window.addEventListener('error', function (e) { __record('error: ' + e.message); });
window.addEventListener('unhandledrejection', function (e) { __record('rejection: ' + e.reason); });
var __origError = console.error; console.error = function () {
  __record('console.error: ' + Array.prototype.join.call(arguments, ' ')); __origError.apply(console, arguments); };
document.addEventListener('DOMContentLoaded', function () {
  var el = document.createElement('pre'); el.id = '__errors'; el.textContent = JSON.stringify(window.__errors);
  document.body.appendChild(el); });
window.addEventListener('load', function () { setTimeout(function () {
  document.querySelectorAll('*').forEach(function (el) { for (var i = 0; i < el.attributes.length; i++) {
    var a = el.attributes[i].name; if (a.slice(0, 2) === 'on') {
      __record('injected: an element <' + el.tagName.toLowerCase() + '> with the handler ' + a); } } });
  Array.prototype.forEach.call(document.scripts, function (sc) { var t = sc.textContent.replace(/^\\s+/, '');
    if (t.indexOf('window.__errors') !== 0 && t.indexOf('"use strict";var CircuitsVis') !== 0) {
      __record('injected: a script that is not one of the report scripts: ' + t.slice(0, 60)); } });
}, 300); });
</script>"""

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=8000"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def check_report(report: Path, screenshot: Path | None = None) -> list[str]:
    """Problems found in ``report`` (empty when it rendered cleanly)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found: apt-get install chromium")
    html = report.read_text(encoding="utf-8")
    instrumented = html.replace("<head>", "<head>" + _CAPTURE, 1)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(instrumented, encoding="utf-8")
        base = [chromium, *_FLAGS, f"--user-data-dir={tmp}/profile"]
        dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
        if screenshot is not None:
            subprocess.run(base + ["--window-size=1300,3000", f"--screenshot={screenshot}", page.as_uri()],
                           capture_output=True, timeout=120)
    problems = []
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    shown = re.search(r"<title>(.*?)</title>", dom, re.S)
    if title is not None and (shown is None or unescape(shown.group(1)) != unescape(title.group(1))):
        problems.append(f"the page's title changed while it ran ({title.group(1)!r} -> "
                        f"{shown.group(1) if shown else None!r}): a script from the data ran")
    errors = re.search(r'<pre id="__errors">(.*?)</pre>', dom, re.S)
    if errors is None:
        problems.append("the page did not finish loading (no error record in the DOM)")
    elif errors.group(1).strip() != "[]":
        problems.append(f"script errors: {errors.group(1).strip()}")
    if html.count("data:image/") and "<img" not in dom:
        problems.append("plot images missing from the rendered page")
    for view in re.findall(r'<div id="(circuits-vis-[^"]+)"', html):
        rendered = re.search(rf'<div id="{view}"[^>]*>(.*?)</div>', dom, re.S)
        if rendered is None or not rendered.group(1).strip():
            problems.append(f"circuitsvis view {view} did not render")
    return problems


def injected_markup(html: str) -> list[str]:
    """Markup in a report's HTML text that only injected data would put there: an element with an
    event handler attribute (``onerror=``, ``onload=``, …) or a ``<script>`` that is not a circuitsvis
    bundle. (In the rendered page the same is checked on the DOM by the recorder script.)"""
    problems = []
    for tag in re.findall(r"<[a-zA-Z][^>]*\son[a-z]+\s*=[^>]*>", html):
        problems.append(f"an element with an event handler is in the page: {tag[:80]}")
    for script in re.findall(r"<script[^>]*>(.*?)</script>", html, re.S):
        if not script.lstrip().startswith(("window.__errors", '"use strict";var CircuitsVis')):
            problems.append(f"a script that is not the report's own is in the page: {script.strip()[:60]!r}")
    return problems


_LAYOUT = """<script>
window.addEventListener('load', function () {
  var v = document.getElementById('verdicts'), items = v ? v.querySelectorAll('ul.verdicts li') : [];
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
             innerHeight: window.innerHeight, n: items.length,
             top: items.length ? items[0].getBoundingClientRect().top : -1,
             bottom: items.length ? items[items.length - 1].getBoundingClientRect().bottom : -1};
  var el = document.createElement('pre'); el.id = '__layout'; el.textContent = JSON.stringify(out);
  document.body.appendChild(el); });
</script>"""


def check_layout(report: Path, width: int = 1280, height: int = 800) -> list[str]:
    """Layout problems of ``report`` in a ``width`` × ``height`` window: verdict lines missing or not
    all on the first screen, or a page wider than the window. Empty when the layout is right."""
    import json

    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found: apt-get install chromium")
    html = report.read_text(encoding="utf-8").replace("<head>", "<head>" + _LAYOUT, 1)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        dom = subprocess.run([chromium, *_FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
                              "--hide-scrollbars", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="__layout">(.*?)</pre>', dom, re.S)
    if found is None:
        return ["the page did not finish loading (no layout record in the DOM)"]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    problems = []
    if m["n"] == 0:
        problems.append("no verdict lines (<section id='verdicts'> with <ul class='verdicts'>)")
    elif m["bottom"] > height or m["top"] < 0:
        problems.append(f"the verdicts are not all on the first screen: they span y = {m['top']:.0f} to "
                        f"{m['bottom']:.0f} px in a {height} px window")
    if m["scrollWidth"] > m["innerWidth"]:
        problems.append(f"horizontal overflow: the page is {m['scrollWidth']} px wide in a {m['innerWidth']} px window")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--layout", action="store_true", help="also check the first screen at 1280x800")
    args = parser.parse_args()
    try:
        problems = check_report(args.report, args.screenshot)
        if args.layout:
            problems += check_layout(args.report)
    except FileNotFoundError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    for p in problems:
        sys.stderr.write(f"FAIL: {p}\n")
    if not problems:
        sys.stdout.write(f"OK: {args.report} rendered without errors\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
