"""Suppress spurious SAE features and measure zero-shot accuracy per group, with baselines and a layer sweep.

For every SAE (one per layer) the top-k spurious features are chosen on the task's selection split and
clamped to 0 at the SAE's hook on all tokens, error term kept (`steering.sae_feature_hook`, mode
"zero"): the activation becomes x - sum_j f_j(x) W_dec[j] (through the SAE's decoder). Rows of the
result table (one per condition and split):

- `none`: the unmodified model;
- `sae`: the selected features suppressed (per layer and k);
- `random`: k random live features suppressed (per layer and k; mean over seeds);
- `heads`: Dyslexify-style ablation of the heads with the largest direct typographic effect (typographic;
  `sae_clip_plugin.analysis.decomposition.typographic`).

The best (layer, k) and the best head count are chosen on the SELECTION split and reported on the
evaluation split, so no evaluation image influences any choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.decomposition.typographic import typographic_head_effects
from sae_clip_plugin.analysis.disentangle.baselines import (
    head_ablation_hooks,
    random_features,
    top_heads,
)
from sae_clip_plugin.analysis.disentangle.config import DisentangleConfig
from sae_clip_plugin.analysis.disentangle.forward import ImageForwarder
from sae_clip_plugin.analysis.disentangle.select import (
    image_feature_acts,
    separation_scores,
    steering_scores,
    top_k,
)
from sae_clip_plugin.analysis.disentangle.tasks import ImageSplit, SpuriousTask
from sae_clip_plugin.analysis.intervals import bootstrap_intervals, difference_interval
from sae_clip_plugin.analysis.steering.interventions import sae_feature_hook, sae_hook_name
from sae_clip_plugin.analysis.zero_shot import zero_shot_logits, zero_shot_metrics
from sae_clip_plugin.model.hooks import hook_layer

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

# ------------------------------------------------------------------------------------------------
# metrics


def split_metrics(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, group_names: Sequence[str], kind: str
) -> dict[str, float]:
    """top1, ce, per-group accuracy (`acc[<group>]`), worst- and mean-group accuracy; typographic tasks
    add `clean_acc` / `attacked_acc` (the clean and attacked groups)."""
    raw = zero_shot_metrics(logits, labels, groups)
    out = {"top1": raw["top1"], "ce": raw["ce"], "worst_group_acc": raw["worst_group_acc"],
           "mean_group_acc": raw["mean_group_acc"]}  # fmt: skip
    for key, value in raw.items():
        if key.startswith("group_acc_"):
            g = int(key[len("group_acc_") :])
            out[f"acc[{group_names[g] if g < len(group_names) else g}]"] = value
    if kind == "typographic":
        out["clean_acc"] = raw.get("group_acc_0", float("nan"))
        out["attacked_acc"] = raw.get("group_acc_1", float("nan"))
    return out


def objective(
    metrics: Mapping[str, float], base: Mapping[str, float], kind: str, max_clean_drop: float
) -> tuple:
    """Sort key of a setting (higher is better): typographic = attacked accuracy among settings losing at
    most `max_clean_drop` clean accuracy (others ranked after, by attacked gain minus clean loss);
    groups = worst-group accuracy, then mean-group accuracy."""
    if kind == "typographic":
        loss = base["clean_acc"] - metrics["clean_acc"]
        ok = loss <= max_clean_drop + 1e-9
        return (ok, metrics["attacked_acc"] if ok else metrics["attacked_acc"] - loss)
    return (True, metrics["worst_group_acc"], metrics["mean_group_acc"])


def typographic_success(
    before: Mapping[str, float], after: Mapping[str, float], max_clean_drop: float = 0.02
) -> bool:
    """The typographic bar (`text.bar_text`): attacked accuracy up by at least half the attack's drop, clean
    accuracy down by <= `max_clean_drop`, and (where the row has its interval) the gain's 95% interval above 0."""
    gain = after["attacked_acc"] - before["attacked_acc"]
    drop = before["clean_acc"] - before["attacked_acc"]
    raised = drop > 0 and gain > 0 and gain >= 0.5 * drop - 1e-9
    certain = after.get("delta_attacked_acc_lo", 1.0) > 0
    return raised and certain and before["clean_acc"] - after["clean_acc"] <= max_clean_drop + 1e-9


def groups_success(before: Mapping[str, float], after: Mapping[str, float]) -> bool:
    """Worst-group accuracy rises: the rise's 95% interval lies above 0 (where the row has it)."""
    if "delta_worst_group_acc_lo" in after:
        return after["delta_worst_group_acc_lo"] > 0
    return after["worst_group_acc"] > before["worst_group_acc"] + 1e-9


