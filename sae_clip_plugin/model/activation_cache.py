"""transformer_lens' ActivationCache, told where CLIP's residual stream starts and ends.

Two facts differ from a decoder-only language model, and everything else is transformer_lens' own code:

- CLIP's residual stream starts *after* `ln_pre`: block 0 reads `ln_pre(hook_embed + hook_pos_embed)`,
  not the sum. In decompositions (`decompose_resid`, `get_full_resid_decomposition`) the component
  labelled "embed" is therefore `blocks.0.hook_resid_pre`, the stream's real start, and no separate
  "pos_embed" component is returned; so the components sum to the residual stream exactly, as they do
  in transformer_lens. (A model without `ln_pre` keeps transformer_lens' embed + pos_embed pair.)
- The final norm is `ln_post`: `cache["ln_final.hook_scale"]` (and the `"scale"` shorthand,
  `apply_ln=True` at the last layer) read `ln_post.hook_scale`. Where `ln_post` acts on the pooled
  token only (Hugging Face CLIP, open_clip's `final_ln_after_pool`), the per-token scale is the one
  `ln_post` has on each token of the final residual stream; at the CLS token that is the cached value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.utilities import get_act_name

FINAL_NORM_ALIAS = ("ln_final.", "ln_post.")
STREAM_START = "blocks.0.hook_resid_pre"


class VisionActivationCache(ActivationCache):
    """What `HookedViT.run_with_cache` returns: an ActivationCache with CLIP's stream start and final norm."""

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, str) and key not in self.cache_dict:
            name = key if "." in key else get_act_name(key)
            if name.startswith(FINAL_NORM_ALIAS[0]):
                return self._final_norm(name[len(FINAL_NORM_ALIAS[0]) :])
        return super().__getitem__(key)

    def _final_norm(self, leaf: str) -> torch.Tensor:
        cached = self.cache_dict[FINAL_NORM_ALIAS[1] + leaf]
        cfg = self.model.cfg
        pooled_only = cfg.final_ln_after_pool and cfg.pool_type != "none"
        if leaf != "hook_scale" or not pooled_only:
            return cached
        # ln_post ran on the pooled token only: give the scale it has on every token of the final stream
        resid = self.cache_dict[f"blocks.{cfg.n_layers - 1}.hook_resid_post"].to(torch.float64)
        centred = resid - resid.mean(dim=-1, keepdim=True)
        return (centred.pow(2).mean(dim=-1, keepdim=True) + cfg.eps).sqrt().to(cached.dtype)

    @contextmanager
    def _stream_start_as_embed(self) -> Iterator[None]:
        """Within the block, "hook_embed" is the stream's start and there is no pos_embed component."""
        if getattr(self.model, "ln_pre", None) is None or STREAM_START not in self.cache_dict:
            yield
            return
        embed, flags = self.cache_dict.get("hook_embed"), (self.has_embed, self.has_pos_embed)
        self.cache_dict["hook_embed"] = self.cache_dict[STREAM_START]
        self.has_embed, self.has_pos_embed = True, False
        try:
            yield
        finally:  # only hook_embed is put back: what the analysis cached meanwhile (head results) stays
            if embed is None:
                del self.cache_dict["hook_embed"]
            else:
                self.cache_dict["hook_embed"] = embed
            self.has_embed, self.has_pos_embed = flags

    def decompose_resid(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        """transformer_lens' decompose_resid; "embed" is the stream after ln_pre (see the module docstring)."""
        with self._stream_start_as_embed():
            return super().decompose_resid(*args, **kwargs)

    def get_full_resid_decomposition(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        """transformer_lens' get_full_resid_decomposition; "embed" is the stream after ln_pre."""
        with self._stream_start_as_embed():
            return super().get_full_resid_decomposition(*args, **kwargs)
