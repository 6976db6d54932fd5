"""`sae-clip disentangle`: suppress spurious SAE features across layers -> CSV, markdown, PNG per task.

    sae-clip disentangle --sae out/saes/toy --task toy-typographic --task toy-background --out out/dis/toy
    sae-clip disentangle --sae b32-saes --task celeba=/data/celeba --task waterbirds=/data/wb --out out/dis/b32

Tasks: toy-typographic | toy-background | toy-colour (registered by the toy world), celeba=ROOT (select on train,
evaluate on val, both group-balanced), waterbirds=ROOT (select on val, evaluate on test, balanced),
typo-folder=DIR (RTA-100 / PAINT naming, split in halves), typo-generate=IMAGE_FOLDER (writes wrong
class names on a class-per-subfolder image set, keeps the clean twins, split in halves). Every flag is a field of
DisentangleCommandConfig; --config FILE holds the same fields as YAML / JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sae_clip_plugin.analysis.disentangle.config import DisentangleCommandConfig
from sae_clip_plugin.cli.options import add_config, add_config_flags, add_deprecated


def run_disentangle_command(args: argparse.Namespace) -> int:
    from sae_clip_plugin.analysis.disentangle.run import disentangle_tasks
    from sae_clip_plugin.viz.disentangle_report import summary_line, write_disentangle_outputs

    cfg = DisentangleCommandConfig.from_namespace(args)

    def show(result: Any) -> None:
        print(json.dumps(result.summary, indent=1, default=str) if cfg.json else summary_line(result))

    results = disentangle_tasks(cfg, on_result=show)
    command = getattr(args, "command_line", "sae-clip disentangle")
    for path in write_disentangle_outputs(results, Path(cfg.out), command):  # type: ignore[arg-type]
        print(f"wrote {path}")
    return 0


def register_commands(subparsers: Any) -> None:
    """Add `disentangle` to the top-level `sae-clip` parser."""
    p = subparsers.add_parser(
        "disentangle",
        help="suppress spurious SAE features layer by layer; CSV + markdown + PNG of accuracy by layer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = add_config_flags(p, DisentangleCommandConfig)
    options = groups["options"]
    add_deprecated(options, "--saes", "--sae", dest="sae", append=True)
    add_deprecated(options, "--pretrained", "--sae RELEASE:SAE_ID", dest="sae", append=True)
    add_deprecated(options, "--k", "--n-suppressed", dest="n_suppressed", type=int, nargs="+")
    add_config(options)
    p.set_defaults(func=run_disentangle_command)