# ------------------------------------------------------------------------------------------------
# the run


@dataclass
class DisentangleResult:
    """All rows (one dict per condition and split), the chosen settings and the must-show verdicts."""

    task: str
    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # per-image correctness of each row (index into rows), for paired intervals; not serialised
    correct: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    groups: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # group ids per split

    def eval_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["split"] == "eval"]

    def correct_of(self, row: Mapping[str, Any]) -> torch.Tensor:
        return self.correct[next(i for i, r in enumerate(self.rows) if r is row)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("correct", "groups")}


@dataclass
class _Scored:
    """Metrics of one evaluation and the per-image correctness behind them ([seeds, N] for seed means)."""

    metrics: dict[str, float]
    correct: torch.Tensor


class _Evaluator:
    """Zero-shot metrics of one split under hooks (the split's clean prefix is cached per layer)."""

    def __init__(
        self, model: HookedViT, split: ImageSplit, task: SpuriousTask, weights: torch.Tensor, batch_size: int
    ):
        self.forward = ImageForwarder(model, split.pixels, batch_size)
        self.split, self.task, self.weights = split, task, weights.float().cpu()
        self.scale = float(model.logit_scale)

    def __call__(self, hooks: Sequence[tuple[str, Any]] = ()) -> _Scored:
        logits = zero_shot_logits(self.forward.embeds(hooks), self.weights, self.scale)
        metrics = split_metrics(
            logits, self.split.labels, self.split.groups, self.task.group_names, self.task.kind
        )
        return _Scored(metrics, (logits.argmax(-1) == self.split.labels).double())


def _mean_metrics(runs: Sequence[_Scored]) -> _Scored:
    """The mean over random-feature seeds of each metric; per-image correctness kept per seed ([seeds, N]),
    so the row's intervals bootstrap the same mean over seeds."""
    keys = runs[0].metrics.keys()
    out = {k: sum(r.metrics[k] for r in runs) / len(runs) for k in keys}
    main = "attacked_acc" if "attacked_acc" in out else "worst_group_acc"
    if len(runs) > 1:
        mean = out[main]
        out[f"{main}_std"] = (sum((r.metrics[main] - mean) ** 2 for r in runs) / (len(runs) - 1)) ** 0.5
    return _Scored(out, torch.stack([r.correct for r in runs]))


def _select_features(
    model: HookedViT,
    sae: Any,
    task: SpuriousTask,
    cfg: DisentangleConfig,
    weights: torch.Tensor,
    select_tokens: str,
    suppress_tokens: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature scores [d_sae], live-feature mask [d_sae]) from the selection split.

    The token selections are this SAE's, as `DisentangleConfig.tokens_for` resolves them.
    """
    acts = image_feature_acts(
        model, sae, task.select.pixels, tokens=select_tokens, pool=cfg.pool, batch_size=cfg.batch_size
    )
    live = acts.amax(0) > 0
    method = "auroc" if cfg.method == "steering" else cfg.method
    scores = separation_scores(acts, task.select.spurious, method=method, reference=task.reference)
    if cfg.method == "steering":
        if not task.spurious_prompts:
            raise ValueError(f"task {task.name!r} has no spurious prompts; method='steering' needs them")
        candidates = top_k(scores, min(cfg.steering_candidates, int(live.sum())))
        spurious_w = model.zero_shot_weights(task.spurious_prompts, ["{}"])
        max_act = acts.amax(0)
        effect = steering_scores(
            model, sae, task.select.pixels, spurious_w, weights, candidates,
            values=[cfg.steering_scale * float(max_act[c]) for c in candidates],
            tokens=suppress_tokens, batch_size=cfg.batch_size,
        )  # fmt: skip
        scores = torch.full_like(scores, float("-inf"))
        scores[torch.tensor(candidates)] = effect
    return scores, live


class _Rows:
    """The result table as it fills: every row scored against the unmodified model on its split (deltas,
    paired bootstrap intervals), starting with the two `none` rows."""

    def __init__(self, model: HookedViT, task: SpuriousTask, weights: torch.Tensor, batch_size: int):
        self.task = task
        self.evals = {
            "select": _Evaluator(model, task.select, task, weights, batch_size),
            "eval": _Evaluator(model, task.evaluate, task, weights, batch_size),
        }
        self.result = DisentangleResult(task=task.name, kind=task.kind)
        self.result.groups = {split: ev.split.groups for split, ev in self.evals.items()}
        self.base = {split: ev() for split, ev in self.evals.items()}
        for split in self.evals:
            self.add(split, "none", self.base[split])

    def add(self, split: str, condition: str, scored: _Scored, **extra: Any) -> dict[str, Any]:
        """One row of `scored` on `split`; `extra` fills the setting's columns (layer, k, heads, ...)."""
        task, base, result = self.task, self.base, self.result
        metrics = scored.metrics
        row = {"task": task.name, "split": split, "condition": condition, "layer": None, "hook": "",
               "k": None, "n_heads": None, "features": "", "heads": "", **extra, **metrics}  # fmt: skip
        for key in ("top1", "worst_group_acc", "mean_group_acc", "clean_acc", "attacked_acc"):
            if key in metrics:
                row[f"delta_{key}"] = metrics[key] - base[split].metrics[key]
        baseline = None if condition == "none" else base[split].correct
        row.update(bootstrap_intervals(scored.correct, self.evals[split].split.groups, task.kind, baseline))
        result.correct[len(result.rows)] = scored.correct
        result.rows.append(row)
        return row

    def add_setting(self, condition: str, hooks: Sequence[tuple[str, Any]], **extra: Any) -> dict[str, Any]:
        """A setting's rows on both splits (selection first); its selection-split row, the one choices use."""
        rows = {split: self.add(split, condition, ev(hooks), **extra) for split, ev in self.evals.items()}
        return rows["select"]


