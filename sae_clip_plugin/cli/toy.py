"""`sae-clip toy-train | toy-sample | toy-eval`: argparse subcommands registered by the main CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sae_clip_plugin.toy.recipe import DEFAULTS


def _train(args: argparse.Namespace) -> int:
    from sae_clip_plugin.toy.train import train_toy_clip

    result = train_toy_clip(
        args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
    )
    print(
        f"wrote {result['path']} after {result['seconds'] / 60:.1f} min; final loss {result['losses'][-1]:.4f}"
    )
    if args.eval:
        return _eval(argparse.Namespace(weights=args.out, n=600, per_group=150, seed=1234, json=False))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from sae_clip_plugin.toy.grid import sample_grid

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sample_grid(out, seed=args.seed, n=args.n):
        print(f"wrote {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sae_clip_plugin.toy.evaluate import evaluate_toy_clip, format_report
    from sae_clip_plugin.toy.model import load_toy_clip

    model, preprocess, tokenizer = load_toy_clip(weights=args.weights)
    result = evaluate_toy_clip(
        model, preprocess, tokenizer, n_typographic=args.n, n_per_group=args.per_group, seed=args.seed
    )
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the toy-world subcommands to the main `sae-clip` parser."""
    p = subparsers.add_parser(
        "toy-train", help="train the toy CLIP on the synthetic world (CPU: 27 min on 2 idle cores)"
    )
    p.add_argument(
        "--out",
        default="out/toy-clip/toy_clip.safetensors",
        help="safetensors path (default: %(default)s; the bundled weights are never overwritten unless named here)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS["seed"],
        help="seed of the data stream and the initialisation (default %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=DEFAULTS["steps"], help="optimiser steps (default %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS["batch_size"],
        help="image-caption pairs per step (default %(default)s)",
    )
    p.add_argument(
        "--lr", type=float, default=DEFAULTS["lr"], help="peak AdamW learning rate (default %(default)s)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--eval",
        action="store_true",
        help="afterwards, print what `sae-clip toy-eval` measures (zero-shot, typographic and spurious-group accuracy)",
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser("toy-sample", help="write PNG grids of toy-world images with their captions")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled images (default %(default)s)")
    p.add_argument("--n", type=int, default=48, help="training samples in the first grid")
    p.set_defaults(func=_sample)

    p = subparsers.add_parser("toy-eval", help="print clean/attacked accuracy and spurious worst-group gaps")
    p.add_argument("--weights", default=None, help="safetensors file (default: the bundled weights)")
    p.add_argument("--n", type=int, default=600, help="clean/attacked pairs in the typographic set")
    p.add_argument("--per-group", type=int, default=150, help="images per group in each spurious set")
    p.add_argument("--seed", type=int, default=1234, help="seed of the evaluation sets (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=_eval)
