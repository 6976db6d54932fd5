"""How far can suppressing anything at one layer undo the toy typographic attack? (docs/toy_results.md)

For every layer L of the toy CLIP, on the `toy-typographic` task (word beside the shape):
- SAE patch: the attacked image's SAE reconstruction at L replaced by its clean twin's, error term kept.
  High = the SAE's features carry the attack (an upper bound no fixed feature set can beat).
- CLS erasure: the top-r directions of (attacked - clean) at the CLS token, fitted on the selection split,
  projected out of CLS at L on the evaluation split (clean and attacked images alike). If clean accuracy falls
  as much as attacked accuracy rises, the written word and the drawn shape share directions: no suppression
  of "text" features at L can raise attacked accuracy without costing clean accuracy.

    python docs/diagnostics/typographic_ceiling.py out/saes/toy_topk
"""

from __future__ import annotations

import sys

import torch
from sae_lens import SAE

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.analysis.disentangle.tasks import build_task
from sae_clip_plugin.analysis.zero_shot import zero_shot_logits


@torch.no_grad()
def main(sae_root: str, n_pairs: int = 300, ranks: tuple[int, ...] = (6, 12)) -> None:
    model = HookedSAEViT.from_pretrained("toy").eval()
    task = build_task(model, "toy-typographic", n_select=n_pairs, n_eval=n_pairs)
    weights = model.zero_shot_weights(task.classnames, task.templates).float()
    scale = float(model.logit_scale)

    def twins(split):
        att, cln = split.twins()
        return split.pixels[att], split.pixels[cln], split.labels[att]

    sel_att, sel_cln, _ = twins(task.select)
    att, cln, labels = twins(task.evaluate)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    # one pass per image set caches every layer's residual stream
    _, clean_cache = model.run_with_cache(cln, names_filter=names)
    _, sel_att_cache = model.run_with_cache(sel_att, names_filter=names)
    _, sel_cln_cache = model.run_with_cache(sel_cln, names_filter=names)

    def accuracy(pixels: torch.Tensor, hooks=()) -> float:
        emb = model.run_with_hooks(pixels, fwd_hooks=list(hooks))
        return (zero_shot_logits(emb, weights, scale).argmax(-1) == labels).float().mean().item()

    print(f"no intervention: clean {accuracy(cln):.3f}, attacked {accuracy(att):.3f}")
    for layer, name in enumerate(names):
        sae = SAE.load_from_disk(f"{sae_root}/{name}").eval()
        clean_recon = sae.decode(sae.encode(clean_cache[name]))

        def patch_fn(x, hook, sae=sae, clean_recon=clean_recon):
            return x - sae.decode(sae.encode(x)) + clean_recon

        patch = (name, patch_fn)
        line = [f"L{layer}: SAE patch attacked {accuracy(att, [patch]):.3f}"]
        delta = sel_att_cache[name][:, 0] - sel_cln_cache[name][:, 0]
        centre = sel_cln_cache[name][:, 0].mean(0)
        for r in ranks:
            basis = torch.linalg.svd(delta, full_matrices=False).Vh[:r].T  # [d_model, r]

            def erase(x, hook, basis=basis, centre=centre):
                x = x.clone()
                x[:, 0] -= ((x[:, 0] - centre) @ basis) @ basis.T
                return x

            line.append(f"CLS erasure r={r} clean/attacked {accuracy(cln, [(name, erase)]):.3f}/"
                        f"{accuracy(att, [(name, erase)]):.3f}")  # fmt: skip
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/saes/toy_topk")
