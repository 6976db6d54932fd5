"""The dashboard page renders its images in a real browser (headless Chromium; skipped when absent).

A small script appended to a copy of the page writes every image's decoded size into the DOM after
the load event; `--dump-dom` returns that DOM. A deliberately broken image proves the check can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from sae_clip_plugin.analysis.dashboard import DashboardData, FeatureData, TopImage
from sae_clip_plugin.viz.dashboard import write_dashboard

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.path.exists(p)), None)  # fmt: skip
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]  # fmt: skip
PROBE = """
<img id="broken-control" src="data:image/png;base64,bm90IGFuIGltYWdl" alt="control">
<pre id="img-report"></pre>
<script>
window.addEventListener("load", function () {
  var rows = [];
  document.querySelectorAll("img").forEach(function (img) {
    rows.push((img.id || "img") + ":" + img.naturalWidth + "x" + img.naturalHeight + ":" + img.complete);
  });
  document.getElementById("img-report").textContent = rows.join(";");
});
</script>
"""


def _data() -> DashboardData:
    """A hand-made dashboard: 2 features x 3 top images (32 px, 4x4 patches) plus steering results."""
    rng = np.random.default_rng(0)
    features = []
    for f in (3, 9):
        top = [TopImage(i, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.random((4, 4)), 1.0 + i, 0.5)
               for i in range(3)]  # fmt: skip
        acts = np.concatenate([np.zeros(40), rng.random(60)])
        steering = {"strength": 150.0, "S": 0.2, "P": 0.3, "top_concept": "cat", "steerable": True,
                    "gained": [("cat", 0.3), ("dog", 0.1)], "lost": [("car", -0.2)]}  # fmt: skip
        features.append(
            FeatureData(f, "blocks.1.hook_resid_post", top, acts, 100, 6, 0.6, 1.0, steering, "test")
        )
    return DashboardData("blocks.1.hook_resid_post", "toy", 64, "all", 4, 6, features)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_dashboard_images_render_in_headless_chromium(tmp_path):
    page = write_dashboard(_data(), tmp_path / "dashboard.html")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="img-report">([^<]*)</pre>', run.stdout)
    assert match, f"chromium produced no report (rc {run.returncode}): {run.stderr[-2000:]}"
    rows = [r.split(":") for r in match.group(1).split(";")]
    control = [r for r in rows if r[0] == "broken-control"]
    images = [r for r in rows if r[0] != "broken-control"]
    assert control == [["broken-control", "0x0", "true"]]  # a broken image is seen as broken
    assert len(images) == 2 * (3 + 2)  # top images, histogram and steering chart per feature
    sizes = [tuple(int(v) for v in r[1].split("x")) for r in images]
    assert all(w > 0 and h > 0 for w, h in sizes)
    assert (
        sizes.count((128, 144)) == 6
    )  # the 32 px tiles, blown up x4 for visible patches, a 16 px CLS band above
