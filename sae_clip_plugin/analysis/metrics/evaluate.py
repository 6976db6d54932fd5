"""What a vision researcher reads off an SAE: reconstruction, sparsity by token type, downstream zero-shot.

    from sae_clip_plugin.analysis.metrics.evaluate import evaluate_sae, evaluate_saes
    row = evaluate_sae(model, sae, images, classnames=names, templates=["a photo of a {}."])
    df = evaluate_saes(model, {"L3": sae3, "L5": "out/saes/L5"}, images, classnames=names)

Everything is streamed over the image source and summed in float64 (definitions in
`metrics_stats`). The SAE is evaluated on the token positions its metadata `token_selection`
names (as `HookedSAEViT` splices it); CLS and patch tokens are reported separately where the SAE
acts on them, NaN where it does not. Downstream numbers come from five forward passes per batch:
clean, SAE spliced without and with its error term, and the hook zero- and mean-ablated at the
SAE's positions (the mean is the per-position mean over the same images).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sae_lens import SAE
from sae_lens.constants import RUNNER_CFG_FILENAME
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.metrics.measures import ARRAY_KEYS as MEASURE_ARRAY_KEYS
from sae_clip_plugin.analysis.metrics.measures import MeasureSettings, VisionMeasureStats
from sae_clip_plugin.analysis.metrics.stats import (
    GROUPS,
    DownstreamStats,
    ReconstructionStats,
    SparsityStats,
    token_groups,
)
from sae_clip_plugin.analysis.zero_shot import (
    ImageBatch,
    class_weights,
    dataset_classnames,
    iter_image_batches,
    zero_shot_logits,
)
from sae_clip_plugin.model.device import model_device
from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
from sae_clip_plugin.model.hooked_vit import HookedViT
from sae_clip_plugin.model.hooks import hook_layer, hook_type, stop_layer
from sae_clip_plugin.model.sae_splice import sae_token_positions
from sae_clip_plugin.pretrained.loading import load_sae

ARRAY_KEYS = ("l0_by_position", "l0_patch_grid", "feature_density", *MEASURE_ARRAY_KEYS)
SAESpec = SAE[Any] | str | os.PathLike


# ------------------------------------------------------------------------------------------------
# small helpers


def as_sae_model(model: HookedViT) -> HookedSAEViT:
    """A HookedSAEViT for `model` (a HookedViT is copied into one; its weights are shared by value)."""
    if isinstance(model, HookedSAEViT):
        return model
    if isinstance(model, HookedViT):
        return HookedSAEViT.from_hooked_vit(model)
    raise TypeError(
        f"expected a HookedSAEViT (or HookedViT), got {type(model).__name__}; "
        "build one with HookedSAEViT.from_pretrained(spec)"
    )


def describe_sae(sae: SAE[Any]) -> dict[str, Any]:
    """Columns that identify an SAE in a sweep table."""
    meta, cfg = sae.cfg.metadata, sae.cfg
    hook = meta.hook_name or ""
    return {
        "hook_name": hook,
        "layer": hook_layer(hook),
        "hook_type": hook_type(hook),
        "token_selection": meta.get("token_selection") or "all",
        "architecture": cfg.architecture(),
        "d_in": int(cfg.d_in),
        "d_sae": int(cfg.d_sae),
        "k": getattr(cfg, "k", None),
        "l1_coefficient": meta.get("l1_coefficient"),
    }


def scalar_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result dict without its array entries (what goes into a CSV row)."""
    return {k: v for k, v in row.items() if k not in ARRAY_KEYS}


def _check_reiterable(images: Any) -> None:
    if isinstance(images, (torch.Tensor, tuple)):
        return
    if iter(images) is images:
        raise TypeError(
            "the image source is a one-shot iterator, but the metrics read it more than once (mean for "
            "mean-ablation, several SAEs); pass a tensor, a Dataset or a DataLoader, or pass ablation_mean="
        )


