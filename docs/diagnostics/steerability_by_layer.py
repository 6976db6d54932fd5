"""The paper's per-layer steerability picture on the toy CLIP (arXiv 2504.08729, section 3; docs/toy_results.md).

Per layer L: fraction of steerable SAE features, neurons and random directions (same norm as the SAE's decoder
rows) on the trained toy CLIP and on a randomly initialised image tower, each seed with its own SAE, random tower,
random directions and feature sample; 95% intervals over seeds and features (`analysis.steerability.compare`).
The readout, strength and threshold are `sae-clip steerability`'s defaults (model's logit scale, relative 5.41,
S > 0.10, the toy's 518-word vocabulary). SAEs: one folder per seed with one SAE per hook, from

    for s in 0 1 2; do sae-clip train --preset topk --model toy --images toy --max-images 200 --seed $s \\
      --hook blocks.0.hook_resid_post,...,blocks.5.hook_resid_post --device cpu --out out/saes_s$s; done
    python docs/diagnostics/steerability_by_layer.py --saes 'out/saes_s{seed}' --out out/steerability_layers

Writes per_feature.csv, summary.csv, orderings.csv, summary.md and steerability_by_layer.png under --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from sae_lens import SAE

from sae_clip_plugin import HookedViT
from sae_clip_plugin.analysis.steerability.compare import compare_conditions, orderings, summarise_conditions
from sae_clip_plugin.analysis.steerability.config import SteerabilityConfig
from sae_clip_plugin.analysis.steerability.run import resolve_steerability_inputs, steerability_pixels
from sae_clip_plugin.analysis.vocabulary import load_vocabulary, text_embeddings
from sae_clip_plugin.tables import markdown_table
from sae_clip_plugin.viz.metrics_figures import save_figure
from sae_clip_plugin.viz.steerability_layers import plot_steerability_by_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saes", default="out/saes_s{seed}", help="SAE folder per seed ({seed} is replaced)")
    parser.add_argument("--out", default="out/steerability_layers")
    parser.add_argument("--layers", default="0,1,2,3,4,5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--features", type=int, default=64, help="features per condition and seed")
    parser.add_argument("--images", type=int, default=48, help="steering images (the toy training stream)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    layers = [int(x) for x in args.layers.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = HookedViT.from_pretrained("toy").eval()
    cfg = SteerabilityConfig(model="toy", images="toy", neurons=True, hook="blocks.0.hook_resid_post",
                             max_images=args.images, seed=0, device="cpu", out=str(out))  # fmt: skip
    pixels = steerability_pixels(cfg, resolve_steerability_inputs(cfg))
    words = load_vocabulary("toy")
    text = text_embeddings(model, words)
    tables, summaries, orders = [], [], []
    for layer in layers:
        start = time.perf_counter()
        hook = f"blocks.{layer}.hook_resid_post"
        saes = [
            SAE.load_from_disk(str(Path(args.saes.format(seed=s)) / hook), device="cpu").eval() for s in seeds
        ]
        table = compare_conditions(model, saes, pixels, hook, seeds=seeds, n_features=args.features,
                                   vocabulary=words, text=text)  # fmt: skip
        table.insert(0, "layer", layer)
        tables.append(table)
        summaries.append(summarise_conditions(table, layer=layer))
        orders.append(orderings(table).assign(layer=layer))
        print(f"layer {layer} done in {time.perf_counter() - start:.0f} s", flush=True)
        print(summaries[-1][["model", "basis", "steerable_fraction", "fraction_lo", "fraction_hi"]].round(3))
    summary, order = pd.concat(summaries, ignore_index=True), pd.concat(orders, ignore_index=True)
    pd.concat(tables, ignore_index=True).to_csv(out / "per_feature.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    order.to_csv(out / "orderings.csv", index=False)
    save_figure(plot_steerability_by_layer(summary), out / "steerability_by_layer.png")
    (out / "summary.md").write_text(_markdown(summary, order, len(pixels), len(words)))
    print(f"wrote {out}")


def _markdown(summary: pd.DataFrame, order: pd.DataFrame, n_images: int, n_words: int) -> str:
    def cell(row: pd.Series) -> str:
        return (
            f"{100 * row.steerable_fraction:.1f} [{100 * row.fraction_lo:.1f}, {100 * row.fraction_hi:.1f}]"
        )

    conditions = list(dict.fromkeys(zip(summary["model"], summary["basis"], strict=True)))
    rows = []
    for layer, group in summary.groupby("layer"):
        by = {(r.model, r.basis): r for r in group.itertuples()}
        rows.append([f"L{layer}", *[cell(pd.Series(by[c]._asdict())) if c in by else "" for c in conditions]])
    head = ["layer", *[f"{b} ({m})" for m, b in conditions]]
    diffs = [[f"L{r.layer}", r.a, r.b, f"{100 * r.difference:+.1f} [{100 * r.lo:+.1f}, {100 * r.hi:+.1f}]",
              "yes" if r.holds else "no"] for r in order.itertuples()]  # fmt: skip
    return (
        f"% steerable (S > 0.10), 95% interval over seeds and features; {n_images} images, {n_words} words\n\n"
        + markdown_table(head, rows)
        + "\n\nDifferences (percentage points; holds: the interval is above 0)\n\n"
        + markdown_table(["layer", "a", "b", "a - b", "holds"], diffs)
        + "\n"
    )


if __name__ == "__main__":
    main()
