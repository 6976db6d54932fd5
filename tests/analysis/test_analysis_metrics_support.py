"""Builders shared by the metrics tests (no tests here): a tiny CLIP and SAEs with known weights.

The SAEs are chosen so their outputs can be written down by hand from the hook's activations x:
- identity: W_enc = [I, -I], W_dec = [I; -I] -> f = [relu(x), relu(-x)], x_hat = x;
- scaled identity (W_dec * c) -> x_hat = c x;
- top-k identity -> x_hat = x with all but its k largest |x_i| zeroed, L0 = k;
- constant: W_enc = 0, b_enc = -1, b_dec = v -> no feature fires, x_hat = v.
"""

from __future__ import annotations

import numpy as np
import open_clip
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
from tests.model.clips import tiny_open_clip

SPEC = "open_clip:metrics-test-tiny"
N_TOKENS, D_MODEL, SIDE = 17, 64, 4  # 64 px, patch 16: CLS + 4x4 patches
CONTEXT = {"all": 17, "cls": 1, "patches": 16}


def tiny_model(seed: int = 0) -> HookedSAEViT:
    clip = tiny_open_clip(layers=2, seed=seed)
    return HookedSAEViT.from_open_clip(
        clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"), model_spec=SPEC
    ).eval()


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def metadata(hook: str, tokens: str = "all") -> SAEMetadata:
    return SAEMetadata(hook_name=hook, token_selection=tokens, context_size=CONTEXT[tokens], model_name=SPEC)


@torch.no_grad()
def identity_sae(
    hook: str = "blocks.0.hook_resid_post",
    tokens: str = "all",
    scale: float = 1.0,
    extra: bool = False,
    d: int = D_MODEL,
    normalize: str = "none",
) -> SAE:
    """x_hat = scale * x. With extra=True two more features: one always on (density 1), one never (dead)."""
    n_extra = 2 if extra else 0
    cfg = StandardSAEConfig(
        d_in=d, d_sae=2 * d + n_extra, normalize_activations=normalize, metadata=metadata(hook, tokens)
    )
    sae = StandardSAE(cfg)
    eye = torch.eye(d)
    sae.W_enc.zero_()
    sae.W_enc[:, : 2 * d] = torch.cat([eye, -eye], 1)
    sae.W_dec.zero_()
    sae.W_dec[: 2 * d] = scale * torch.cat([eye, -eye], 0)
    sae.b_enc.zero_()
    sae.b_dec.zero_()
    if extra:
        sae.b_enc[2 * d] = 1.0  # fires on every token, decodes to nothing
        sae.b_enc[2 * d + 1] = -1.0  # never fires
    return sae.eval()


@torch.no_grad()
def topk_identity_sae(k: int, hook: str = "blocks.1.hook_resid_post", d: int = D_MODEL) -> SAE:
    sae = TopKSAE(TopKSAEConfig(k=k, d_in=d, d_sae=2 * d, metadata=metadata(hook)))
    eye = torch.eye(d)
    sae.W_enc.copy_(torch.cat([eye, -eye], 1))
    sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    sae.b_enc.zero_()
    sae.b_dec.zero_()
    return sae.eval()


@torch.no_grad()
def constant_sae(value: torch.Tensor, hook: str, tokens: str) -> SAE:
    """No feature ever fires; the reconstruction is `value` (b_dec) at every token."""
    d = value.shape[-1]
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=8, metadata=metadata(hook, tokens)))
    sae.W_enc.zero_()
    sae.W_dec.zero_()
    sae.b_enc.fill_(-1.0)
    sae.b_dec.copy_(value)
    return sae.eval()


@torch.no_grad()
def hook_acts(model: HookedSAEViT, pixels: torch.Tensor, hook: str) -> np.ndarray:
    """Raw activations at `hook` [images, tokens, d] in float64, from a plain cached forward pass."""
    _, cache = model.run_with_cache(pixels, names_filter=[hook])
    return cache[hook].double().numpy()


def unit_columns(d: int, c: int, seed: int = 3) -> torch.Tensor:
    w = torch.randn(d, c, generator=torch.Generator().manual_seed(seed))
    return w / w.norm(dim=0, keepdim=True)