def _batches(
    model: HookedViT, images: Any, batch_size: int, max_images: int | None, progress: bool, desc: str
):
    total = None
    try:
        first = images[0] if isinstance(images, tuple) else images
        if isinstance(first, DataLoader):  # batches are the loader's own
            n, batch_size = len(first.dataset), first.batch_size or 1
        else:
            n = first.shape[0] if isinstance(first, torch.Tensor) else len(first)
        n = min(n, max_images) if max_images is not None else n
        total = math.ceil(n / batch_size)
    except TypeError:
        pass
    batches = iter_image_batches(images, batch_size, transform=model.preprocess, max_images=max_images)
    return tqdm(batches, desc=desc, total=total, disable=not progress, leave=False)


# ------------------------------------------------------------------------------------------------
# the per-hook mean used for mean-ablation


@torch.no_grad()
def hook_mean(
    model: HookedViT,
    hook_name: str,
    images: Any,
    batch_size: int = 32,
    max_images: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Per-position mean activation at `hook_name` over the images ([n_tokens, ...], float64, CPU)."""
    total, n = None, 0
    stop = stop_layer(hook_name)
    for batch in _batches(model, images, batch_size, max_images, progress, f"mean of {hook_name}"):
        _, cache = model.run_with_cache(
            batch.pixels.to(model_device(model)), names_filter=[hook_name], stop_at_layer=stop
        )
        act = cache[hook_name].double()
        total = act.sum(0).cpu() if total is None else total + act.sum(0).cpu()
        n += act.shape[0]
    if total is None:
        raise ValueError("the image source yielded no images")
    return total / n


# ------------------------------------------------------------------------------------------------
# evaluation of one SAE


def _replace_at(positions: torch.Tensor | None, value: torch.Tensor | float):
    """A hook that overwrites the activation at `positions` (all when None) with `value`."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        v = value if isinstance(value, float) else value.to(act.device, act.dtype)
        if positions is None:
            out[:] = v
        else:
            out[:, positions] = v if isinstance(v, float) else v[positions]
        return out

    return hook


def _batch_key(pixels: torch.Tensor) -> tuple[Any, ...]:
    """A cheap fingerprint of a batch, so cached clean embeddings are only reused for the same images."""
    flat = pixels.detach().double().reshape(pixels.shape[0], -1)
    return (tuple(pixels.shape), round(float(flat.sum()), 4), round(float(flat[:, ::97].abs().sum()), 4))


@dataclass
class _Classifier:
    """The zero-shot classifier the downstream metrics score with; any part may be None (then NaN)."""

    weights: torch.Tensor | None
    scale: float | None
    labels: torch.Tensor | None


def _classifier(
    model: HookedSAEViT,
    images: Any,
    classnames: Sequence[str] | None,
    templates: Sequence[str] | None,
    weights: torch.Tensor | None,
    logit_scale: float | None,
    labels: torch.Tensor | Sequence[int] | None,
    downstream: bool,
) -> _Classifier:
    """Class weights from the names (the data set's by default) unless given; the model's logit scale
    unless given; labels as one flat long tensor."""
    scale = logit_scale
    if downstream and weights is None:
        names = list(classnames) if classnames else dataset_classnames(images)
        if names and model.text is not None:
            weights = class_weights(model, names, templates)
    if weights is not None and scale is None:
        scale = float(model.logit_scale)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    return _Classifier(weights, scale, labels)


class _TokenStats:
    """Reconstruction by token group and sparsity, over the token positions the SAE acts on."""

    def __init__(self, sae: SAE[Any], n_tokens: int) -> None:
        self.n_tokens = n_tokens
        self.positions = sae_token_positions(sae, n_tokens)
        self.groups = token_groups(self.positions)
        # the ablation hooks' positions: None when the SAE acts on every token
        self.pos_index = None if len(self.positions) == n_tokens else torch.tensor(self.positions)
        self.recon = {g: ReconstructionStats(sae.cfg.d_in) for g in self.groups}
        self.sparsity = SparsityStats(self.positions, self.n_tokens, sae.cfg.d_sae)

    def add(self, x: torch.Tensor, feats: torch.Tensor, x_hat: torch.Tensor) -> None:
        """One batch of the hook's input, the SAE's features and its output, at all token positions."""
        b, positions = x.shape[0], self.positions
        x = x.reshape(b, self.n_tokens, -1)[:, positions]
        x_hat = x_hat.reshape(b, self.n_tokens, -1)[:, positions]
        for g, idx in self.groups.items():
            self.recon[g].add(x[:, idx].reshape(-1, x.shape[-1]), x_hat[:, idx].reshape(-1, x.shape[-1]))
        self.sparsity.add(feats[:, positions])

    def result(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(reconstruction metrics of every group, NaN for a group the SAE does not act on; sparsity)."""
        recon: dict[str, Any] = {}
        for g in GROUPS:
            recon.update(self.recon[g].result(g) if g in self.recon else ReconstructionStats(1).result(g))
        return recon, self.sparsity.result()


def _spliced_pass(
    model: HookedSAEViT,
    sae: SAE[Any],
    pixels: torch.Tensor,
    check_model: bool,
    downstream: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The forward pass with the SAE spliced in: (its output, (hook input, SAE features, SAE output)).

    Without downstream metrics it stops at the SAE's layer (the output is then not an embedding)."""
    hook = sae.cfg.metadata.hook_name
    n_tokens = model.cfg.n_tokens
    cache_names = [f"{hook}.hook_sae_input", f"{hook}.hook_sae_acts_post", f"{hook}.hook_sae_output"]
    spliced, cache = model.run_with_cache_with_saes(
        pixels,
        saes=[sae],
        use_error_term=False,
        check_model=check_model,
        names_filter=cache_names,
        stop_at_layer=None if downstream else stop_layer(hook),
    )
    x, feats, x_hat = (cache[n] for n in cache_names)
    if x.ndim < 3 or x.shape[1] != n_tokens:
        raise ValueError(
            f"hook {hook!r} has activations of shape {tuple(x.shape)}, without a token axis of "
            f"{n_tokens}; token metrics need a per-token hook (resid, mlp_out, attn_out, ...)"
        )
    return spliced, (x, feats, x_hat)


def _clean_embeds(
    model: HookedSAEViT,
    pixels: torch.Tensor,
    index: int,
    clean_cache: dict[int, Any] | None,
    device: torch.device,
) -> torch.Tensor:
    """The clean model's embeddings of batch `index`, from `clean_cache` when it holds this very batch."""
    key = _batch_key(pixels)
    if clean_cache is not None and clean_cache.get(index, (None,))[0] == key:
        return clean_cache[index][1].to(device)
    clean = model(pixels)
    if clean_cache is not None:
        clean_cache[index] = (key, clean.cpu())
    return clean


def _variant_embeds(
    model: HookedSAEViT,
    sae: SAE[Any],
    pixels: torch.Tensor,
    check_model: bool,
    pos_index: torch.Tensor | None,
    ablation_mean: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Embeddings with the SAE spliced in with its error term, and with the hook zero- and mean-ablated."""
    hook = sae.cfg.metadata.hook_name
    return {
        "spliced_err": model.run_with_saes(pixels, saes=[sae], use_error_term=True, check_model=check_model),
        "zero_abl": model.run_with_hooks(pixels, fwd_hooks=[(hook, _replace_at(pos_index, 0.0))]),
        "mean_abl": model.run_with_hooks(pixels, fwd_hooks=[(hook, _replace_at(pos_index, ablation_mean))]),
    }


def _logits(embeds: Mapping[str, torch.Tensor], classifier: _Classifier) -> dict[str, torch.Tensor] | None:
    """Zero-shot logits of each variant's embeddings (float64); None without class weights."""
    if classifier.weights is None:
        return None
    weights = classifier.weights.double()
    return {k: zero_shot_logits(e.double(), weights, classifier.scale) for k, e in embeds.items()}


@torch.no_grad()
def evaluate_sae(
    model: HookedViT,
    sae: SAE[Any],
    images: Any,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    weights: torch.Tensor | None = None,
    logit_scale: float | None = None,
    downstream: bool = True,
    ablation_mean: torch.Tensor | None = None,
    batch_size: int = 32,
    max_images: int | None = None,
    check_model: bool = True,
    clean_cache: dict[int, Any] | None = None,
    progress: bool = False,
    name: str | None = None,
    measures: MeasureSettings | None = None,
) -> dict[str, Any]:
    """All metrics of `sae` spliced into `model` over `images`, as one flat dict.

    images: a pixel tensor, a torch Dataset or a DataLoader (see `zero_shot.iter_image_batches`);
        labels come from the source unless `labels` (one per image, in order) is given.
    classnames / templates: the zero-shot classifier (class names default to the data set's
        `classnames`); or pass `weights` [d_embed, n_classes]. Without any, or without labels,
        top-1/CE are NaN (KL and embedding cosine need only the classifier).
    downstream: False skips the four extra forward passes (and stops at the SAE's layer).
    ablation_mean: the per-position mean at the hook for mean-ablation (default: measured on `images`).
    clean_cache: pass the same dict to several calls on the same images to run the clean model once.
    measures: the field's vision-SAE measures to add (`measures.MeasureSettings`): `ms_<variant>` (Pach et al.,
        arXiv 2504.02821), `localisation` (Moran's I), `sparse_probing_auc` and `probe_acc_k<k>` (ViSAEBench), with
        the per-feature arrays `ms_by_feature`, `moran_by_feature`, `f_by_feature`.

    Keys: reconstruction `{explained_variance,fvu,mse,cos_sim,l2_ratio}_{all,cls,patches}`; sparsity
    `l0_*`, `l1_*`, `dead_fraction`, `dense_fraction_10/50`, `dead_window_images/tokens`; downstream
    `top1_*`, `ce_*` for clean/spliced/spliced_err/zero_abl/mean_abl, `{ce,top1}_recovered_{zero,mean}`,
    `embed_cos_*`, `kl_*` (KL(clean || variant)); arrays `l0_by_position` [n_tokens] (NaN where the
    SAE does not act), `l0_patch_grid` [side, side], `feature_density` [d_sae].
    """
    model = as_sae_model(model)
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise ValueError("the SAE has no metadata.hook_name; set sae.cfg.metadata.hook_name")
    stats = _TokenStats(sae, model.cfg.n_tokens)
    _check_reiterable(images)
    clf = _classifier(model, images, classnames, templates, weights, logit_scale, labels, downstream)
    if downstream and ablation_mean is None:
        ablation_mean = hook_mean(model, hook, images, batch_size, max_images, progress)

    down = DownstreamStats()
    device = model_device(model)
    vision = None
    if measures is not None:
        vision = VisionMeasureStats(sae.cfg.d_sae, stats.positions, model.cfg.n_tokens, measures)
    offset = 0
    for index, batch in enumerate(_batches(model, images, batch_size, max_images, progress, f"eval {hook}")):
        pixels = batch.pixels.to(device)
        spliced, acts = _spliced_pass(model, sae, pixels, check_model, downstream)
        stats.add(*acts)
        if vision is not None:
            vision.add(acts[1], pixels, _labels_for(batch, clf.labels, offset))
        if downstream:
            embeds = {"spliced": spliced, "clean": _clean_embeds(model, pixels, index, clean_cache, device)}
            embeds.update(_variant_embeds(model, sae, pixels, check_model, stats.pos_index, ablation_mean))
            batch_labels = _labels_for(batch, clf.labels, offset)
            down.add(embeds, _logits(embeds, clf), batch_labels)
        offset += pixels.shape[0]
    if offset == 0:
        raise ValueError("the image source yielded no images")
    if clf.labels is not None and len(clf.labels) < offset:
        raise ValueError(f"got {len(clf.labels)} labels for {offset} images; pass one label per image")

    recon, arrays = stats.result()
    out: dict[str, Any] = {"name": name or hook, **describe_sae(sae), "n_images": offset, **recon}
    out.update({k: v for k, v in arrays.items() if k not in ARRAY_KEYS})
    out["n_classes"] = int(clf.weights.shape[1]) if clf.weights is not None else None
    out["logit_scale"] = clf.scale
    out.update(down.result() if downstream else {})
    out.update(vision.result() if vision is not None else {})
    out.update({k: arrays[k] for k in ARRAY_KEYS if k in arrays})
    return out


def _labels_for(batch: ImageBatch, labels: torch.Tensor | None, offset: int) -> torch.Tensor | None:
    if labels is not None:
        part = labels[offset : offset + len(batch)]
        if len(part) != len(batch):
            raise ValueError(f"got {len(labels)} labels, fewer than the images; pass one label per image")
        return part
    return batch.labels


# ------------------------------------------------------------------------------------------------
# sweeps


def _load(spec: SAESpec, device: torch.device) -> SAE[Any]:
    return spec if isinstance(spec, SAE) else load_sae(spec, str(device))


def _training_info(folder: Path) -> dict[str, Any]:
    """Sparsity settings from the training runner's config beside the SAE (sae_lens' runner_cfg.json, or the
    runner_config.json of SAEs saved before it was renamed), when present."""
    path = next(
        (p for p in (folder / RUNNER_CFG_FILENAME, folder / "runner_config.json") if p.is_file()), None
    )
    if path is None:
        return {}
    try:
        sae_kwargs = json.loads(path.read_text()).get("sae") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: sae_kwargs[k] for k in ("l1_coefficient", "k") if k in sae_kwargs}


def evaluate_saes(
    model: HookedViT,
    saes: Mapping[str, SAESpec] | Iterable[SAESpec],
    images: Any,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Any:
    """`evaluate_sae` for each SAE (objects or sae_lens folders) into one pandas DataFrame, a row each.

    SAEs are loaded one at a time; the zero-shot classifier, the clean model's embeddings and the
    mean activation per hook are computed once and shared. `kwargs` go to `evaluate_sae`.
    Rows are sorted by hook type, layer and name.
    """
    model = as_sae_model(model)
    items = list(saes.items()) if isinstance(saes, Mapping) else [(None, s) for s in saes]
    if not items:
        raise ValueError("no SAEs to evaluate")
    _check_reiterable(images)
    downstream = kwargs.get("downstream", True)
    if downstream and kwargs.get("weights") is None:
        names = list(classnames) if classnames else dataset_classnames(images)
        if names and model.text is not None:
            kwargs["weights"] = class_weights(model, names, templates)
    clean_cache: dict[int, Any] = kwargs.pop("clean_cache", None) or {}
    means: dict[str, torch.Tensor] = {}
    rows = []
    for label, spec in tqdm(items, desc="SAEs", disable=not progress):
        sae = _load(spec, model_device(model))
        name = label or (Path(spec).name if not isinstance(spec, SAE) else sae.cfg.metadata.hook_name)
        hook = sae.cfg.metadata.hook_name
        extra = dict(kwargs)
        if downstream and extra.get("ablation_mean") is None and hook:
            if hook not in means:
                means[hook] = hook_mean(
                    model, hook, images, kwargs.get("batch_size", 32), kwargs.get("max_images"), progress
                )
            extra["ablation_mean"] = means[hook]
        row = evaluate_sae(
            model,
            sae,
            images,
            classnames,
            templates,
            clean_cache=clean_cache,
            progress=progress,
            name=name,
            **extra,
        )
        if not isinstance(spec, SAE):
            row["path"] = str(spec)
            row.update({k: v for k, v in _training_info(Path(spec)).items() if row.get(k) is None})
        rows.append(row)
    df = pd.DataFrame(rows)
    order = df.assign(_layer=df["layer"].fillna(-1)).sort_values(["hook_type", "_layer", "name"]).index
    return df.loc[order].reset_index(drop=True)


def metrics_table(df: Any) -> Any:
    """The scalar columns of a sweep DataFrame (arrays dropped), ready for CSV / markdown."""
    return df.drop(columns=[c for c in ARRAY_KEYS if c in df.columns])


def to_markdown(df: Any, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub markdown table of `df` (no tabulate dependency); floats to `digits` significant digits."""
    cols = [c for c in (columns or df.columns) if c in df.columns]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for _, row in df[cols].iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
