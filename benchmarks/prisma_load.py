"""Our restricted checkpoint reader vs torch.load(weights_only=True) on the same released-size SAE files (CPU).

Two files of the released sizes: a Prisma vanilla x64 SAE (49,152 x 768, `{"cfg", "state_dict"}` with the
module's state dict, as ViT-Prisma's trainer saves it) and a CLIP-Scope-shaped one (65,536 x 1,024,
`{"model_state_dict": {pre_b, enc, dec}, ...}`). Prints, measured in this run, the ratio
restricted_torch_load / torch.load and, for Prisma, the whole load_prisma_sae (read + convert to a sae_lens
SAE) / torch.load. Goal (issue "every public vision SAE"): at most 1.5.

    python benchmarks/prisma_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from timing import median_seconds  # benchmarks/timing.py (scripts run from their folder)

from sae_clip_plugin.pretrained import load_prisma_sae
from sae_clip_plugin.pretrained.unpickler import restricted_torch_load


class _PrismaLikeSAE(torch.nn.Module):
    """Parameters named and shaped as Prisma's StandardSparseAutoencoder, for a real module state dict."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        super().__init__()
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae))
        self.b_enc = torch.nn.Parameter(torch.randn(d_sae))
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in))
        self.b_dec = torch.nn.Parameter(torch.randn(d_in))


def _prisma_file(folder: Path) -> Path:
    path = folder / "prisma" / "n_images_2600058.pt"
    path.parent.mkdir()
    cfg = {"d_in": 768, "d_sae": 49152, "activation_fn_str": "relu", "normalize_activations": "layer_norm",
           "hook_point_layer": 9, "layer_subtype": "hook_resid_post",
           "model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"}  # fmt: skip
    torch.save({"cfg": cfg, "state_dict": _PrismaLikeSAE(768, 49152).state_dict()}, path)
    return path


def _clipscope_file(folder: Path) -> Path:
    path = folder / "22_resid" / "1200013184.pt"
    path.parent.mkdir()
    state = {"pre_b": torch.randn(1024), "enc": torch.randn(1024, 65536), "dec": torch.randn(65536, 1024)}
    torch.save({"model_state_dict": state, "token_count": 1200013184, "dead_latents": torch.zeros(65536),
                "n_iter": 36480, "log_id": "22_resid", "d_in": 1024, "n_features": 65536, "k": 32}, path)  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed loads of each reader (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("Prisma 49,152 x 768", _prisma_file(Path(tmp))),
                           ("CLIP-Scope 65,536 x 1,024", _clipscope_file(Path(tmp)))):  # fmt: skip
            size = path.stat().st_size / 2**20
            torch_s = median_seconds(lambda p=path: torch.load(p, weights_only=True), args.repeats)
            ours = median_seconds(lambda p=path: restricted_torch_load(p), args.repeats)
            print(f"{name}: file {size:.0f} MiB, torch.load(weights_only=True) {torch_s:.3f} s")
            print(f"  restricted_torch_load {ours:.3f} s, ratio {ours / torch_s:.2f} (goal <= 1.5)")
            if path.parent.name == "prisma":
                full = median_seconds(lambda p=path: load_prisma_sae(p), args.repeats)
                print(
                    f"  load_prisma_sae (read + sae_lens SAE) {full:.3f} s, ratio {full / torch_s:.2f} (goal <= 1.5)"
                )


if __name__ == "__main__":
    main()
