"""The sweep helper, the figures and `sae-clip eval` on a tiny CLIP with hand-built SAEs saved in sae_lens format."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sae_clip_plugin.analysis.metrics.evaluate import evaluate_sae, evaluate_saes, metrics_table, to_markdown
from sae_clip_plugin.cli.eval import register_commands
from sae_clip_plugin.data import load_image_folder
from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
from sae_clip_plugin.pretrained import save_sae
from sae_clip_plugin.pretrained.loading import find_sae_folders
from sae_clip_plugin.viz.metrics_figures import (
    plot_density_histogram,
    plot_ev_vs_l0,
    plot_l0_by_layer,
    plot_l0_heatmap,
    write_metrics_figures,
)
from sae_clip_plugin.viz.metrics_report import load_metrics_results
from tests.analysis.test_analysis_metrics_support import (
    identity_sae,
    images,
    tiny_model,
    topk_identity_sae,
    unit_columns,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    save_sae(identity_sae("blocks.0.hook_resid_post", scale=0.5, extra=True), root / "L0_half")
    save_sae(topk_identity_sae(4, "blocks.1.hook_resid_post"), root / "sub" / "L1_topk4")
    save_sae(identity_sae("blocks.1.hook_resid_post", tokens="cls", scale=0.8), root / "L1_cls")
    return root


@pytest.fixture(scope="module")
def sweep(model, sae_dir):
    px, y = images(5), torch.tensor([0, 1, 2, 1, 0])
    folders = find_sae_folders(sae_dir)
    w = unit_columns(model.cfg.d_embed, 3)
    df = evaluate_saes(model, folders, (px, y), weights=w, batch_size=4, progress=False)
    return df, folders, (px, y), w


def test_find_sae_folders(sae_dir, tmp_path) -> None:
    assert [p.name for p in find_sae_folders(sae_dir)] == ["L0_half", "L1_cls", "L1_topk4"]
    assert find_sae_folders(sae_dir / "L1_cls") == [sae_dir / "L1_cls"]
    with pytest.raises(FileNotFoundError, match="no SAE folders"):
        find_sae_folders(tmp_path)


@torch.no_grad()
def test_sweep_rows_equal_single_evaluations(model, sweep) -> None:
    df, folders, source, w = sweep
    assert list(df["name"]) == ["L0_half", "L1_cls", "L1_topk4"]  # sorted by hook type, layer, name
    assert list(df["layer"]) == [0, 1, 1] and list(df["token_selection"]) == ["all", "cls", "all"]
    from sae_lens import SAE

    for folder in (folders[0], folders[1]):  # the standard SAE with extra features, the CLS-only SAE
        single = evaluate_sae(model, SAE.load_from_disk(str(folder)), source, weights=w, batch_size=4)
        row = df[df["name"] == folder.name].iloc[0]
        for key, value in single.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-9, nan_ok=True), (folder.name, key)
        np.testing.assert_allclose(row["feature_density"], single["feature_density"])
    table = metrics_table(df)
    assert "feature_density" not in table.columns and "l0_cls" in table.columns
    md = to_markdown(table, ["name", "l0_cls", "fvu_patches"])
    assert md.splitlines()[0] == "| name | l0_cls | fvu_patches |"
    assert md.splitlines()[3].startswith("| L1_cls | ") and md.splitlines()[3].endswith(
        " |  |"
    )  # NaN -> blank


def test_figures_plot_the_table(sweep, tmp_path) -> None:
    df = sweep[0]
    fig = plot_l0_by_layer(df)
    ax = fig.axes[0]
    plotted = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    topk = df[df["name"] == "L1_topk4"].iloc[0]
    assert any(ys == [topk["l0_patches"]] for _, ys in plotted.values())
    assert ax.get_yscale() == "log"
    row = df[df["name"] == "L0_half"].iloc[0]
    heat = plot_l0_heatmap(row.to_dict())
    np.testing.assert_allclose(heat.axes[0].get_images()[0].get_array(), row["l0_patch_grid"])
    hist = plot_density_histogram(row.to_dict())
    live = int((np.asarray(row["feature_density"]) > 0).sum())
    patches = hist.axes[0].patches
    assert len(patches) == 1 and "dead 1/130" in hist.axes[0].get_legend().get_texts()[0].get_text()
    assert live == 129
    ev = plot_ev_vs_l0(df)
    xy = np.concatenate([c.get_offsets() for c in ev.axes[0].collections])
    assert sorted(xy[:, 0].tolist()) == pytest.approx(sorted(df["l0_all"].tolist()))
    paths = write_metrics_figures(df, tmp_path / "figs")
    names = sorted(p.name for p in paths)
    assert {"l0_by_layer.png", "density_histogram.png", "ev_vs_l0.png"} <= set(names)
    # one SAE: a by-layer figure would be one point on an axis, and so would EV against L0
    alone = {p.name for p in write_metrics_figures(df.iloc[:1], tmp_path / "one")}
    assert alone.isdisjoint({"l0_by_layer.png", "ev_vs_l0.png"}) and "density_histogram.png" in alone
    # these SAEs (identity, TopK) have the same L0 on every patch: a position map would be a flat field
    assert "l0_position_heatmaps.png" not in names and not any(n.startswith("l0_heatmap_") for n in names)
    varied = df.copy()
    grid = np.asarray(varied.at[0, "l0_patch_grid"], dtype=float).copy()
    grid.flat[0] += 1.0
    varied.at[0, "l0_patch_grid"] = grid
    more = sorted(p.name for p in write_metrics_figures(varied, tmp_path / "figs2"))
    assert "l0_position_heatmaps.png" in more and f"l0_heatmap_{varied.at[0, 'name']}.png" in more
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left


def _image_folder(root, n_per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "car"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_cli_eval_writes_table_and_figures(model, sae_dir, tmp_path, monkeypatch, capsys) -> None:
    from sae_clip_plugin.cli import main

    monkeypatch.setattr(HookedSAEViT, "from_pretrained", classmethod(lambda cls, spec, **kw: model))
    _image_folder(tmp_path / "imgs")
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--sae",
            str(sae_dir),
            "--images",
            str(tmp_path / "imgs"),
            "--out",
            str(out),
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    csv = pd.read_csv(out / "metrics.csv")
    assert list(csv["name"]) == ["L0_half", "L1_cls", "sub/L1_topk4"]
    # folders go to evaluate_saes as folders: the table names where each SAE came from
    assert list(csv["path"]) == [str(sae_dir / n) for n in ("L0_half", "L1_cls", "sub/L1_topk4")]
    assert (
        (out / "metrics.md")
        .read_text()
        .startswith("# SAE metrics (open_clip:metrics-test-tiny, 6 images of ")
    )
    assert (out / "figures" / "l0_by_layer.png").read_bytes()[:8] == PNG
    arrays = np.load(out / "arrays.npz")
    assert arrays["L0_half/l0_patch_grid"].shape == (4, 4)
    # the CLI's numbers are evaluate_saes' numbers on the same images and prompts
    data = load_image_folder(tmp_path / "imgs")
    ref = evaluate_saes(
        model, {"L0_half": sae_dir / "L0_half"}, data, templates=data.templates, batch_size=4, progress=False
    ).iloc[0]
    row = csv[csv["name"] == "L0_half"].iloc[0]
    for key in ("fvu_all", "l0_cls", "ce_spliced", "top1_clean", "kl_mean_abl", "ce_recovered_mean"):
        assert row[key] == pytest.approx(ref[key], rel=1e-6, nan_ok=True), key
    printed = capsys.readouterr().out  # a line per SAE on the terminal, the wide table in the files
    assert (
        "L0_half: EV " in printed
        and "| L0_half |" not in printed
        and "| L0_half |" in (out / "metrics.md").read_text()
    )
    reloaded = load_metrics_results(out)
    np.testing.assert_allclose(reloaded["l0_patch_grid"][0], arrays["L0_half/l0_patch_grid"])
    (out / "figures" / "ev_vs_l0.png").unlink()
    assert main(["eval", "--replot", "--out", str(out)]) == 0
    assert (out / "figures" / "ev_vs_l0.png").read_bytes()[:8] == PNG


def test_register_commands(capsys) -> None:
    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers())
    args = parser.parse_args(["eval", "--sae", "x", "--images", "toy", "--max-images", "8"])
    assert args.sae == ["x"] and args.images == "toy" and args.max_images == 8 and args.device == "auto"
    assert callable(args.func) and capsys.readouterr().err == ""
    # the spellings of the previous release still parse, and say what to use instead
    old = parser.parse_args(["eval", "x", "--toy", "--max-images", "8"])
    assert old.sae_positional == "x" and old.images == "toy"
    assert "--toy is deprecated and will be removed in 0.3; use --images toy" in capsys.readouterr().err


def test_cli_eval_on_a_flat_folder_measures_reconstruction_and_says_what_it_skips(
    model, sae_dir, tmp_path, monkeypatch, capsys
) -> None:
    """Training takes a flat folder, so evaluation does too: reconstruction and sparsity, no zero-shot part."""
    from sae_clip_plugin.cli import main

    monkeypatch.setattr(HookedSAEViT, "from_pretrained", classmethod(lambda cls, spec, **kw: model))
    _image_folder(tmp_path / "labelled")
    flat = tmp_path / "flat"
    flat.mkdir()
    for png in sorted((tmp_path / "labelled").rglob("*.png")):
        png.rename(flat / f"{png.parent.name}_{png.name}")
    out = tmp_path / "eval"
    assert main(["eval", "--sae", str(sae_dir / "L0_half"), "--images", str(flat), "--out", str(out)]) == 0
    assert "has no class subfolders: reconstruction and sparsity only" in capsys.readouterr().out
    row = pd.read_csv(out / "metrics.csv").iloc[0]
    assert row["n_images"] == 6 and np.isfinite(row["fvu_all"]) and np.isfinite(row["l0_all"])
    assert "top1_clean" not in row or not np.isfinite(row["top1_clean"])
