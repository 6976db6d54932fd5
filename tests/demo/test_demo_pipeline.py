"""`sae-clip demo --fast` end to end: every table holds numbers, the report and dashboard embed their
figures, a re-run resumes, and the same pipeline runs on a user's image folder with another model."""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from PIL import Image
from sae_lens import SAE

from sae_clip_plugin import HookedViT
from sae_clip_plugin.cli import main as cli_main
from sae_clip_plugin.demo import FAST, DemoConfig, run_demo
from sae_clip_plugin.toy import WEIGHTS_PATH
from tests.model.clips import tiny_open_clip

needs_toy = pytest.mark.skipif(
    not WEIGHTS_PATH.is_file(), reason="the bundled toy CLIP weights are not built yet"
)
FLOAT = r"-?\d+(\.\d+)?(e-?\d+)?"


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _run_cli(*args: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        rc = cli_main(["demo", *args])
    return rc, buffer.getvalue()


@pytest.fixture(scope="module")
def toy_demo(tmp_path_factory) -> Path:
    if not WEIGHTS_PATH.is_file():
        pytest.skip("the bundled toy CLIP weights are not built yet")
    out = tmp_path_factory.mktemp("demo") / "toy"
    rc, printed = _run_cli("--out", str(out), "--fast")
    assert rc == 0 and "report: " in printed
    return out


@needs_toy
def test_fast_demo_writes_sae_tables_with_numbers(toy_demo):
    hooks = ["blocks.2.hook_resid_post", "blocks.5.hook_resid_post"]
    for arch in ("topk", "standard"):
        for hook in hooks:
            sae = SAE.load_from_disk(str(toy_demo / "saes" / arch / hook))
            assert sae.cfg.metadata.hook_name == hook and sae.cfg.metadata.model_name == "toy"
            assert sae.cfg.d_sae == FAST["expansion_factor"] * 128
    metrics = pd.read_csv(toy_demo / "metrics" / "metrics.csv")
    assert sorted(metrics["name"]) == ["standard/L2", "standard/L5", "topk/L2", "topk/L5"]
    assert _finite(metrics["explained_variance_all"]) and (metrics["explained_variance_all"] <= 1).all()
    assert (metrics["l0_all"] > 0).all()
    topk = metrics[metrics["name"].str.startswith("topk")]
    assert (topk["l0_all"] <= FAST["topk_k"] + 1e-9).all()  # TopK never fires more than k features
    # with its error term an SAE changes nothing, so zero-shot accuracy is the clean model's
    np.testing.assert_allclose(metrics["top1_spliced_err"], metrics["top1_clean"])
    assert ((metrics["top1_clean"] >= 0) & (metrics["top1_clean"] <= 1)).all()
    for name in ("l0_by_layer.png", "ev_vs_l0.png", "density_histogram.png", "l0_position_heatmaps.png"):
        assert (toy_demo / "metrics" / "figures" / name).stat().st_size > 1000


@needs_toy
def test_fast_demo_steerability_and_disentanglement_tables(toy_demo):
    steer = pd.read_csv(toy_demo / "steerability" / "summary.csv")
    runs = ["topk SAE", "standard SAE", "neurons", "topk SAE on a random model"]
    assert list(steer["run"]) == runs * 2  # at the model-relative strength, then at the paper's absolute 150
    assert list(steer["strength"]) == ["relative 5.41"] * 4 + ["absolute 150"] * 4
    assert (steer["n_features"] == FAST["n_steer_features"]).all()
    assert steer["steerable_fraction"].between(0, 1).all() and _finite(steer["mean_S"])
    per_feature = pd.read_csv(toy_demo / "steerability" / "topk_SAE_relative_5.41.csv")
    assert len(per_feature) == FAST["n_steer_features"]
    np.testing.assert_array_equal(per_feature["steerable"], per_feature["S"] > 0.10)
    assert (per_feature["relative_strength"] == 5.41).all() and (per_feature["strength"] > 0).all()
    absolute = pd.read_csv(toy_demo / "steerability" / "topk_SAE_absolute_150.csv")
    assert (absolute["strength"] == 150.0).all()

    rows = pd.read_csv(toy_demo / "disentangle" / "disentangle.csv")
    assert set(rows["task"]) == {"toy-typographic", "toy-background", "toy-colour"}
    assert {"none", "sae", "random"} <= set(rows["condition"])
    assert rows["top1"].between(0, 1).all()
    summary = json.loads((toy_demo / "disentangle" / "summary.json").read_text())
    typo = summary["toy-typographic"]["summary"]
    assert 0 <= typo["none"]["attacked_acc"] <= 1 and typo["sae"]["layer"] in (2, 5)


@needs_toy
def test_fast_demo_report_and_dashboard(toy_demo):
    md = (toy_demo / "report.md").read_text()
    for title in (
        "## SAEs trained",
        "## Metrics",
        "## Steerability",
        "## Disentanglement",
        "## Feature dashboards",
    ):
        assert title in md
    assert re.search(
        rf"\| topk \| blocks\.2\.hook_resid_post \| 256 \| k=8, aux_loss_coefficient=4\.0 \| \d+ \| {FLOAT} \| {FLOAT} \|",
        md,
    )
    assert re.search(rf"\| topk/L5 \| {FLOAT} \| {FLOAT} \|", md)  # SAE, EV all, EV CLS
    assert "| SAE | EV all | EV CLS | EV patches | L0 CLS |" in md  # short headers: the table fits the page
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) >= 8 and all((toy_demo / p).is_file() for p in linked)

    page = (toy_demo / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(linked) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "is missing" not in page

    dashboard = (toy_demo / "dashboard.html").read_text()
    cards = dashboard.split('<section class="feature"')[1:]
    assert len(cards) == 2 * FAST["n_dashboard_features"]  # most steerable + typographic features
    for n, card in enumerate(cards):
        tiles = len(re.findall(r'<figure><img src="data:image/png;base64,', card))
        assert tiles <= FAST["n_top_images"]  # top images: only those where the feature fires
        assert tiles >= 1 or n >= FAST["n_dashboard_features"]  # the steerable section shows live features
        assert (
            len(re.findall(r'<img src="data:image/png;base64,', card)) == tiles + 2
        )  # + histogram, steering


@needs_toy
def test_rerun_skips_finished_steps_and_redoes_a_removed_one(toy_demo, capsys):
    weights = toy_demo / "saes" / "topk" / "blocks.2.hook_resid_post" / "sae_weights.safetensors"
    stamp = weights.stat().st_mtime_ns
    rc, _ = _run_cli("--out", str(toy_demo), "--fast")
    assert rc == 0
    log = capsys.readouterr().err
    assert log.count("done before, skipped") == 7 and "loading model" not in log
    assert "[8/8] report: " in log  # the report is always written anew from the files (new code, new look)

    (toy_demo / "state" / "metrics.json").unlink()
    (toy_demo / "metrics" / "metrics.csv").unlink()
    rc, _ = _run_cli("--out", str(toy_demo), "--fast")
    assert rc == 0
    log = capsys.readouterr().err
    assert log.count("done before, skipped") == 6 and "[4/8] SAE metrics: " in log
    assert (toy_demo / "metrics" / "metrics.csv").is_file()
    assert weights.stat().st_mtime_ns == stamp  # training was not redone

    rc, _ = _run_cli("--out", str(toy_demo), "--fast", "--seed", "1")
    assert rc == 2 and "other settings (differing: seed)" in capsys.readouterr().err


def _image_folder(root: Path, classes: int = 3, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"thing_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = np.full((48, 56, 3), 60 * c, dtype=np.uint8) + rng.integers(
                0, 60, (48, 56, 3), dtype=np.uint8
            )
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_demo_on_an_image_folder_with_another_model(tmp_path):
    torch.manual_seed(0)
    clip = tiny_open_clip(layers=2)  # 64 px, patch 16, width 64
    model = HookedViT.from_open_clip(
        clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"), model_spec="open_clip:tiny"
    )
    images = _image_folder(tmp_path / "images")
    budgets = {"n_train_images": 24, "training_tokens": 4096, "train_batch_size_tokens": 256, "n_metric_images": 12,
               "n_steer_images": 3, "n_steer_features": 4, "n_disentangle": 6, "n_dashboard_images": 6}  # fmt: skip
    cfg = DemoConfig.make(str(tmp_path / "out"), fast=True, model_spec="open_clip:tiny", images=str(images),
                          budgets=budgets, architectures=("topk",))  # fmt: skip
    paths = run_demo(cfg, model=model, log=lambda _: None)
    out = tmp_path / "out"
    assert paths["report"].is_file() and paths["dashboard"].is_file()
    assert not (out / "saes" / "standard").exists()
    metrics = pd.read_csv(out / "metrics" / "metrics.csv")
    assert list(metrics["name"]) == ["topk/L0", "topk/L1"] and (metrics["n_images"] == 12).all()
    assert metrics["top1_clean"].between(0, 1).all()  # class subfolders give zero-shot labels
    steer = json.loads((out / "state" / "steerability.json").read_text())["result"]
    # a non-toy model reads out over open_clip's ImageNet class names (distinct ones)
    assert steer["vocabulary_size"] == len(set(IMAGENET_CLASSNAMES))
    rows = pd.read_csv(out / "disentangle" / "disentangle.csv")
    assert set(rows["task"]) == {"typo-generate"} and rows["attacked_acc"].between(0, 1).all()
    cache = json.loads((out / "cache" / "sae_clip_cache.json").read_text())
    assert cache["config"]["n_images"] == 24 and cache["config"]["model_spec"] == "open_clip:tiny"


@needs_toy
def test_the_cli_writes_the_demos_steerability_files_from_its_config(toy_demo, tmp_path, capsys):
    """The demo and `sae-clip steerability` are one entry point: each demo run's settings, as a --config file, make
    the CLI write byte-identical files (the random-model control included)."""
    import yaml

    from sae_clip_plugin.demo.pipeline import DemoRun

    demo = DemoRun(DemoConfig.make(str(toy_demo), fast=True, device="cpu"))
    hook = demo.middle_hook
    plan = demo.steerability_plan({arch: demo.load_sae(arch, hook) for arch in demo.cfg.architectures})
    chosen = [(name, cfg) for name, setting, cfg in plan if setting == demo.relative_setting]
    assert {name for name, _ in chosen} >= {"topk SAE", "neurons", "topk SAE on a random model"}
    for name, cfg in chosen:
        config = tmp_path / f"{cfg.prefix}.yaml"
        config.write_text(yaml.safe_dump({**cfg.to_dict(), "out": str(tmp_path / "cli")}))
        assert cli_main(["steerability", "--config", str(config)]) == 0, name
        for suffix in (".csv", "_summary.json", "_summary.md"):
            ours = (tmp_path / "cli" / f"{cfg.prefix}{suffix}").read_bytes()
            assert ours == (toy_demo / "steerability" / f"{cfg.prefix}{suffix}").read_bytes(), (name, suffix)
