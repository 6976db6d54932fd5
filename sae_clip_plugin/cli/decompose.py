"""`sae-clip decompose`: every attention head's direct effect on the image embedding -> table + figures.

    sae-clip decompose --model toy --task toy-typographic --out out/decompose/toy
    sae-clip decompose --model open_clip:ViT-B-32/openai --task typo-folder=/data/rta100 --texts imagenet --out out/dec

The image embedding is split exactly into per-(layer, head, token) and per-neuron direct contributions
(Gandelsman, Efros & Steinhardt, ICLR 2024). Writes heads.csv and heads.md (one row per head: direct
effect on the correct class, variance share, typographic effect on typographic tasks, TextSpan
description), head_direct_effect.png and, for typographic tasks, head_typographic_effect.png, and
token_maps.png (where on one image the top heads take their contribution from). Images come from the
selection split of the task (the same images `sae-clip disentangle` chooses its heads on). Every flag is a
field of DecomposeConfig; --config FILE holds the same fields as YAML / JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from sae_clip_plugin.analysis.decomposition.config import DecomposeConfig
from sae_clip_plugin.cli.options import add_config, add_config_flags, add_deprecated


def run_decompose_command(args: argparse.Namespace) -> int:
    from sae_clip_plugin.analysis.decomposition.run import decompose_task
    from sae_clip_plugin.viz.decomposition_report import write_decomposition

    cfg = DecomposeConfig.from_namespace(args)
    result = decompose_task(cfg)
    written = write_decomposition(result, cfg.out, getattr(args, "command_line", "sae-clip decompose"))  # type: ignore[arg-type]
    print(f"model {cfg.model}; task {result.task}: {result.n_images} images; {result.n_texts} TextSpan texts")
    textspan = result.summary["textspan"]
    print(f"top heads by {result.by}: " + ", ".join(f"{head} ({text})" for head, text in textspan.items()))
    for path in written:
        print(f"wrote {path}")
    return 0


def register_commands(subparsers: Any) -> None:
    """Add `decompose` to the top-level `sae-clip` parser."""
    p = subparsers.add_parser(
        "decompose",
        help="direct effect of every attention head on the image embedding (table, heat maps, token maps)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = add_config_flags(p, DecomposeConfig)
    add_deprecated(groups["options"], "--n-images", "--n-select", dest="n_select", type=int)
    add_config(groups["options"])
    p.set_defaults(func=run_decompose_command)
