"""Pieces of SAE splicing that do not need the model class: an SAE's token selection, the wrapper, fit checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from sae_lens import SAE
from sae_lens.analysis.hooked_sae_transformer import _disable_hooks, _SAEWrapper

from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.tokens import TOKEN_SELECTIONS, TokenSelection, TokenSpec

if TYPE_CHECKING:  # annotations only: hooked_vit imports open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

# hooks where centring the writing weights subtracts exactly each token's own mean over d_model
_CENTRED_OUTPUT_HOOKS = ("hook_attn_out", "hook_mlp_out")


def trained_on_centred_writes(sae: SAE[Any]) -> bool:
    """The SAE's metadata says its model had center_writing_weights (e.g. Prisma's trainer since 2025-02-18)."""
    processing = sae.cfg.metadata.get("weight_processing") or {}
    return isinstance(processing, dict) and bool(processing.get("center_writing_weights"))


def shift_invariant(sae: SAE[Any]) -> bool:
    """Per-token layer-norm input normalisation removes each token's mean: a per-token shift changes nothing."""
    return sae.cfg.normalize_activations == "layer_norm"


def centres_input(sae: SAE[Any], hook_name: str | None = None) -> bool:
    """Whether the SAE must see its input with each token's mean removed to get what it was trained on.

    True for an SAE trained on a model with centred writing weights, at hook_attn_out / hook_mlp_out (where the
    processed value is exactly x - mean(x), so centring is also a no-op on a processed model), unless its
    input normalisation is layer_norm (which removes the mean anyway).
    """
    name = hook_name or sae.cfg.metadata.get("hook_name") or ""
    return (
        trained_on_centred_writes(sae) and not shift_invariant(sae) and name.endswith(_CENTRED_OUTPUT_HOOKS)
    )


def token_means(x: torch.Tensor) -> torch.Tensor:
    return x.mean(-1, keepdim=True)


def transcoder_output_hook(sae: SAE[Any]) -> str | None:
    """The hook a transcoder writes (metadata.hook_name_out); None for an SAE, which reads and writes one hook."""
    meta = sae.cfg.metadata
    out = meta.get("hook_name_out")
    return out if out and out != meta.hook_name else None


def sae_output(sae: SAE[Any], feature_acts: torch.Tensor, sae_input: torch.Tensor) -> torch.Tensor:
    """What the SAE writes for features `feature_acts` of `sae_input`: what its own forward returns.

    For an SAE, decode(f). A transcoder's forward may also use its input after the features: Prisma's adds the skip
    path and undoes the input normalisation (`PrismaTranscoder.decode_with_input`), sae_lens' SkipTranscoder adds
    x W_skip^T. sae_lens' own splice calls decode only, which drops those terms.
    """
    if hasattr(sae, "decode_with_input"):
        return sae.decode_with_input(feature_acts, sae_input)
    out = sae.decode(feature_acts)
    if transcoder_output_hook(sae) and isinstance(getattr(sae, "W_skip", None), torch.Tensor):
        out = out + sae_input.to(out.dtype) @ sae.W_skip.T
    return out


class ViTSAEWrapper(_SAEWrapper):
    """sae_lens' splice wrapper with a fixed per-position mask (True = pass through untouched).

    The mask is [1, n_tokens], so it broadcasts over any batch; it follows the activations'
    device, and the output keeps the model's dtype whatever the SAE's dtype is. A transcoder's wrapper sits at its
    output hook and reads the input its input hook captured (`capture_input`), as in sae_lens; its output is the
    transcoder's whole forward (`sae_output`).
    """

    def __init__(self, sae: SAE[Any], use_error_term: bool, positions: list[int] | None, n_tokens: int):
        super().__init__(sae, use_error_term=use_error_term)
        self.positions = positions
        self.centre_input = centres_input(sae)
        self.output_hook = transcoder_output_hook(sae)
        self.capture_handle: Any = (
            None  # the hook on the input HookPoint that feeds capture_input (transcoders)
        )
        if positions is not None:
            mask = torch.ones(1, n_tokens, dtype=torch.bool, device=sae.W_dec.device)
            mask[0, positions] = False
            self.set_token_mask(mask)

    def forward(self, original_output: torch.Tensor) -> torch.Tensor:
        mask = self._token_mask
        if mask is not None and mask.device != original_output.device:
            self._token_mask = mask.to(original_output.device)
        if self.output_hook:
            return self._transcode(original_output)
        if self.centre_input:  # the SAE sees the processed activations; the model gets its own back
            shift = token_means(original_output)
            return (super().forward(original_output - shift) + shift).to(original_output.dtype)
        return super().forward(original_output).to(original_output.dtype)

    def _transcode(self, original_output: torch.Tensor) -> torch.Tensor:
        sae_input, self._captured_input = self._captured_input, None
        if sae_input is None:
            raise RuntimeError(
                f"the transcoder at {self.output_hook!r} got no input: its input hook "
                f"{self.sae.cfg.metadata.hook_name!r} did not fire earlier in this forward pass"
            )
        sae_out = sae_output(self.sae, self.sae.encode(sae_input), sae_input)
        mask = self._token_mask
        if mask is not None:
            mask = mask.view(*mask.shape, *[1] * (original_output.dim() - mask.dim()))
        if self.use_error_term:
            with torch.no_grad(), _disable_hooks(self.sae):
                error = original_output - sae_output(self.sae, self.sae.encode(sae_input), sae_input)
                if mask is not None:
                    error = torch.where(mask, torch.zeros_like(error), error)
            sae_out = sae_out + self.hook_sae_error(error)
        if mask is not None:
            sae_out = torch.where(mask, original_output, sae_out)
        return self.hook_sae_output(sae_out).to(original_output.dtype)

    def extra_repr(self) -> str:
        tokens = "all" if self.positions is None else self.positions
        return (
            f"hook={self.sae.cfg.metadata.hook_name!r}, use_error_term={self.use_error_term}, tokens={tokens}"
        )


