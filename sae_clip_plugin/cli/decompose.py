"""`sae-clip decompose`: every attention head's direct effect on the image embedding -> table + figures.

    sae-clip decompose --model toy --task toy-typographic --out out/decompose/toy
    sae-clip decompose --model open_clip:ViT-B-32/openai --task typo-folder=/data/rta100 --texts imagenet --out out/dec

The image embedding is split exactly into per-(layer, head, token) and per-neuron direct contributions
(Gandelsman, Efros & Steinhardt, ICLR 2024). Writes heads.csv and heads.md (one row per head: direct
effect on the correct class, variance share, typographic effect on typographic tasks, TextSpan
description), head_direct_effect.png and, for typographic tasks, head_typographic_effect.png, and
token_maps.png (where on one image the top heads take their contribution from). Images come from the
selection split of the task (the same images `sae-clip disentangle` chooses its heads on).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text
from sae_clip_plugin.cli.options import add_config, add_device, add_model, add_out


def run_decompose_command(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from sae_clip_plugin.analysis.dashboard import display_images
    from sae_clip_plugin.analysis.decomposition.direct_effects import direct_logit_attribution
    from sae_clip_plugin.analysis.decomposition.heads import head_report, head_totals_and_logits
    from sae_clip_plugin.analysis.decomposition.textspan import text_bank
    from sae_clip_plugin.analysis.decomposition.typographic import (
        effects_from_margins,
        margins_from_head_logits,
    )
    from sae_clip_plugin.analysis.disentangle.tasks import build_task
    from sae_clip_plugin.analysis.vocabulary import default_vocabulary, text_embeddings
    from sae_clip_plugin.model.device import resolve_device
    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.viz.decomposition_figures import plot_head_heatmap, plot_token_maps
    from sae_clip_plugin.viz.decomposition_report import heads_markdown

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    model = HookedViT.from_pretrained(args.model, device=device).eval()
    options = {"placement": args.word_placement} if args.word_placement else {}
    task = build_task(
        model, args.task, n_select=args.n_images, n_eval=args.n_images, seed=args.seed, **options
    )
    split = task.select
    weights = model.zero_shot_weights(task.classnames, task.templates)
    texts = text_bank(args.texts or default_vocabulary(args.model))
    bank = text_embeddings(model, texts)
    twins = split.twins() if task.kind == "typographic" else None
    print(
        f"model {args.model} on {device}; task {task.name}: {len(split)} images; {len(texts)} TextSpan texts"
    )

    # one decomposition of every image (typographic: clean and attacked, so TextSpan sees the text) serves both
    # the head table and the typographic effects
    images, labels = split.pixels, split.labels
    contributions = head_totals_and_logits(model, images, weights, args.batch_size, progress=True)
    typo = None
    if twins is not None:
        att, cln = twins
        written, true = split.spurious[att], split.labels[att]
        typo = effects_from_margins(margins_from_head_logits(contributions.logits[att], written, true),
                                    margins_from_head_logits(contributions.logits[cln], written, true))  # fmt: skip
    report = head_report(model, images, labels, weights, texts, bank, n_texts=args.n_texts,
                         typographic_effect=typo, contributions=contributions)  # fmt: skip

    out = Path(args.out)
    command = getattr(args, "command_line", "sae-clip decompose")
    written = [out / "heads.csv", out / "heads.md", out / "summary.json", out / "head_direct_effect.png"]
    atomic_write_text(written[0], pd.DataFrame(report.rows).to_csv(index=False))
    atomic_write_text(written[1], heads_markdown(report.rows, command, typo is not None))
    plot_head_heatmap(report.direct_effect, f"{task.name}: direct effect on the correct class",
                      "logit (correct - mean over classes)", written[3])  # fmt: skip
    by = "typographic_effect" if typo is not None else "direct_effect"
    top = report.top_heads(by, n=3)
    if typo is not None:
        written.append(out / "head_typographic_effect.png")
        plot_head_heatmap(typo, f"{task.name}: direct typographic effect",
                          "logit (written - true), attacked - clean", written[-1])  # fmt: skip
        index = int(twins[0][0])
        favoured, against = split.spurious[index], split.labels[index]
        what = f"written '{task.classnames[favoured]}' - true '{task.classnames[against]}'"
    else:
        index, favoured = 0, split.labels[0]
        against = None
        what = f"correct class '{task.classnames[favoured]}'"
    dla = direct_logit_attribution(model, split.pixels[index : index + 1].to(device), weights)
    margin = dla.heads[0, ..., favoured] - (dla.heads[0, ..., against] if against is not None else 0)
    grid = model.cfg.grid_size
    maps = [margin[layer, head, 1:].reshape(grid, grid) for layer, head in top]
    titles = [f"L{layer}H{head} (CLS {float(margin[layer, head, 0]):+.2f})" for layer, head in top]
    written.append(out / "token_maps.png")
    plot_token_maps(display_images(split.pixels[index : index + 1], model.cfg.preprocess)[0], maps, titles,
                    f"logit ({what})", suptitle=f"where the top heads by {by.replace('_', ' ')} take it from", path=written[-1])  # fmt: skip
    summary = {
        "task": task.name,
        "n_images": len(images),
        "top_heads": {by: [f"L{layer}H{head}" for layer, head in report.top_heads(by, n=5)]},
        "textspan": {f"L{layer}H{head}": report.textspan_text(layer, head) for layer, head in top},
    }
    atomic_write_json(written[2], summary, indent=1)
    print(
        f"top heads by {by}: "
        + ", ".join(f"L{layer}H{head} ({summary['textspan'][f'L{layer}H{head}']})" for layer, head in top)
    )
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
    add_model(p, default="toy")
    p.add_argument("--task", default="toy-typographic",
                   help="image set, as in `sae-clip disentangle --task` (default %(default)s)")  # fmt: skip
    add_out(p)
    p.add_argument("--texts", help="TextSpan texts: a registered text bank (toy) | imagenet | a word-per-line file "
                                    "(default: the model's registered text bank, else imagenet)")  # fmt: skip
    p.add_argument("--n-texts", type=int, default=3, help="TextSpan texts per head (default %(default)s)")
    p.add_argument("--n-images", type=int, default=None,
                   help="toy pairs / images per group of the task's selection split (default: the task's)")  # fmt: skip
    p.add_argument("--word-placement", default=None, choices=["beside", "anywhere"],
                   help="toy-typographic: where the word is written (default: beside)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the image sets (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward (default %(default)s)")
    add_device(p)
    add_config(p)
    p.set_defaults(func=run_decompose_command)
