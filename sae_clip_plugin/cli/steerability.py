"""`sae-clip steerability`: the paper's steerability metric for an SAE, the neurons at a hook, or a random model.

    sae-clip steerability --sae out/sae --images toy --max-images 192 --vocabulary toy --features 0.05 --out out/steer
    sae-clip steerability --model toy --neurons --hook blocks.3.hook_resid_post --images toy --out out/steer_neurons
    sae-clip steerability --model toy --neurons --hook ... --random-model ...  # the random-model control
    sae-clip steerability --sae out/sae_on_random_toy ...        # SAE trained on random:toy (random_vision_model)
    ... --strengths 0,25,50,100,150,200 --curve-features 8        # also steering curves (CSV + PNG)

Writes <out>/<prefix>.csv (per-feature S, P, top concept, steerable, polysemanticity),
<prefix>_summary.json and <prefix>_summary.md. Every flag is a field of SteerabilityConfig; --config FILE holds
the same fields as YAML / JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sae_clip_plugin.analysis.steerability.config import SteerabilityConfig
from sae_clip_plugin.cli.options import add_config, add_config_flags, add_deprecated


def register_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "steerability",
        help="steerability of SAE features / neurons (arXiv 2504.08729 metric)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = add_config_flags(p, SteerabilityConfig)
    add_deprecated(groups["what to steer"], "--sae-id", "--sae RELEASE:SAE_ID", dest="sae_id")
    add_deprecated(groups["images and readout"], "--n-images", "--max-images", dest="max_images", type=int)
    add_config(groups["steering"])
    p.set_defaults(func=run_steerability_command)


def run_steerability_command(args: argparse.Namespace) -> int:
    from sae_clip_plugin.analysis.steerability.metric import strength_text
    from sae_clip_plugin.analysis.steerability.run import run_steerability
    from sae_clip_plugin.viz.steerability_report import write_steerability

    if getattr(args, "sae_id", None):  # the deprecated --sae-id X joined to --sae RELEASE
        args.sae = f"{args.sae}:{args.sae_id}"
    cfg = SteerabilityConfig.from_namespace(args)
    run = run_steerability(cfg)
    paths = write_steerability(run, cfg.out)  # type: ignore[arg-type]
    summary = run.result.summary
    if cfg.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "top_concepts"}, default=str))
    else:
        print(
            f"steerable: {summary['n_steerable']} of {summary['n_features']} features "
            f"({100 * summary['steerable_fraction']:.1f}%; steerable means S > {summary.get('threshold')} at "
            f"{strength_text(summary)}), coverage {summary['coverage']} distinct top concepts, mean S "
            f"{summary['mean_S']:.4g}"
        )
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
