"""`sae-clip disentangle`: suppress spurious SAE features across layers -> CSV, markdown, PNG per task.

    sae-clip disentangle --sae out/saes/toy --task toy-typographic --task toy-background --out out/dis/toy
    sae-clip disentangle --sae b32-saes --task celeba=/data/celeba --task waterbirds=/data/wb --out out/dis/b32

Tasks: toy-typographic | toy-background | toy-colour (registered by the toy world), celeba=ROOT (select on train,
evaluate on val, both group-balanced), waterbirds=ROOT (select on val, evaluate on test, balanced),
typo-folder=DIR (RTA-100 / PAINT naming, split in halves), typo-generate=IMAGE_FOLDER (writes wrong
class names on a class-per-subfolder image set, keeps the clean twins, split in halves).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sae_clip_plugin.cli.options import (
    add_config,
    add_deprecated,
    add_device,
    add_model,
    add_out,
    add_sae,
    positive_int,
    sae_specs,
)


def config_from_args(args: argparse.Namespace) -> Any:
    from sae_clip_plugin.analysis.disentangle.evaluate import DisentangleConfig

    return DisentangleConfig(
        ks=tuple(args.k), method=args.method, select_tokens=args.select_tokens, pool=args.pool,
        suppress_tokens=args.suppress_tokens, n_random=args.n_random, n_heads=tuple(args.n_heads),
        head_layers=tuple(args.head_layers) if args.head_layers else None, max_clean_drop=args.max_clean_drop,
        batch_size=args.batch_size,
    )  # fmt: skip


def run_disentangle_command(args: argparse.Namespace) -> int:
    import torch

    from sae_clip_plugin import registry
    from sae_clip_plugin.analysis.disentangle.evaluate import run_disentangle
    from sae_clip_plugin.analysis.disentangle.tasks import build_task
    from sae_clip_plugin.model.device import resolve_device
    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.model.sae_splice import check_saes_fit
    from sae_clip_plugin.pretrained.loading import load_saes_by_hook, model_spec_from_metadata
    from sae_clip_plugin.viz.disentangle_report import summary_line, write_disentangle_outputs

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    try:
        cfg = config_from_args(args)
        saes = load_saes_by_hook(sae_specs(args), device)
        metadata = [sae.cfg.metadata for sae in saes.values()]
        spec = args.model or model_spec_from_metadata(
            metadata, default=registry.world_model("task", args.task)
        )
        model = HookedViT.from_pretrained(spec, device=device).eval()
        check_saes_fit(model, saes, not args.no_check_model)
    except (ValueError, FileNotFoundError) as err:
        print(f"sae-clip disentangle: {err}", file=sys.stderr)
        return 2
    command = getattr(args, "command_line", "sae-clip disentangle")
    print(f"model {spec} on {device}; {len(saes)} SAE(s): {', '.join(saes)}")
    results = []
    for task_spec in args.task:
        options = {"placement": args.word_placement} if args.word_placement else {}
        task = build_task(model, task_spec, n_select=args.n_select, n_eval=args.n_eval, seed=args.seed,
                          spurious_by=args.spurious_by, batch_size=args.batch_size, **options)  # fmt: skip
        result = run_disentangle(model, saes, task, cfg, progress=not args.no_progress)
        results.append((result, task))
        print(json.dumps(result.summary, indent=1, default=str) if args.json else summary_line(result))
    out = Path(args.out)
    for path in write_disentangle_outputs(results, out, command):
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
    add_sae(p)
    add_deprecated(p, "--saes", "--sae", dest="sae", append=True)
    add_deprecated(p, "--pretrained", "--sae RELEASE:SAE_ID", dest="sae", append=True)
    add_model(p)
    p.add_argument("--task", action="append", required=True,
                   help="toy-typographic | toy-background | toy-colour | celeba=ROOT | waterbirds=ROOT | "
                        "typo-folder=DIR | typo-generate=IMAGE_FOLDER; repeatable")  # fmt: skip
    add_out(p)
    p.add_argument(
        "--json", action="store_true", help="print each task's summary as JSON instead of one line"
    )
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16], help="numbers of features to suppress")
    p.add_argument(
        "--method", default="auroc", choices=["auroc", "mean_diff", "steering"], help="feature ranking"
    )
    p.add_argument("--select-tokens", default="sae", choices=["sae", "all", "cls", "patches"],
                   help="tokens pooled into one activation per image for ranking (sae: those the SAE was "
                        "trained on)")  # fmt: skip
    p.add_argument("--pool", default="mean", choices=["mean", "max"], help="pooling over --select-tokens")
    p.add_argument("--suppress-tokens", default="sae", choices=["sae", "all", "cls", "patches"],
                   help="where to clamp to 0 (sae: the tokens the SAE was trained on)")  # fmt: skip
    p.add_argument("--spurious-by", default="word", choices=["word", "attack"],
                   help="typographic: rank against each written word, or attacked vs clean")  # fmt: skip
    p.add_argument("--word-placement", default=None, choices=["beside", "anywhere"],
                   help="toy-typographic: write the word beside the shape (reading only; the default) or "
                        "anywhere, as in training (reading plus occlusion)")  # fmt: skip
    p.add_argument("--n-random", type=int, default=3, help="seeds of the random-feature baseline")
    p.add_argument(
        "--n-heads", type=int, nargs="*", default=[1, 2, 4], help="head-ablation sizes (typographic)"
    )
    p.add_argument("--head-layers", type=int, nargs="*", help="only ablate heads in these layers")
    p.add_argument(
        "--max-clean-drop",
        type=float,
        default=0.02,
        help="typographic: clean accuracy a setting may lose (choice and bar)",
    )
    p.add_argument("--n-select", type=positive_int, default=None,
                   help="selection split size: toy pairs / images per group (default 300); images per group for "
                        "celeba / waterbirds (default: the smallest group)")  # fmt: skip
    p.add_argument("--n-eval", type=positive_int, default=None, help="evaluation split size (as --n-select)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the image sets and the random baseline (default %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per forward (default %(default)s)")
    add_device(p)
    add_config(p)
    p.add_argument(
        "--no-check-model", action="store_true", help="allow SAEs whose metadata names another model"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_disentangle_command)
