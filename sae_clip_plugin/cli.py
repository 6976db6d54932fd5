"""The `sae-clip` command: one entry point, subcommands contributed by the modules that own them."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# modules exposing register_commands(subparsers); each owns its subcommands
COMMAND_MODULES = (
    "sae_clip_plugin.model.cli",
    "sae_clip_plugin.toy.cli",
    "sae_clip_plugin.training.cli",
    "sae_clip_plugin.analysis.metrics_cli",
    "sae_clip_plugin.analysis.steering_cli",
    "sae_clip_plugin.analysis.disentangle_cli",
    "sae_clip_plugin.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sae-clip", description="CLIP vision SAEs on transformer_lens / sae_lens"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the package is not installed in this version
            raise
        module.register_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
