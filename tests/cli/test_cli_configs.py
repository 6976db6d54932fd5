"""Every command's flags, defaults and help come from its config dataclass, and --config FILE round-trips it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from sae_clip_plugin.analysis.decomposition.config import DecomposeConfig
from sae_clip_plugin.analysis.disentangle.config import DisentangleCommandConfig, DisentangleConfig
from sae_clip_plugin.analysis.metrics.config import EvalConfig
from sae_clip_plugin.analysis.steerability.config import SteerabilityConfig
from sae_clip_plugin.cli import build_parser, with_config_file
from sae_clip_plugin.command_config import field_default
from sae_clip_plugin.demo.config import DemoCommandConfig

COMMANDS = {
    "steerability": SteerabilityConfig,
    "eval": EvalConfig,
    "decompose": DecomposeConfig,
    "disentangle": DisentangleCommandConfig,
    "demo": DemoCommandConfig,
}
# a setting of each command other than its default, for the round trip (with what the command requires)
CHANGED = {
    "steerability": {"sae": "out/sae", "max_images": 7, "tokens": [0, 3], "strengths": [0.0, 50.0], "json": True,
                     "random_model": True, "out": "o", "relative_strength": 2.5},
    "eval": {"sae": ["a", "b"], "images": "toy", "templates": ["a {}", "the {}"], "preload_gb": 0.5,
             "no_downstream": True},
    "decompose": {"task": "toy-colour", "out": "o", "n_select": 12, "word_placement": "anywhere"},
    "disentangle": {"sae": ["s"], "task": ["toy-typographic", "toy-colour"], "out": "o", "n_suppressed": [2, 5],
                    "head_layers": [1, 2], "method": "mean_diff", "n_select": 9},
    "demo": {"out": "o", "fast": True, "layers": [1, 3], "images": "imgs", "seed": 3},
}  # fmt: skip


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_is_a_config_field_with_its_default_and_help(command):
    config_cls, sub = COMMANDS[command], _subparser(command)
    flags = {a.dest: a for a in sub._actions
             if a.option_strings and a.help != argparse.SUPPRESS and a.dest not in ("help", "config_file")}  # fmt: skip
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    assert set(flags) == set(fields)
    for name, action in flags.items():
        f = fields[name]
        assert action.option_strings[-1] == "--" + name.replace("_", "-")
        assert action.help.startswith(f.metadata["help"]), name
        default = field_default(f)
        assert action.default == (None if f.metadata.get("repeat") else default), name
    assert config_cls.from_namespace(sub.parse_args(_required(command))) == config_cls(
        **_required_values(command)
    )


def _required_values(command: str) -> dict:
    return {k: v for k, v in CHANGED[command].items() if k in ("out", "task")}


def _required(command: str) -> list[str]:
    argv = []
    for key, value in _required_values(command).items():
        for item in value if isinstance(value, list) else [value]:
            argv += ["--" + key, str(item)]
    return argv


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_config_file_round_trips_every_command(command, tmp_path):
    config = COMMANDS[command](**CHANGED[command])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    parser = build_parser()
    args = parser.parse_args(with_config_file(parser, [command, "--config", str(path)]))
    assert COMMANDS[command].from_namespace(args) == config


def test_the_disentangle_command_defaults_are_the_experiments():
    assert DisentangleCommandConfig(task=["t"], out="o").experiment() == DisentangleConfig()


def test_train_flags_are_the_flagged_runner_config_fields():
    """sae-clip train's flags: the VisionSAERunnerConfig fields declared with a flag (TrainingFlags), plus the
    command's own (--config, --preset, --hook, --set, --print-config, --log-to-wandb)."""
    from sae_clip_plugin.training.config import VisionSAERunnerConfig
    from sae_clip_plugin.training.config_flags import TrainingFlags

    sub = _subparser("train")
    own = {"config", "preset", "hook", "set", "print_config", "log_to_wandb"}
    flags = {a.dest: a for a in sub._actions
             if a.option_strings and a.help != argparse.SUPPRESS and a.dest not in ("help",)}  # fmt: skip
    fields = {f.name: f for f in dataclasses.fields(TrainingFlags)}
    assert set(flags) - own == set(fields)
    for name, f in fields.items():
        assert flags[name].option_strings == [f.metadata["flag"]] and flags[name].default is None
        assert flags[name].help.startswith(f.metadata["help"]), name
    assert {f.name for f in dataclasses.fields(VisionSAERunnerConfig)} >= set(fields)  # inherited, not copied