def _head_rows(
    rows: _Rows, model: HookedViT, task: SpuriousTask, cfg: DisentangleConfig, weights: torch.Tensor
) -> list[dict[str, Any]]:
    """Dyslexify-style heads, chosen by their direct typographic effect on the selection twins, ablated
    for each head count (typographic tasks only); their selection-split rows."""
    twins = task.select.twins() if task.kind == "typographic" else None
    if twins is None or not cfg.n_heads:
        return []
    att, cln = twins
    scores = typographic_head_effects(
        model,
        task.select.pixels[att],
        task.select.pixels[cln],
        task.select.spurious[att],
        task.select.labels[att],
        weights,
        cfg.batch_size,
    )
    head_rows = []
    for n in cfg.n_heads:
        heads = top_heads(scores, n, cfg.head_layers)
        text = " ".join(f"L{layer}H{h}" for layer, h in heads)
        head_rows.append(rows.add_setting("heads", head_ablation_hooks(heads), n_heads=n, heads=text))
    return head_rows


def _suppression(
    sae: Any, hook: str, feats: Sequence[int], tokens: str, cfg: DisentangleConfig
) -> list[tuple[str, Any]]:
    """The hooks that clamp `feats` to 0 at the SAE's hook on `tokens`."""
    return [sae_feature_hook(sae, feats, mode="zero", tokens=tokens, use_error_term=cfg.use_error_term,
                             hook_name=hook)]  # fmt: skip


def _sae_rows(
    rows: _Rows,
    model: HookedViT,
    hook: str,
    sae: Any,
    task: SpuriousTask,
    cfg: DisentangleConfig,
    weights: torch.Tensor,
) -> list[dict[str, Any]]:
    """One SAE: its top-k spurious features suppressed for each k, and k random live features (eval split,
    mean over seeds) as the baseline; the selection-split rows of the suppressions."""
    select_tokens, suppress_tokens = cfg.tokens_for(model, sae, hook)
    scores, live = _select_features(model, sae, task, cfg, weights, select_tokens, suppress_tokens)
    live_idx = torch.nonzero(live).flatten().tolist()
    layer = hook_layer(hook)
    sae_rows = []
    for k in cfg.ks:
        if k > len(live_idx):
            continue
        feats = top_k(scores, k)
        hooks = _suppression(sae, hook, feats, suppress_tokens, cfg)
        common = {"layer": layer, "hook": hook, "k": k}
        sae_rows.append(rows.add_setting("sae", hooks, features=" ".join(map(str, feats)), **common))
        if cfg.n_random:
            runs = []
            for seed in range(cfg.n_random):
                rand = random_features(sae.cfg.d_sae, k, seed, candidates=live_idx)
                runs.append(rows.evals["eval"](_suppression(sae, hook, rand, suppress_tokens, cfg)))
            rows.add("eval", "random", _mean_metrics(runs), n_random=cfg.n_random, **common)
    return sae_rows


