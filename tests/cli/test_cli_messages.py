"""One-line messages for what used to end in a traceback or an empty line (YAML configs, Ctrl-C)."""

from __future__ import annotations

import time

import pytest

from sae_clip_plugin.cli import main
from sae_clip_plugin.training.config import VisionSAERunnerConfig
from sae_clip_plugin.yaml_files import load_yaml_file

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
BAD_YAML = {
    "syntax": ("hook_name: [blocks.1\n", r"not valid YAML \(line 2, column 1\): expected ',' or ']'"),
    "deep": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 50 levels deep"),
    "billion laughs": (BILLION_LAUGHS, "more than 100000 values once aliases unfold"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_a_bad_yaml_config_is_one_line_naming_the_file(case, tmp_path):
    text, message = BAD_YAML[case]
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert len(text.encode()) < 11_000
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as info:
        load_yaml_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert time.perf_counter() - start < 2.0
    with pytest.raises(ValueError, match=message):
        VisionSAERunnerConfig.from_file(path)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_bad_yaml_through_the_cli_exits_2_with_one_line(command, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(BILLION_LAUGHS)
    assert main([command, "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "aliases unfold" in err


def test_yaml_with_a_few_aliases_still_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {k: 4}\nsae: *b\n")
    assert load_yaml_file(path) == {"base": {"k": 4}, "sae": {"k": 4}}


def test_ctrl_c_says_what_happened(monkeypatch, capsys):
    import sae_clip_plugin.cli.info as info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run_info", interrupted)
    assert main(["info", "--list-pretrained"]) == 130
    err = capsys.readouterr().err
    assert "sae-clip info: interrupted (Ctrl-C)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["steerability", "--tokens", "-1"], "positions count from 0"),
        (["steerability", "--strengths", "1,nan"], "every value must be a finite number"),
        (["disentangle", "--n-select", "0"], "must be at least 1"),
        (["disentangle", "--n-eval", "-5"], "must be at least 1"),
    ],
)
def test_bad_flag_values_are_refused_when_the_flags_are_read(argv, message, capsys):
    """Before any model loads: --tokens -1 used to steer the last patch, --n-select 0 became 300, and
    --strengths 1,nan was refused only after the main run."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bogus_device_names_the_choices():
    from sae_clip_plugin.model.device import resolve_device

    with pytest.raises(ValueError, match="device 'bogus' is not a torch device; use auto, cpu, cuda"):
        resolve_device("bogus")
    assert resolve_device("cpu") == "cpu"
