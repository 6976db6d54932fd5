"""`sae-clip train`: train vision SAEs from a YAML/JSON config, with flags for the common fields.

    sae-clip train --config cfg.yaml --hook blocks.6.hook_resid_post --training-tokens 1000000
    sae-clip train --preset topk --images /data/imagenet/train --hook blocks.5.hook_resid_post --set sae.k=32

The flags shared with the other commands (--model, --hook, --images, --out, --device) set the config's
model_name, hook_name, dataset_path, output_path and device (sae_lens' names); the older spellings (--model-spec, --hook-name,
--dataset, --output-path) still work for one release.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sae_clip_plugin.cli.options import add_deprecated

# the flags are the VisionSAERunnerConfig fields declared with option(..., flag=...) (training/config.py): name,
# help and type come from the field; every flag defaults to "not given", so a --config file or a preset keeps its
# values unless a flag is typed. --log-to-wandb sets sae_lens' nested logger.log_to_wandb.
WANDB_FLAG = "--log-to-wandb"


def config_flags() -> dict[str, Any]:
    """flag -> the VisionSAERunnerConfig field it sets."""
    import dataclasses

    from sae_clip_plugin.training.config_flags import (
        TrainingFlags,  # torch-free, unlike VisionSAERunnerConfig
    )

    return {f.metadata["flag"]: f for f in dataclasses.fields(TrainingFlags)}


DEPRECATED_FLAGS = {
    "--model-spec": "--model",
    "--hook-name": "--hook",
    "--dataset": "--images",
    "--output-path": "--out",
    "--n-eval-images": "--n-eval",
}


def _parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` (YAML-typed values; `sae.k=32` sets one architecture option, `logger.run_name=x` one
    sae_lens LoggingConfig field)."""
    from sae_clip_plugin.yaml_files import load_yaml_text

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = load_yaml_text(raw, f"--set {key}")
        group, dot, name = key.partition(".")
        if dot:
            out.setdefault(group, {})[name] = value
        else:
            out[key] = value
    return out


def config_from_args(args: argparse.Namespace) -> Any:
    from sae_clip_plugin.training.config import VisionSAERunnerConfig

    overrides: dict[str, Any] = {}
    for f in config_flags().values():
        value = getattr(args, f.name)
        if value is not None:
            overrides[f.name] = value
    if args.log_to_wandb:
        overrides["logger"] = {"log_to_wandb": True}
    if args.hook:
        hooks = [h for item in args.hook for h in item.split(",") if h]
        overrides["hook_name"] = hooks[0] if len(hooks) == 1 else hooks
    if args.preset:
        overrides["preset"] = args.preset
    for key, value in _parse_set(args.set or []).items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    if args.config:
        return VisionSAERunnerConfig.from_file(args.config, **overrides)
    return VisionSAERunnerConfig.from_dict(overrides)


SETUP_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, RuntimeError)