def run_disentangle(
    model: HookedViT,
    saes: Mapping[str, Any] | Sequence[Any],
    task: SpuriousTask,
    cfg: DisentangleConfig | None = None,
    progress: bool = True,
) -> DisentangleResult:
    """Sweep the SAEs (one per hook, usually one per layer) on `task`; see the module docstring."""
    cfg = cfg or DisentangleConfig()
    sae_map = dict(saes) if isinstance(saes, Mapping) else {sae_hook_name(s): s for s in saes}
    too_many = {hook: sae.cfg.d_sae for hook, sae in sae_map.items() if max(cfg.ks) > sae.cfg.d_sae}
    if too_many:
        raise ValueError(
            f"k={max(cfg.ks)} features to suppress exceeds the dictionary size of the SAE(s) at {too_many} "
            "(hook: d_sae); choose k values below d_sae"
        )
    weights = model.zero_shot_weights(task.classnames, task.templates)
    rows = _Rows(model, task, weights, cfg.batch_size)
    head_rows = _head_rows(rows, model, task, cfg, weights)

    # SAE suppression and the random-feature baseline, layer by layer
    ordered = sorted(
        sae_map.items(), key=lambda kv: (hook_layer(kv[0]) is None, hook_layer(kv[0]) or 0, kv[0])
    )
    sae_rows: list[dict[str, Any]] = []
    for hook, sae in tqdm(ordered, desc=f"{task.name}: SAEs", disable=not progress):
        sae_rows += _sae_rows(rows, model, hook, sae, task, cfg, weights)

    result = rows.result
    base_metrics = {split: scored.metrics for split, scored in rows.base.items()}
    result.best, result.summary = _choose(result, sae_rows, head_rows, base_metrics, task.kind, cfg)
    return result


def _eval_twin(
    result: DisentangleResult, row: Mapping[str, Any], condition: str | None = None
) -> dict[str, Any] | None:
    """The eval-split row of the same setting as a selection-split row."""
    keys = ("condition", "layer", "hook", "k", "n_heads")
    want = {k: row[k] for k in keys}
    if condition is not None:
        want["condition"] = condition
    for r in result.rows:
        if r["split"] == "eval" and all(r[k] == v for k, v in want.items()):
            return r
    return None


def _choose(
    result: DisentangleResult,
    sae_rows: list[dict[str, Any]],
    head_rows: list[dict[str, Any]],
    base: Mapping[str, Mapping[str, float]],
    kind: str,
    cfg: DisentangleConfig,
) -> tuple[dict[str, Any], dict[str, Any]]:
    key = lambda r: objective(r, base["select"], kind, cfg.max_clean_drop)  # noqa: E731
    best: dict[str, Any] = {}
    summary: dict[str, Any] = {"task": result.task, "kind": kind, "none": _metrics_only(base["eval"])}
    if kind == "typographic":
        summary["max_clean_drop"] = cfg.max_clean_drop
    check = (lambda after: typographic_success(base["eval"], after, cfg.max_clean_drop)) if kind == "typographic" \
        else (lambda after: groups_success(base["eval"], after))  # fmt: skip
    if sae_rows:
        chosen = max(sae_rows, key=key)
        ev = _eval_twin(result, chosen)
        rand = _eval_twin(result, chosen, "random")
        best["sae"] = {
            "layer": chosen["layer"],
            "hook": chosen["hook"],
            "k": chosen["k"],
            "features": chosen["features"],
        }
        summary["sae"] = {**best["sae"], **_metrics_only(ev), "meets_bar": check(ev)}
        if rand is not None:
            summary["random"] = {
                "layer": chosen["layer"],
                "k": chosen["k"],
                **_metrics_only(rand),
                "meets_bar": check(rand),
            }
            main = "attacked_acc" if kind == "typographic" else "worst_group_acc"
            lo, hi = difference_interval(
                result.correct_of(ev), result.correct_of(rand), result.groups["eval"], kind, main
            )
            summary["sae"].update({
                "vs_random": ev[main] - rand[main], "vs_random_lo": lo, "vs_random_hi": hi,
                "beats_random": lo > 0,
            })  # fmt: skip
            summary["sae"]["meets_bar"] = summary["sae"]["meets_bar"] and lo > 0
        per_layer = {}
        for layer in sorted({r["layer"] for r in sae_rows if r["layer"] is not None}):
            top = max((r for r in sae_rows if r["layer"] == layer), key=key)
            per_layer[layer] = top["k"]
        best["k_per_layer"] = per_layer
    if head_rows:
        chosen = max(head_rows, key=key)
        ev = _eval_twin(result, chosen)
        best["heads"] = {"n_heads": chosen["n_heads"], "heads": chosen["heads"]}
        summary["heads"] = {**best["heads"], **_metrics_only(ev), "meets_bar": check(ev)}
    return best, summary


_METRIC_KEYS = ("top1", "worst_group_acc", "mean_group_acc", "clean_acc", "attacked_acc")


def _metrics_only(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        k: row[k]
        for k in row
        if k.removesuffix("_lo").removesuffix("_hi") in _METRIC_KEYS or k.startswith(("acc[", "delta_"))
    }
