"""The settings of a disentanglement run, torch-free: `DisentangleConfig` (the experiment's knobs, the paper's
recipe where it has one) and `DisentangleCommandConfig` (`sae-clip disentangle`'s flags: the knobs plus which SAEs,
model, tasks and output), whose defaults are DisentangleConfig's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sae_clip_plugin.command_config import CommandConfig, option, positive_int

if TYPE_CHECKING:  # annotations only: this config module stays torch-free
    from sae_clip_plugin.model.hooked_vit import HookedViT

METHODS = ("auroc", "mean_diff", "steering")
POOLS = ("mean", "max")
TOKEN_CHOICES = ("sae", "all", "cls", "patches")  # "sae": the tokens each SAE was trained on


@dataclass
class DisentangleConfig:
    """Knobs of one disentanglement run (defaults: the paper's recipe where it has one)."""

    ks: tuple[int, ...] = (4, 8, 16)  # numbers of features suppressed
    method: str = "auroc"  # auroc | mean_diff | steering
    # tokens pooled into one activation per image for selection, and where features are clamped to 0
    # (the paper: all tokens); "sae" = the tokens each SAE was trained on (metadata), so a CLS-only SAE acts
    # on CLS only and an all-token SAE on all tokens
    select_tokens: str = "sae"
    pool: str = "mean"  # mean | max over select_tokens
    suppress_tokens: str = "sae"
    use_error_term: bool = True
    n_random: int = 3  # seeds of the random-feature baseline
    n_heads: tuple[int, ...] = (1, 2, 4)  # head-ablation baseline sizes (typographic tasks)
    head_layers: tuple[int, ...] | None = None  # restrict ablated heads to these layers
    max_clean_drop: float = 0.02  # typographic: clean accuracy a setting may lose (chosen and bar)
    steering_candidates: int = 64  # method=steering: features pre-ranked by AUROC then steered
    steering_scale: float = 1.0  # method=steering: clamp value = scale * the feature's max activation
    batch_size: int = 128

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        self.n_heads = tuple(int(n) for n in self.n_heads)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive feature counts, got {self.ks}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.n_random < 0:
            raise ValueError("n_random must be >= 0")
        for name in ("select_tokens", "suppress_tokens"):
            if getattr(self, name) not in TOKEN_CHOICES:
                raise ValueError(f"{name} must be one of {TOKEN_CHOICES}, got {getattr(self, name)!r}")

    def tokens_for(self, model: HookedViT, sae: Any, hook: str) -> tuple[str, str]:
        """(selection tokens, suppression tokens) for one SAE: "sae" resolves to the tokens it was trained on."""
        # imported here: it brings torch, and this module is read by `sae-clip --help`
        from sae_clip_plugin.model.sae_splice import sae_token_selection

        own = sae_token_selection(sae, model.cfg.n_tokens, hook, None)
        return (own if self.select_tokens == "sae" else self.select_tokens,
                own if self.suppress_tokens == "sae" else self.suppress_tokens)  # fmt: skip


def _default(name: str) -> Any:
    value = next(f for f in dataclasses.fields(DisentangleConfig) if f.name == name).default
    return list(value) if isinstance(value, tuple) else value


@dataclass
class DisentangleCommandConfig(CommandConfig):
    """`sae-clip disentangle`: suppress spurious SAE features across layers on one or more tasks."""

    sae: list[str] = option([], "SAE: a sae_lens folder, a folder of them, a Prisma .pt file, or RELEASE:SAE_ID; "
                            "repeatable (one SAE per hook)", repeat=True)  # fmt: skip
    model: str | None = option(None, "model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, a registered name "
                               "such as toy, or random:<spec> (default: the SAEs' metadata model_name)")  # fmt: skip
    task: list[str] = option([], "toy-typographic | toy-background | toy-colour | celeba=ROOT | waterbirds=ROOT | "
                             "typo-folder=DIR | typo-generate=IMAGE_FOLDER; repeatable", repeat=True, required=True)  # fmt: skip
    out: str | None = option(None, "output folder", required=True)
    json: bool = option(False, "print each task's summary as JSON instead of one line")
    n_suppressed: list[int] = option(_default("ks"), "numbers of features to suppress", nargs="+")
    method: str = option(_default("method"), "feature ranking", choices=list(METHODS))
    select_tokens: str = option(_default("select_tokens"), "tokens pooled into one activation per image for ranking "
                                "(sae: those the SAE was trained on)", choices=list(TOKEN_CHOICES))  # fmt: skip
    pool: str = option(_default("pool"), "pooling over --select-tokens", choices=list(POOLS))
    suppress_tokens: str = option(_default("suppress_tokens"), "where to clamp to 0 (sae: the tokens the SAE was "
                                  "trained on)", choices=list(TOKEN_CHOICES))  # fmt: skip
    spurious_by: str = option("word", "typographic: rank against each written word, or attacked vs clean",
                              choices=["word", "attack"])  # fmt: skip
    word_placement: str | None = option(None, "toy-typographic: write the word beside the shape (reading only; the "
                                        "default) or anywhere, as in training (reading plus occlusion)",
                                        choices=["beside", "anywhere"])  # fmt: skip
    n_random: int = option(_default("n_random"), "seeds of the random-feature baseline")
    n_heads: list[int] = option(_default("n_heads"), "head-ablation sizes (typographic)", nargs="*")
    head_layers: list[int] | None = option(None, "only ablate heads in these layers", nargs="*")
    max_clean_drop: float = option(_default("max_clean_drop"), "typographic: clean accuracy a setting may lose "
                                   "(choice and bar)")  # fmt: skip
    n_select: int | None = option(None, "selection split size: toy pairs / images per group (default 300); images "
                                  "per group for celeba / waterbirds (default: the smallest group)", parse=positive_int)  # fmt: skip
    n_eval: int | None = option(None, "evaluation split size (as --n-select)", parse=positive_int)
    seed: int = option(0, "seed of the image sets and the random baseline")
    batch_size: int = option(_default("batch_size"), "images per forward")
    device: str = option("auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, ...")
    no_check_model: bool = option(False, "allow SAEs whose metadata names another model")
    no_progress: bool = option(False, "no progress bars")

    def experiment(self) -> DisentangleConfig:
        """The experiment's knobs (what run_disentangle takes)."""
        return DisentangleConfig(
            ks=tuple(self.n_suppressed), method=self.method, select_tokens=self.select_tokens, pool=self.pool,
            suppress_tokens=self.suppress_tokens, n_random=self.n_random, n_heads=tuple(self.n_heads),
            head_layers=tuple(self.head_layers) if self.head_layers else None, max_clean_drop=self.max_clean_drop,
            batch_size=self.batch_size,
        )  # fmt: skip
