"""`sae-clip demo --out DIR [--model SPEC] [--images FOLDER] [--fast]`: the whole toolchain end to end."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sae_clip_plugin.cli.options import add_device, add_images, add_model, add_out

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
    add_out(p, help_text="output folder (created; a re-run resumes it)")
    add_model(p, default="toy")
    add_images(p, "the toy world; a folder's class subfolders give zero-shot labels and a typographic task")
    p.add_argument("--fast", action="store_true", help="tiny budgets (smoke test)")
    p.add_argument(
        "--layers", type=int, nargs="+", default=None, help="blocks to train SAEs on (default: 3 spread)"
    )
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default %(default)s)")
    p.add_argument(
        "--force", action="store_true", help="delete this demo's previous outputs in --out and start over"
    )
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from sae_clip_plugin.demo.config import DemoConfig
    from sae_clip_plugin.demo.pipeline import run_demo
    from sae_clip_plugin.demo.state import SettingsMismatchError
    from sae_clip_plugin.model.device import resolve_device

    device = resolve_device(args.device)
    try:
        cfg = DemoConfig.make(args.out, fast=args.fast, model_spec=args.model, images=args.images,
                              layers=tuple(args.layers) if args.layers else None, device=device, seed=args.seed)  # fmt: skip
        paths = run_demo(cfg, force=args.force)
    except (SettingsMismatchError, FileNotFoundError, ValueError) as err:
        print(f"sae-clip demo: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