def check_sae_metadata(sae: SAE[Any], cfg: HookedViTConfig, hook_name: str, check_model: bool) -> None:
    """Refuse an SAE made for another model, geometry or weight processing (sae_lens would only warn)."""
    meta = sae.cfg.metadata
    spec = meta.get("model_name")
    if check_model and spec and cfg.model_spec and spec != cfg.model_spec:
        raise ValueError(
            f"the SAE for {hook_name!r} was trained on model {spec!r} but this model is {cfg.model_spec!r}; "
            f"load the matching model (HookedSAEViT.from_pretrained({spec!r})) or pass check_model=False "
            "to splice it anyway"
        )
    for key in ("image_size", "patch_size", "n_tokens"):
        value = meta.get(key)
        if value is not None and int(value) != getattr(cfg, key):
            raise ValueError(
                f"the SAE for {hook_name!r} was trained with {key}={value} but this model has "
                f"{key}={getattr(cfg, key)}, so token positions do not line up; use a model with the SAE's "
                "geometry (or correct the SAE's metadata if it is wrong)"
            )
    processing = meta.get("weight_processing") or {}
    wanted = processing.get("center_writing_weights") if isinstance(processing, dict) else None
    exact = shift_invariant(sae) or centres_input(sae, hook_name)  # see centres_input
    if check_model and wanted is not None and bool(wanted) != cfg.center_writing_weights and not exact:
        raise ValueError(
            f"the SAE for {hook_name!r} was trained with center_writing_weights={bool(wanted)} "
            f"(normalize_activations={sae.cfg.normalize_activations!r}) but this model has "
            f"center_writing_weights={cfg.center_writing_weights}, which shifts each token's residual by a constant "
            "the SAE is sensitive to; rebuild the model with "
            f"HookedSAEViT.from_pretrained(..., fold_ln={bool(processing.get('fold_ln'))}, "
            f"center_writing_weights={bool(wanted)}) or pass check_model=False"
        )


def check_saes_fit(model: HookedViT, saes: dict[str, SAE[Any]], check_model: bool = True) -> None:
    """Refuse SAEs (hook name -> SAE) made for another model or hook width, as HookedSAEViT.add_sae does."""
    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ValueError(f"the SAE for {hook!r} names a hook this model does not have")
        check_sae_metadata(sae, model.cfg, hook, check_model)


def sae_token_selection(
    sae: SAE[Any], n_tokens: int, hook_name: str, tokens: TokenSpec
) -> str | Sequence[int]:
    """The selection to splice with (argument, else metadata, else all), checked against context_size."""
    meta = sae.cfg.metadata
    meta_sel = meta.get("token_selection")
    if meta_sel is not None and meta_sel not in TOKEN_SELECTIONS:
        raise ValueError(
            f"the SAE for {hook_name!r} has metadata token_selection={meta_sel!r}; expected one of {TOKEN_SELECTIONS} "
            "(fix the metadata or pass tokens=...)"
        )
    context = meta.get("context_size")
    if context is not None:
        if meta_sel is not None and int(context) != TokenSelection(meta_sel).count(n_tokens):
            raise ValueError(
                f"the SAE for {hook_name!r} says context_size={context} with token_selection={meta_sel!r}, but on "
                f"this {n_tokens}-token model {meta_sel!r} means {TokenSelection(meta_sel).count(n_tokens)} tokens per image: "
                "it was trained on another geometry, or its metadata is wrong (fix context_size/token_selection)"
            )
        if meta_sel is None and tokens is None and int(context) != n_tokens:
            fits = [s for s in TOKEN_SELECTIONS if TokenSelection(s).count(n_tokens) == int(context)]
            hint = f"pass tokens={fits[0]!r}" if fits else "check which model it was trained on"
            raise ValueError(
                f"the SAE for {hook_name!r} has context_size={context} and no token_selection, so it would act on "
                f"all {n_tokens} tokens, which does not match; {hint} or set its metadata token_selection"
            )
    return tokens if tokens is not None else meta_sel or "all"


def sae_token_positions(sae: SAE[Any], n_tokens: int) -> list[int]:
    """The token positions the SAE acts on, from its metadata token_selection (CLS is 0)."""
    selection = sae_token_selection(sae, n_tokens, sae.cfg.metadata.hook_name, None)
    return TokenSelection.parse(selection).all_positions(n_tokens)
