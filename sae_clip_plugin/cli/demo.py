"""`sae-clip demo --out DIR [--model SPEC] [--images FOLDER] [--fast]`: the whole toolchain end to end.

Every flag is a field of DemoCommandConfig; --config FILE holds the same fields as YAML / JSON."""

from __future__ import annotations

import argparse
from typing import Any

from sae_clip_plugin.cli.options import add_config, add_config_flags
from sae_clip_plugin.demo.config import DemoCommandConfig

EPILOG = """examples:
  sae-clip demo --out out/demo                      # the bundled toy CLIP and world, offline (< 10 min on 2 cores)
  sae-clip demo --out out/demo-fast --fast          # tiny budgets: the same pipeline in about a minute
  sae-clip demo --out out/b32 --model open_clip:ViT-B-32/datacomp_xl_s13b_b90k --images /data/imagenet-subset

Re-running with the same --out skips finished steps (state/ holds their markers); --force starts over."""


def register_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo: harvest, train SAEs, metrics, steerability, disentanglement, dashboards, report",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(add_config_flags(p, DemoCommandConfig)["options"])
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from sae_clip_plugin.demo.pipeline import run_demo
    from sae_clip_plugin.model.device import resolve_device

    cfg = DemoCommandConfig.from_namespace(args)
    paths = run_demo(cfg.demo_config(resolve_device(cfg.device)), force=cfg.force)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
