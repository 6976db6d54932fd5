"""One flag vocabulary across commands; the previous release's spellings still parse, to the same values, with a
deprecation line on stderr."""

from __future__ import annotations

import argparse

import pytest

from sae_clip_plugin.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _visible_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def test_shared_concepts_have_one_spelling_and_device_defaults_to_auto():
    old_spellings = {
        "--model-spec",
        "--hook-name",
        "--output-path",
        "--saes",
        "--pretrained",
        "--dataset",
        "--toy",
    }
    for name, parser in _subparsers().items():
        visible = _visible_flags(parser)
        assert not visible & old_spellings, (name, visible & old_spellings)
        device = [a for a in parser._actions if "--device" in a.option_strings]
        if device and name not in ("train", "harvest"):  # their flags override config fields (default "auto")
            assert device[0].default == "auto", name


@pytest.mark.parametrize(
    "old, new",
    [
        (["disentangle", "--saes", "a", "--pretrained", "R:x", "--task", "t", "--out", "o"],
         ["disentangle", "--sae", "a", "--sae", "R:x", "--task", "t", "--out", "o"]),
        (["eval", "--toy", "--sae", "a"], ["eval", "--images", "toy", "--sae", "a"]),
        (["train", "--model-spec", "toy", "--dataset", "toy", "--hook-name", "blocks.1.hook_resid_post",
          "--output-path", "o"],
         ["train", "--model", "toy", "--images", "toy", "--hook", "blocks.1.hook_resid_post", "--out", "o"]),
    ],
)  # fmt: skip
def test_old_spellings_parse_to_the_new_values_with_a_deprecation_line(old, new, capsys):
    parser = build_parser()
    new_args = vars(parser.parse_args(new))
    assert capsys.readouterr().err == ""
    old_args = vars(parser.parse_args(old))
    err = capsys.readouterr().err
    assert old_args == new_args
    for flag in (a for a in old if a.startswith("--") and a not in new):
        assert f"sae-clip: {flag} is deprecated and will be removed in 0.3; use --" in err


def test_old_train_flags_give_the_same_config():
    from sae_clip_plugin.cli.train import config_from_args

    parser = build_parser()
    common = ["--expansion-factor", "2", "--training-tokens", "409600", "--train-batch-size-tokens", "256"]
    old = parser.parse_args(["train", "--model-spec", "toy", "--dataset", "toy", "--hook-name", "blocks.1.hook_resid_post",
                             "--output-path", "o", *common])  # fmt: skip
    new = parser.parse_args(["train", "--model", "toy", "--images", "toy", "--hook", "blocks.1.hook_resid_post",
                             "--out", "o", *common])  # fmt: skip
    assert config_from_args(old).to_json() == config_from_args(new).to_json()
    cfg = config_from_args(new)
    assert (cfg.model_name, cfg.dataset_path, cfg.hook_name, cfg.output_path) == (
        "toy",
        "toy",
        "blocks.1.hook_resid_post",
        "o",
    )


def test_a_command_config_file_holds_its_flags_and_typed_flags_win(tmp_path, capsys):
    from sae_clip_plugin.cli import with_config_file

    parser = build_parser()
    settings = tmp_path / "disentangle.yaml"
    settings.write_text("sae: [a, 'R:x']\ntask: toy-colour\nout: o\nk: [4, 8]\nno-progress: true\nseed: 3\n")
    argv = with_config_file(parser, ["disentangle", "--config", str(settings), "--seed", "5"])
    from_file = vars(parser.parse_args(argv))
    typed = vars(parser.parse_args(["disentangle", "--sae", "a", "--sae", "R:x", "--task", "toy-colour", "--out", "o",
                                    "--k", "4", "8", "--no-progress", "--seed", "5"]))  # fmt: skip
    assert from_file == typed
    (tmp_path / "bad.yaml").write_text("strength: 3\n")
    with pytest.raises(ValueError, match="'strength' is not a setting of this command; use one of"):
        with_config_file(parser, ["eval", "--config", str(tmp_path / "bad.yaml")])
    # train's --config is a VisionSAERunnerConfig file, read by the runner config itself
    assert with_config_file(parser, ["train", "--config", "x.yaml"]) == ["train", "--config", "x.yaml"]


def test_train_flags_reach_the_nested_logger():
    from sae_clip_plugin.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--model", "toy", "--images", "toy", "--hook", "blocks.1.hook_resid_post",
                                      "--log-to-wandb", "--set", "logger.run_name=mine", "--training-tokens", "409600",
                                      "--train-batch-size-tokens", "256"])  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.logger.log_to_wandb is True and cfg.logger.run_name == "mine"
    assert cfg.logger.wandb_project == "sae_clip_plugin"
