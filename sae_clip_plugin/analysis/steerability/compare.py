"""Does steerability measure steering towards concepts? SAE features against neurons, random directions and a
randomly initialised model, with 95% intervals over features and seeds.

The paper (arXiv 2504.08729, section 3) compares SAE features with the neuron baseline and a randomly initialised
ViT of the same config. Here every condition runs at one hook with the same images, readout and relative strength:

    SAE features, neurons, random directions (Gaussian, the SAE's mean decoder-row norm)   on the trained model
    the same three                                                                         on a random image tower

once per seed s (the seed's SAE, its random tower `random_vision_model(model, s)`, its random directions and its
feature sample). A measurement of steering towards concepts must rank the trained SAE's features first and put
every random-model condition last. The intervals are a two-level bootstrap: seeds drawn with replacement, then the
features of each drawn seed (the statistic is the mean over seeds of each seed's mean over features, the reported
number). A difference between two conditions draws the same seeds for both, and the same features when both
steered the same ones (an SAE on the trained and on the random model): a paired difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from sae_clip_plugin.analysis.intervals import LEVEL, N_BOOTSTRAP
from sae_clip_plugin.analysis.steerability.metric import select_features, steerability
from sae_clip_plugin.analysis.vocabulary import default_vocabulary, load_vocabulary, text_embeddings
from sae_clip_plugin.model.random_init import random_vision_model

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

TRAINED, RANDOM = "trained", "random model"
BASES = ("SAE features", "neurons", "random directions")


def random_directions(n: int, d: int, norm: float, seed: int) -> torch.Tensor:
    """[n, d] Gaussian directions, each of length `norm` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, d, generator=gen)
    return dirs * (norm / dirs.norm(dim=-1, keepdim=True))


def _bases(sae: Any, width: int, n_features: int, seed: int) -> dict[str, tuple[Any, list[int]]]:
    """(basis, features) per basis name of one seed: the SAE's sampled features, sampled neurons, random directions."""
    out: dict[str, tuple[Any, list[int]]] = {}
    norm = 1.0
    if sae is not None:
        out["SAE features"] = (sae, select_features(sae.cfg.d_sae, min(n_features, sae.cfg.d_sae), seed))
        norm = float(sae.W_dec.detach().norm(dim=-1).mean())
    out["neurons"] = (None, select_features(width, min(n_features, width), seed))
    out["random directions"] = (
        random_directions(n_features, width, norm, 10_000 + seed),
        list(range(n_features)),
    )
    return out