def launched_by_torchrun() -> bool:
    """WORLD_SIZE > 1: this process is one rank of a torchrun job (the one-process route stays the default)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


def run_train(args: argparse.Namespace) -> int:
    from sae_clip_plugin.training.runner import VisionSAETrainingRunner

    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"sae-clip train: bad configuration: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_json())
        return 0
    if launched_by_torchrun():
        return _run_train_ranks(cfg)
    runner = VisionSAETrainingRunner(cfg)
    try:
        runner.setup()  # every input check, before any harvesting or training
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"sae-clip train: {err}", file=sys.stderr)
        return 2
    if runner.sizing:
        print(runner.sizing)
    if runner.plan:
        print(runner.plan)
    runner.run()
    _print_results(runner, cfg.architecture)
    print(f"saved to {cfg.output_path}")
    return 0


def _print_results(runner: Any, architecture: str, prefix: str = "") -> None:
    from sae_clip_plugin.training.verdict import verdict

    final = runner.eval_log[-1]["metrics"] if runner.eval_log else {}
    stream = getattr(runner.provider, "cursor", None)  # a streamed run: what it read, what it skipped
    if stream is not None:
        print(f"{prefix}stream: {runner.provider.n_images_read} images read in {stream.epoch + 1} pass(es) "
              f"(last one partial), {stream.skipped} corrupt samples skipped (counted in every pass)")  # fmt: skip
    for hook, metrics in final.items():
        summary = ", ".join(
            f"{k}={metrics[k]:.4g}"
            for k in ("explained_variance", "l0", "l0_cls", "l0_patches", "dead_fraction_eval")
            if k in metrics
        )
        print(f"{prefix}{hook}: {summary}")
        print(f"{prefix}{hook} verdict: {verdict(metrics, architecture)}")


def _run_train_ranks(cfg: Any) -> int:
    """One rank of `torchrun ... sae-clip train`: its share of the harvest, then its hooks (across_ranks.py)."""
    from sae_clip_plugin.training.across_ranks import train_across_ranks
    from sae_clip_plugin.training.distributed import init_from_env

    ranks = init_from_env(cfg.resolved_device)
    prefix = f"[rank {ranks.rank}/{ranks.world_size}] "
    try:
        runners = train_across_ranks(cfg, ranks)
    except SETUP_ERRORS as err:
        print(f"sae-clip train: {prefix}{err}", file=sys.stderr)
        return 2
    for hook, runner in runners.items():
        if runner.sizing:
            print(prefix + runner.sizing)
        if runner.plan:
            print(prefix + runner.plan)
        _print_results(runner, runner.cfg.architecture, prefix)
        print(f"{prefix}saved {hook} to {runner.cfg.output_path}")
    return 0


def run_harvest(args: argparse.Namespace) -> int:
    """`sae-clip harvest`: the activation cache alone; under torchrun the ranks share its shards."""
    from sae_clip_plugin.training.distributed import init_from_env
    from sae_clip_plugin.training.runner import VisionSAETrainingRunner

    try:
        cfg = config_from_args(args)
        if cfg.cached_activations_path is None:
            raise ValueError("harvest writes an activation cache: pass --cache-path DIR")
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"sae-clip harvest: bad configuration: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_json())
        return 0
    ranks = init_from_env(cfg.resolved_device) if launched_by_torchrun() else None
    try:
        cache = VisionSAETrainingRunner(cfg).harvest(ranks)
    except SETUP_ERRORS as err:
        print(f"sae-clip harvest: {err}", file=sys.stderr)
        return 2
    if ranks is None or ranks.is_main:
        print(
            f"activation cache at {cache.path}: {cache.n_images} images x {cache.context_size} tokens at "
            f"{', '.join(cache.hook_names)} ({cache.storage_dtype})"
        )
    return 0


def register_commands(subparsers: Any) -> None:
    """Add `train` and `harvest` to a top-level argparse subparsers object."""
    parser = subparsers.add_parser(
        "train",
        help="train vision SAEs on HookedViT activations with sae_lens' trainer",
        description="Train SAEs from a YAML/JSON VisionSAERunnerConfig; flags override the file. Under "
        "`torchrun --nproc-per-node N` the ranks share the harvest and split the hooks (docs/distributed.md).",
    )
    _add_training_flags(parser)
    parser.set_defaults(func=run_train)
    harvest = subparsers.add_parser(
        "harvest",
        help="only harvest the activation cache (--cache-path) a training run reads; torchrun splits it",
        description="Write the activation cache of a training config (docs/cache_format.md) and stop. Under "
        "`torchrun --nproc-per-node N` each rank writes its share of the shards; the cache is the same as one "
        "process writes (docs/distributed.md). It takes train's flags, so the same command line or --config "
        "harvests and then trains; only the model, image, hook, token and cache flags change what it writes.",
    )
    _add_training_flags(harvest)
    harvest.set_defaults(func=run_harvest)


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a VisionSAERunnerConfig, shared by train and harvest."""
    parser.add_argument("--config", help="YAML or JSON file of VisionSAERunnerConfig fields")
    parser.add_argument(
        "--preset",
        choices=["vanilla", "topk", "paper-vanilla", "paper-topk"],
        help="start from a recipe: vanilla (the paper's ReLU + L1, the defaults), topk (TopK with live-feature "
        "initialisation, unit decoder rows and a 4x auxiliary loss; the budget, batch, width, k and lr you do not set "
        "follow your images and model: 50 passes, see the printed 'sized to' line), paper-topk (the released TopK "
        "recipe as it was, ImageNet budget)",
    )
    parser.add_argument(
        "--hook", action="append", help="hook to train on; repeat or comma-separate for several"
    )
    dests = {flag: f.name for flag, f in config_flags().items()} | {"--hook": "hook"}
    for old, new in DEPRECATED_FLAGS.items():
        add_deprecated(parser, old, new, dest=dests[new], append=new == "--hook")
    from sae_clip_plugin.cli.options import _annotation_parser
    from sae_clip_plugin.command_config import field_default

    for flag, f in config_flags().items():
        default = field_default(f)
        help_text = f.metadata["help"] + (
            "" if default in (None, False, "") else f" (config default: {default})"
        )
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=_annotation_parser(f.type), default=None, help=help_text
            )
    parser.add_argument(
        WANDB_FLAG, action="store_true", help="log through sae_lens' wandb logger (logger.log_to_wandb)"
    )
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="any config field, e.g. --set sae.k=32"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the package CLI is `sae-clip train`)."""
    parser = argparse.ArgumentParser(prog="sae-clip")
    register_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
