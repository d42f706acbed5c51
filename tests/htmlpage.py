"""Checks of taalasc's HTML pages (report.html, report/estimate/diff --html), shared by tests.

``parse_page``: with html.parser alone, always: well-formed (every element closed in order),
self-contained (no script, no stylesheet or picture from elsewhere), every picture a data: URI
of a PNG. ``browser_check``: the page in headless Chromium, where one is installed: it loads,
its pictures decode (naturalWidth > 0) and nothing is wider than a 1280-pixel window.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Page:
    text: str = ""                                   # all text, tags removed
    images: list[tuple[int, int]] = field(default_factory=list)   # PNG (width, height) each
    tags: set[str] = field(default_factory=set)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.page = Page()
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.page.tags.add(tag)
        attrs = dict(attrs)
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        assert not any(k.startswith("on") for k in attrs), attrs   # no event handler
        for key in ("href", "src", "srcset", "action"):
            value = attrs.get(key)
            if value is not None and tag != "img":
                assert not value.startswith(("http:", "https:", "//")), (tag, value)
        if tag == "img":
            self.page.images.append(_png_size(attrs.get("src") or ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert tag not in VOID, f"</{tag}>"
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.parts.append(data)


def _png_size(src: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    data = base64.b64decode(src[len(prefix):], validate=True)
    assert data.startswith(PNG) and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    return width, height


def parse_page(html_text: str) -> Page:
    """Parse and check one page; returns its text and its pictures' sizes."""
    assert html_text.startswith("<!DOCTYPE html>\n")
    checker = _Checker()
    checker.feed(html_text)
    checker.close()
    assert checker.stack == [], f"left open: {checker.stack}"
    checker.page.text = " ".join(" ".join(checker.parts).split())
    assert {"style", "main", "h1"} <= checker.page.tags
    return checker.page


# --- a real browser ------------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
WIDTH_PX = 1280

# Appended to a copy of the page (the page itself holds no script): after the load event it
# writes what the browser measured into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images), wide = [];
  document.querySelectorAll("main *").forEach(function (e) {
    var r = e.getBoundingClientRect();
    var spills = /^(TD|TH|DD|DT|P|LI|FIGCAPTION|SUMMARY|H1|H2)$/.test(e.tagName)
                 && e.scrollWidth > e.clientWidth + 1;   // text running out of its box
    if (r.right > window.innerWidth + 0.5 || spills)
      wide.push(e.tagName + ":" + Math.round(r.right) + ":" + e.textContent.slice(0, 40));
  });
  var out = {images: imgs.length,
             decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
             scrollWidth: document.documentElement.scrollWidth,
             innerWidth: window.innerWidth, wide: wide.slice(0, 10)};
  var pre = document.createElement("pre");
  pre.id = "taalasc-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def browser_check(page: Path, work: Path) -> dict:
    """Load ``page`` in headless Chromium at WIDTH_PX; return what the probe measured, after
    taking a screenshot (work/screenshot.png) to show that it renders."""
    exe = browser()
    assert exe is not None
    probe = work / f"probe-{page.name}"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"),
                     encoding="utf-8")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={WIDTH_PX},900", "--virtual-time-budget=5000",
             f"--user-data-dir={work / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    start = dom.find('<pre id="taalasc-probe">')
    assert start >= 0, dom[-2000:]
    found = json.loads(html.unescape(dom[start:].split(">", 1)[1].split("</pre>", 1)[0]))
    shot = work / "screenshot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    found["screenshot_bytes"] = shot.stat().st_size if shot.is_file() else 0
    return found