@torch.inference_mode()
def compare_conditions(
    model: HookedViT,
    saes: Sequence[Any] | None,
    pixels: torch.Tensor,
    hook_name: str,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n_features: int = 64,
    vocabulary: Any = None,
    text: torch.Tensor | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """One row per (model, basis, seed, feature): S, P, top concept, steerable.

    saes: one SAE per seed at `hook_name` (None: neurons and random directions only).
    kwargs go to `steerability` (relative_strength, readout_scale, threshold, ...; the defaults are the metric's).
    """
    if saes is not None and len(saes) != len(seeds):
        raise ValueError(f"{len(saes)} SAEs for {len(seeds)} seeds; pass one SAE per seed")
    width = int(model.cfg.d_model)
    words = load_vocabulary(vocabulary or default_vocabulary(model.cfg.model_spec))
    text = text_embeddings(model, words) if text is None else text
    frames = []
    for i, seed in enumerate(seeds):
        sae = None if saes is None else saes[i]
        if sae is not None and sae.cfg.metadata.hook_name != hook_name:
            raise ValueError(f"the SAE of seed {seed} reads {sae.cfg.metadata.hook_name}, not {hook_name}")
        towers = {TRAINED: model, RANDOM: random_vision_model(model, seed=seed)}
        for tower, m in towers.items():
            for basis_name, (basis, chosen) in _bases(sae, width, n_features, seed).items():
                result = steerability(m, basis, pixels, words, features=chosen, hook_name=hook_name, text=text,
                                      seed=seed, **kwargs)  # fmt: skip
                table = result.table[["feature", "S", "P", "top_concept", "steerable"]].copy()
                table.insert(0, "seed", seed)
                table.insert(0, "basis", basis_name)
                table.insert(0, "model", tower)
                frames.append(table)
        del towers
    return pd.concat(frames, ignore_index=True)


def _per_seed(table: pd.DataFrame, model: str, basis: str, column: str) -> dict[int, pd.Series]:
    rows = table[(table["model"] == model) & (table["basis"] == basis)]
    return {int(s): g.set_index("feature")[column].astype(float) for s, g in rows.groupby("seed")}


def bootstrap_mean(
    values: dict[int, pd.Series],
    baseline: dict[int, pd.Series] | None = None,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, lo, hi): the mean over seeds of each seed's mean of `values` (minus `baseline`'s), with the
    two-level bootstrap's 95% interval (seeds, then features; paired when both index the same features)."""
    seeds = sorted(values)
    if baseline is not None and sorted(baseline) != seeds:
        raise ValueError("the two conditions must have the same seeds")
    gen = torch.Generator().manual_seed(seed)

    def arrays(i: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        a = values[seeds[i]]
        b = None if baseline is None else baseline[seeds[i]]
        paired = b is not None and len(a) == len(b) and list(a.index) == list(b.index)
        return (torch.tensor(a.to_numpy(), dtype=torch.float64),
                None if b is None else torch.tensor(b.to_numpy(), dtype=torch.float64), paired)  # fmt: skip

    data = [arrays(i) for i in range(len(seeds))]
    estimate = sum(float(a.mean()) - (0.0 if b is None else float(b.mean())) for a, b, _ in data) / len(data)
    draws = torch.empty(n_boot, dtype=torch.float64)
    seed_draws = torch.randint(len(data), (n_boot, len(data)), generator=gen)
    for k in range(n_boot):
        total = 0.0
        for i in seed_draws[k].tolist():
            a, b, paired = data[i]
            ia = torch.randint(len(a), (len(a),), generator=gen)
            total += float(a[ia].mean())
            if b is not None:
                ib = ia if paired else torch.randint(len(b), (len(b),), generator=gen)
                total -= float(b[ib].mean())
        draws[k] = total / len(data)
    tail = (1 - LEVEL) / 2
    lo, hi = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return estimate, lo, hi


def summarise_conditions(table: pd.DataFrame, **context: Any) -> pd.DataFrame:
    """Per (model, basis): steerable fraction and mean S with 95% intervals, features per seed, seeds, coverage."""
    rows = []
    for (model, basis), group in table.groupby(["model", "basis"], sort=False):
        frac = bootstrap_mean(_per_seed(table, model, basis, "steerable"))
        mean_s = bootstrap_mean(_per_seed(table, model, basis, "S"))
        steerable = group[group["steerable"].astype(bool)]
        rows.append({**context, "model": model, "basis": basis, "seeds": group["seed"].nunique(),
                     "features_per_seed": len(group) // max(1, group["seed"].nunique()),
                     "steerable_fraction": frac[0], "fraction_lo": frac[1], "fraction_hi": frac[2],
                     "mean_S": mean_s[0], "mean_S_lo": mean_s[1], "mean_S_hi": mean_s[2],
                     "coverage": steerable["top_concept"].nunique()})  # fmt: skip
    return pd.DataFrame(rows)


def difference(
    table: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], column: str = "steerable"
) -> tuple[float, float, float]:
    """(estimate, lo, hi) of condition a's mean `column` minus condition b's; a condition is (model, basis)."""
    return bootstrap_mean(_per_seed(table, *a, column), _per_seed(table, *b, column))


# the orderings a measurement of steering towards concepts must show (each: the interval of a - b above 0)
EXPECTED = (
    ((TRAINED, "SAE features"), (TRAINED, "neurons")),
    ((TRAINED, "SAE features"), (TRAINED, "random directions")),
    ((TRAINED, "neurons"), (RANDOM, "neurons")),
    ((TRAINED, "random directions"), (RANDOM, "random directions")),
    ((TRAINED, "SAE features"), (RANDOM, "SAE features")),
)


def orderings(table: pd.DataFrame, column: str = "steerable") -> pd.DataFrame:
    """The differences of `EXPECTED` present in `table`, with intervals and whether each holds (lo > 0)."""
    present = set(zip(table["model"], table["basis"], strict=True))
    rows = []
    for a, b in EXPECTED:
        if a in present and b in present:
            est, lo, hi = difference(table, a, b, column)
            rows.append({"a": f"{a[1]} ({a[0]})", "b": f"{b[1]} ({b[0]})", "column": column,
                         "difference": est, "lo": lo, "hi": hi, "holds": lo > 0})  # fmt: skip
    return pd.DataFrame(rows)
