"""Do the field's vision-SAE measures tell a trained SAE from its controls on the toy? (docs/toy_results.md,
"Vision-SAE measures against their controls").

For one SAE of the toy CLIP, the trained SAE, random SAEs of the same shape (sae_lens' own init, several seeds) and
the model's neurons at the same hook are scored on the same images (the toy CLIP's training stream, seed 7, which
carries every image's planted attributes):

- monosemanticity top16 (ViSAEBench) and full (Pach et al., arXiv 2504.02821) with the pixels colour histogram as
  second encoder, and top16 with the planted attributes as an oracle second encoder (`attribute_embeddings`);
- localisation (ViSAEBench's Moran's I, its default rules);
- sparse-probing AUC (ViSAEBench) on the shape and on the colour of the images that have one (3 probe splits);
- planted features: per planted shape / colour / background, the best single feature's ROC AUC.

Each row gives the means and the 95% bootstrap interval (over features and seeds; `discrimination.mean_difference`)
of trained - random and trained - neurons. Context rows: how concentrated the residual stream is (variance in its
top principal components) and Moran's I of dense random projections of it. Seeded; not run by the tests.

    sae-clip train --preset topk --model toy --images toy --max-images 200 --hook blocks.3.hook_resid_post --out sae
    python docs/diagnostics/vision_measures_controls.py --sae sae --images 512 --random-seeds 3
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from sae_clip_plugin.analysis.metrics.controls import NeuronBasis, random_sae_like
from sae_clip_plugin.analysis.metrics.discrimination import best_auroc, mean_difference
from sae_clip_plugin.analysis.metrics.localisation import localisation_scores, morans_i
from sae_clip_plugin.analysis.metrics.monosemanticity import monosemanticity_scores
from sae_clip_plugin.analysis.metrics.second_encoder import attribute_embeddings, colour_histogram
from sae_clip_plugin.analysis.metrics.sparse_probing import sparse_probing_auc

SPLITS = (42, 43, 44)


def activations(model: Any, hook: str, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    from sae_clip_plugin.model.hooks import stop_layer

    out = []
    with torch.no_grad():
        for s in range(0, len(pixels), batch):
            _, cache = model.run_with_cache(
                pixels[s : s + batch], names_filter=[hook], stop_at_layer=stop_layer(hook)
            )
            out.append(cache[hook].float())
    return torch.cat(out)


def scores(
    encoder: Any, acts: torch.Tensor, hist: torch.Tensor, attrs: torch.Tensor, metas: list[dict]
) -> dict:
    """Every measure of one encoder: per-feature arrays, or one value per probe split."""
    with torch.no_grad():
        feats = torch.cat([encoder.encode(acts[s : s + 64]) for s in range(0, len(acts), 64)]).float()
    codes = feats.amax(1)  # ViSAEBench's image code: max over tokens
    out: dict[str, Any] = {
        "MS top16, pixels": monosemanticity_scores(codes, hist, "top16").numpy(),
        "MS top16, planted attributes": monosemanticity_scores(codes, attrs, "top16").numpy(),
        "MS full, pixels": monosemanticity_scores(codes, hist, "full").numpy(),
        "localisation (Moran's I)": localisation_scores(feats[:, 1:]).numpy(),
    }
    for field in ("shape", "colour"):
        keep = [i for i, m in enumerate(metas) if m[field] is not None]
        values = sorted({metas[i][field] for i in keep})
        labels = torch.tensor([values.index(metas[i][field]) for i in keep])
        out[f"sparse-probing AUC, {field}"] = np.array(
            [sparse_probing_auc(codes[keep], labels, seed=s)[0] for s in SPLITS]
        )
    c = codes.numpy()
    planted = {f: best_auroc(c, [m[f] for m in metas]) for f in ("shape", "colour", "background")}
    for field, by_value in planted.items():
        out[f"best-feature AUROC, {field}"] = np.array(list(by_value.values()))
    out["live features"] = np.array([float((codes.amax(0) > 0).sum())])
    return out


def fmt(d: Any) -> str:
    mark = "**" if d.lo > 0 or d.hi < 0 else ""
    return f"{mark}{d.diff:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]{mark}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True, help="a sae_lens SAE folder trained on the toy CLIP")
    parser.add_argument("--images", type=int, default=512, help="training-stream images to score on")
    parser.add_argument("--image-seed", type=int, default=7, help="seed of the training stream")
    parser.add_argument("--random-seeds", type=int, default=3, help="random SAEs of the same shape")
    args = parser.parse_args()
    torch.manual_seed(0)

    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.pretrained import load_sae
    from sae_clip_plugin.toy.datasets import train_dataset

    model = HookedViT.from_pretrained("toy").eval()
    sae = load_sae(args.sae, "cpu")
    hook = sae.cfg.metadata.hook_name
    data = train_dataset(args.images, seed=args.image_seed)
    metas = [data.meta(i) for i in range(len(data))]
    pixels = torch.stack([model.preprocess(data[i][0]) for i in range(len(data))])
    acts = activations(model, hook, pixels)
    hist = colour_histogram(pixels, model.cfg.preprocess)
    attrs = attribute_embeddings(metas)

    x = acts.reshape(-1, acts.shape[-1]).double()
    x = x - x.mean(0)
    ev = torch.linalg.eigvalsh(x.T @ x / len(x)).flip(0)
    share = [float(ev[:k].sum() / ev.sum()) for k in (1, 5, 10)]
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(acts.shape[-1], 256, generator=gen, dtype=torch.float64)
    patches = acts[:, 1:].double() - acts[:, 1:].double().mean((0, 1))
    dense_i = float(morans_i(patches @ (dirs / dirs.norm(dim=0)))[0].mean())
    print(f"# {args.sae} at {hook}; {args.images} training-stream images (seed {args.image_seed})")
    print(f"residual stream: variance in the top 1 / 5 / 10 principal components {share[0]:.2f} / {share[1]:.2f} / "
          f"{share[2]:.2f} of {acts.shape[-1]}; participation ratio {float(ev.sum() ** 2 / (ev**2).sum()):.1f}")  # fmt: skip
    print(f"Moran's I of 256 dense random projections of the patch residual: {dense_i:.3f}")
    chance = {name: float(((u := e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ u.T).fill_diagonal_(0).sum()
                          / (len(u) * (len(u) - 1))) for name, e in (("pixels", hist), ("planted attributes", attrs))}  # fmt: skip
    print("mean pairwise cosine over all images (MS of a feature with random top images): "
          + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))  # fmt: skip

    trained = scores(sae, acts, hist, attrs, metas)
    randoms = [scores(random_sae_like(sae, s), acts, hist, attrs, metas) for s in range(args.random_seeds)]
    neurons = scores(NeuronBasis(acts.shape[-1]), acts, hist, attrs, metas)
    print()
    print("| measure | trained | random SAE | neurons | trained - random [95%] | trained - neurons [95%] |")
    print("|---|---|---|---|---|---|")
    for key in trained:
        vs_random = mean_difference([trained[key]], [r[key] for r in randoms])
        vs_neurons = mean_difference([trained[key]], [neurons[key]])
        print(f"| {key} | {vs_random.a:.3f} | {vs_random.b:.3f} | {vs_neurons.b:.3f} | {fmt(vs_random)} | "
              f"{fmt(vs_neurons)} |")  # fmt: skip


if __name__ == "__main__":
    main()
