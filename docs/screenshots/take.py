"""Retake the screenshots of the demo's report and dashboard with headless Chromium.

    sae-clip demo --out out/demo && python docs/screenshots/take.py out/demo

Each page is rendered once at its full height; each picture is the part that starts at one section's heading
(report.html's `<h2 id=...>` anchors) or at the top. They are written next to this script. Needs `chromium`
(Debian: apt-get install chromium) and Pillow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
WIDTH = 1300
SHOTS = {  # file name: (page, anchor, height in CSS pixels)
    "report_top.png": ("report.html", "", 1500),
    "report_steerability.png": ("report.html", "steerability", 1500),
    "report_disentanglement.png": ("report.html", "disentanglement", 1900),
    "dashboard_top.png": ("dashboard.html", "", 1900),
}
# appended to a copy of the page: the page height and where each anchored heading starts, written into the DOM
PROBE = """<pre id="layout-probe"></pre><script>window.addEventListener("load", function () {
  var a = {}; document.querySelectorAll("[id]").forEach(function (e) { a[e.id] = e.getBoundingClientRect().top; });
  document.getElementById("layout-probe").textContent = JSON.stringify({height: document.body.scrollHeight, at: a});
});</script>"""


def _chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium found: install it (Debian: apt-get install chromium)")
    return browser


def _run(browser: str, *args: str) -> str:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
    ]
    done = subprocess.run([browser, *flags, *args], check=True, capture_output=True, text=True, timeout=180)
    return done.stdout


def _layout(browser: str, page: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / page.name
        probe.write_text(
            page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
        )
        dom = _run(browser, f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S)
    if not found:
        raise SystemExit(f"could not measure {page}: the page did not finish loading")
    return json.loads(found.group(1).replace("&quot;", '"'))


def take(demo: Path) -> list[Path]:
    browser, written, full = _chromium(), [], {}
    for name, (page_name, anchor, height) in SHOTS.items():
        page = (demo / page_name).resolve()
        if page_name not in full:
            layout = _layout(browser, page)
            with tempfile.TemporaryDirectory() as tmp:
                shot = Path(tmp) / "full.png"
                _run(
                    browser,
                    f"--window-size={WIDTH},{layout['height'] + 40}",
                    f"--screenshot={shot}",
                    page.as_uri(),
                )
                full[page_name] = (Image.open(shot).copy(), layout)
        image, layout = full[page_name]
        top = max(0, int(layout["at"].get(anchor, 0)) - 10) if anchor else 0
        target = HERE / name
        image.crop((0, top, image.width, min(image.height, top + height))).save(target)
        written.append(target)
    return written


if __name__ == "__main__":
    for path in take(Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo")):
        print(path)
