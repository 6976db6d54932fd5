"""DemoConfig: what `sae-clip demo` runs, with the full and the `--fast` budgets.

The full budgets are sized for the bundled toy CLIP on 2 CPU cores (the whole demo in under 10
minutes); `--fast` shrinks every budget so the test suite can run the same pipeline in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sae_clip_plugin.command_config import CommandConfig, option

# the budgets that differ between the full demo and --fast
FULL: dict[str, Any] = {
    "n_layers_trained": 3,
    "n_train_images": 2000,
    "expansion_factor": 4,
    "topk_k": 16,
    # TopK: unit decoder rows at init (sae_lens' TopK default of 0.1 left 40-55% of features dead on this
    # budget), a stronger auxiliary loss and a higher lr: 5-6% dead after 200 steps (docs/toy_results.md)
    "topk_decoder_init_norm": 1.0,
    "topk_aux_loss_coefficient": 4.0,
    "topk_lr": 3e-3,
    "l1_coefficient": 5.0,
    "training_tokens": 409_600,
    "train_batch_size_tokens": 2048,
    "lr": 1e-3,
    "lr_warm_up_steps": 20,
    "n_metric_images": 128,
    "n_steer_images": 48,
    "n_steer_features": 128,
    "n_curve_features": 6,
    "n_disentangle": 48,
    "disentangle_ks": (16, 64),  # the toy reads a word through many SAE features (docs/toy_results.md)
    "n_random": 1,
    "n_heads": (2,),
    "n_dashboard_images": 192,
    "n_dashboard_features": 4,
    "n_top_images": 6,
}
FAST: dict[str, Any] = {
    "n_layers_trained": 2,
    "n_train_images": 128,
    "expansion_factor": 2,
    "topk_k": 8,
    "topk_decoder_init_norm": 1.0,
    "topk_aux_loss_coefficient": 4.0,
    "topk_lr": 3e-3,
    "l1_coefficient": 2.0,
    "training_tokens": 16_384,
    "train_batch_size_tokens": 1024,
    "lr": 1e-3,
    "lr_warm_up_steps": 2,
    "n_metric_images": 32,
    "n_steer_images": 6,
    "n_steer_features": 12,
    "n_curve_features": 2,
    "n_disentangle": 12,
    "disentangle_ks": (4,),
    "n_random": 1,
    "n_heads": (1,),
    "n_dashboard_images": 24,
    "n_dashboard_features": 2,
    "n_top_images": 3,
}
ARCHITECTURES = ("topk", "standard")
# settings that change no result (not part of the run's fingerprint)
NOT_FINGERPRINTED = ("out", "device")


@dataclass
class DemoConfig:
    """One demo run. Build with `DemoConfig.make(out, fast=..., **overrides)`."""

    out: str
    model_spec: str = "toy"
    images: str | None = None  # an image folder (class subfolders give labels); None: the toy world
    fast: bool = False
    layers: tuple[int, ...] | None = None  # default: early, middle and last block
    hook_type: str = "hook_resid_post"
    architectures: tuple[str, ...] = ARCHITECTURES
    disentangle_architecture: str = "topk"
    steer_strength: float = 150.0  # the paper's absolute s, reported beside the relative one
    steer_relative_strength: float = 5.41  # model-relative strength; 150 on the paper's ViT-B/32 SAEs
    seed: int = 0
    device: str = "cpu"
    budgets: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls, out: str, fast: bool = False, budgets: dict[str, Any] | None = None, **kwargs: Any
    ) -> DemoConfig:
        base = dict(FAST if fast else FULL)
        unknown = sorted(set(budgets or {}) - set(base))
        if unknown:
            raise ValueError(f"unknown budget(s) {unknown}; known: {sorted(base)}")
        return cls(out=str(out), fast=fast, budgets={**base, **(budgets or {})}, **kwargs)

    def __post_init__(self) -> None:
        if not self.budgets:
            self.budgets = dict(FAST if self.fast else FULL)
        if self.layers is not None:
            self.layers = tuple(int(layer) for layer in self.layers)
        self.architectures = tuple(self.architectures)
        bad = [a for a in self.architectures if a not in ARCHITECTURES]
        if bad or not self.architectures:
            raise ValueError(
                f"architectures must be a non-empty subset of {ARCHITECTURES}, got {self.architectures}"
            )
        if self.disentangle_architecture not in self.architectures:
            self.disentangle_architecture = self.architectures[0]

    def __getitem__(self, key: str) -> Any:
        return self.budgets[key]

    @property
    def is_toy_world(self) -> bool:
        return self.images is None

    def choose_layers(self, n_layers: int) -> list[int]:
        """The trained layers: given ones, else evenly spread ending at the last block (toy: 1, 3, 5)."""
        if self.layers is not None:
            bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
            if bad:
                raise ValueError(f"layers {bad} do not exist in a {n_layers}-layer model (0..{n_layers - 1})")
            return sorted(set(self.layers))
        k = min(self["n_layers_trained"], n_layers)
        return sorted({max(0, round(n_layers * (i + 1) / k) - 1) for i in range(k)})

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a re-run to reuse finished steps."""
        data = dataclasses.asdict(self)
        for key in NOT_FINGERPRINTED:
            data.pop(key)
        return json.loads(json.dumps(data))  # tuples -> lists, as they come back from disk


@dataclass
class DemoCommandConfig(CommandConfig):
    """`sae-clip demo`'s settings (torch-free): where, on which model and images, how big; `demo_config()` builds
    the DemoConfig the pipeline runs."""

    out: str | None = option(None, "output folder (created; a re-run resumes it)", required=True)
    model: str = option("toy", "model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, or a registered name such "
                        "as toy")  # fmt: skip
    images: str | None = option(None, "an image folder: its class subfolders give zero-shot labels and a typographic "
                                "task (default: the toy world)")  # fmt: skip
    fast: bool = option(False, "tiny budgets (smoke test)")
    layers: list[int] | None = option(None, "blocks to train SAEs on (default: 3 spread)", nargs="+")
    device: str = option("auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, ...")
    seed: int = option(0, "seed of every step")
    force: bool = option(False, "delete this demo's previous outputs in --out and start over")

    def demo_config(self, device: str) -> DemoConfig:
        """The pipeline's config (`device`: the resolved torch device)."""
        return DemoConfig.make(self.out, fast=self.fast, model_spec=self.model, images=self.images,  # type: ignore[arg-type]
                               layers=tuple(self.layers) if self.layers else None, device=device, seed=self.seed)  # fmt: skip
