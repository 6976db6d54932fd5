"""The toy subcommands, driven through a local argparse parser as the main CLI will."""

from __future__ import annotations

import argparse

from PIL import Image

from sae_clip_plugin.cli.toy import register_commands


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sae-clip")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_toy_sample_writes_png_grids(tmp_path):
    assert _run(["toy-sample", "--out", str(tmp_path / "grid"), "--n", "10"]) == 0
    pngs = sorted(p.name for p in (tmp_path / "grid").glob("*.png"))
    assert pngs == ["background_spurious.png", "colour_spurious.png", "train.png", "typographic.png"]
    with Image.open(tmp_path / "grid" / "train.png") as im:
        assert im.width >= 8 * 128 and im.height >= 2 * 128  # 10 samples -> two rows of enlarged images


def test_toy_eval_prints_the_must_show_numbers(capsys):
    assert _run(["toy-eval", "--n", "6", "--per-group", "3"]) == 0
    out = capsys.readouterr().out
    assert "clean zero-shot accuracy" in out and "word beside the shape: attacked" in out
    assert "word anywhere: attacked" in out
    assert "background-spurious" in out and "colour-spurious" in out and "worst group" in out
    assert "non-word" in out


def test_toy_train_is_registered_with_recipe_defaults():
    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["toy-train", "--out", "x.safetensors"])
    from sae_clip_plugin.toy.train import DEFAULTS

    assert args.steps == DEFAULTS["steps"] and args.seed == DEFAULTS["seed"] and callable(args.func)
