"""VisionSAERunnerConfig: one dataclass for a vision SAE training run, loadable from YAML/JSON.

Defaults follow the paper's vanilla recipe (the paper's released recipe; arXiv 2504.08729): standard ReLU SAE with an L1 penalty,
expansion x64, W_enc = W_dec^T with unit-norm decoder rows at init, Adam lr 4e-4 with 200 warm-up
steps and a cosine schedule, 4096-token batches, per-token layer-norm input normalisation
(unverified for the vanilla family). The paper's L1 coefficients (1e-5 .. 1e-4) are in vit_prisma's
loss units and do not carry over to sae_lens' loss; the default here is in sae_lens units. The
`paper-topk` preset is the released TopK recipe (k=64, decoder rows of norm 0.1 at init); `topk` is that
recipe with live-feature initialisation (unit decoder rows, a 4x auxiliary loss), which small runs need to keep
their features alive, and with the budget, batch, width, k and lr the user does not set sized to the images and the
model (training/sizing.py: `size_to_data`). The TopK family defaults to sae_lens' expected-average-norm scaling instead, since sae_lens' TopK auxiliary loss refuses per-token layer
norm. sae_lens 6 has no ghost grads.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lens.config import LoggingConfig

from sae_clip_plugin.config_types import check_field_types, check_mapping_types, check_number
from sae_clip_plugin.training.cache import STORAGE_DTYPES
from sae_clip_plugin.training.config_flags import TrainingFlags
from sae_clip_plugin.training.sizing import SIZED_FIELDS, sized_values
from sae_clip_plugin.training.tokens import check_token_selection

TRAINING_ARCHITECTURES = ("standard", "topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "gated")
NORMALIZATIONS = (
    "none",
    "expected_average_only_in",
    "layer_norm",
    "constant_norm_rescale",
    "covariance_whitening",
)
# architecture-specific defaults for `sae` (the sae_lens TrainingSAEConfig keyword arguments)
# sae_lens' TopK auxiliary loss (dead-feature revival) refuses per-token runtime normalisation
DEFAULT_DEAD_WINDOW = 1000  # sae_lens' default, for runs of 10,000 steps and more
TOPK_AUX_ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk")
RUNTIME_NORMALIZATIONS = ("layer_norm", "constant_norm_rescale")
SAE_DEFAULTS: dict[str, dict[str, Any]] = {
    "standard": {"l1_coefficient": 5.0},
    "gated": {"l1_coefficient": 5.0},
    "topk": {"k": 64},
    "batchtopk": {"k": 64},
    "matryoshka_batchtopk": {"k": 64},
    "jumprelu": {},
}
PAPER_TOPK = {"architecture": "topk", "sae": {"k": 64}, "decoder_init_norm": 0.1}  # the released TopK recipe
PRESETS: dict[str, dict[str, Any]] = {
    "vanilla": {},  # the paper's vanilla recipe (the defaults)
    "paper-vanilla": {},
    # TopK that keeps its features alive: unit decoder rows at init and a 4x auxiliary loss (the released recipe's
    # 0.1 init left 40-58% of the features dead on small budgets; docs/toy_results.md, "dead TopK features")
    # ... and whose budget, batch, width, k and lr follow the images and the model (training/sizing.py) unless set
    "topk": {
        "architecture": "topk",
        "sae": {"k": 64, "aux_loss_coefficient": 4.0},
        "decoder_init_norm": 1.0,
        "size_to_data": list(SIZED_FIELDS),
    },
    "paper-topk": PAPER_TOPK,
}


LOGGER_DEFAULTS: dict[str, Any] = {"log_to_wandb": False, "wandb_project": "sae_clip_plugin"}
LOGGER_FIELDS = ("log_to_wandb", "wandb_project", "wandb_entity", "run_name", "wandb_log_frequency",
                 "eval_every_n_wandb_logs")  # fmt: skip

# field names of the previous release -> sae_lens' LanguageModelSAERunnerConfig names (the same concepts)
RENAMED_FIELDS = {
    "model_spec": "model_name",
    "dataset": "dataset_path",
    "cache_path": "cached_activations_path",
    "buffer_batches": "n_batches_in_buffer",
    "mix_fraction": "activations_mixing_fraction",
}


def renamed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the previous release's field names replaced by the current ones (a FutureWarning each), so
    configs, checkpoints and SAE metadata written before the rename still load."""
    out = dict(data)
    for old, new in RENAMED_FIELDS.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(
                f"both {old!r} and {new!r} are set; {old!r} is the old name of {new!r}: keep one"
            )
        warnings.warn(f"config field {old!r} is now {new!r} (sae_lens' name); the old name goes in 0.3",
                      FutureWarning, stacklevel=3)  # fmt: skip
        out[new] = out.pop(old)
    moved = {k: out.pop(k) for k in LOGGER_FIELDS if k in out}
    if moved:
        warnings.warn(f"config fields {sorted(moved)} now live under 'logger' (sae_lens' LoggingConfig); the flat "
                      "names go in 0.3", FutureWarning, stacklevel=3)  # fmt: skip
        logger = out.get("logger")
        out["logger"] = {
            **(dataclasses.asdict(logger) if dataclasses.is_dataclass(logger) else logger or {}),
            **moved,
        }
    return out


@dataclass
class VisionSAERunnerConfig(TrainingFlags):
    """Everything a run needs; see the field comments (the fields `sae-clip train` has a flag for are declared in
    TrainingFlags, training/config_flags.py, with their help). Build with `from_file`, `from_dict` or `from_preset`."""

    # -- model and hooks
    hook_name: str | list[str] = "blocks.6.hook_resid_post"  # a list trains one SAE per hook, one data pass
    fold_ln: bool = False  # weight processing of the HookedViT (the paper: none)
    center_writing_weights: bool = False
    model_dtype: str = "float32"
    model_device: str | None = None  # default: `device`
    autocast_model: bool = False  # bfloat16 autocast for the ViT forward

    # -- images
    dataset_split: str = "train"
    image_column: str | None = None  # for datasets; found automatically when None
    shuffle_images: bool = True  # new image (or cache chunk) order every epoch

    # -- optional disk cache (sae_lens cached-activation layout)
    cache_shard_images: int = 1024
    cache_chunk_images: int = 64  # contiguous images per cache read when training

    # -- SAE
    # vanilla | topk | paper-vanilla | paper-topk; applied by from_dict, recorded here
    preset: str | None = None
    size_to_data: list[str] = field(default_factory=list)  # fields the runner sets from the data (sizing.py)
    # None: layer_norm (vanilla family), expected_average_only_in (TopK family)
    apply_b_dec_to_input: bool = True
    decoder_init_norm: float | None = 1.0  # unit-norm decoder rows, W_enc = W_dec^T
    sae: dict[str, Any] = field(
        default_factory=dict
    )  # architecture kwargs: l1_coefficient, k, matryoshka_widths...
    sae_dtype: str = "float32"

    # -- training (sae_lens SAETrainerConfig)
    lr_end: float | None = None  # default lr / 10
    lr_scheduler_name: str = "cosineannealing"
    lr_decay_steps: int = 0
    n_restart_cycles: int = 1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    autocast_sae: bool = False
    # steps without firing before a feature counts as dead (and the TopK auxiliary loss trains it); None: 1/20
    # of the run, at most sae_lens' 1000 (a 1000-step window never fires on a 200-step run, so nothing revives)
    dead_feature_window: int | None = None
    feature_sampling_window: int = 2000
    n_batches_for_norm_estimate: int = 20  # images are expensive: keep small
    n_batches_in_buffer: int = 16  # mixing-buffer size in training batches
    activations_mixing_fraction: float = 0.5
    prefetch_batches: int = 2  # batches prepared in a background thread (0 = off)

    # -- checkpoints, evaluation, output
    save_final_checkpoint: bool = False
    eval_holdout: bool = False  # ... or its last ones, held out of training (needs the model loaded)

    # -- wandb through sae_lens' own LoggingConfig (off by default), nested as in LanguageModelSAERunnerConfig
    logger: LoggingConfig = field(default_factory=lambda: LoggingConfig(**LOGGER_DEFAULTS))

    def __post_init__(self) -> None:
        if isinstance(self.logger, dict):
            known = {f.name for f in dataclasses.fields(LoggingConfig)}
            unknown = sorted(set(self.logger) - known)
            if unknown:
                raise ValueError(
                    f"unknown logger field(s) {unknown}; sae_lens' LoggingConfig has {sorted(known)}"
                )
            self.logger = LoggingConfig(**{**LOGGER_DEFAULTS, **self.logger})
        if isinstance(self.hook_name, (list, tuple)) and len(self.hook_name) == 1:
            self.hook_name = self.hook_name[0]
        self.validate()

    def sized_to(self, n_images: int, tokens_per_image: int, d_in: int) -> tuple[VisionSAERunnerConfig, dict]:
        """This config with the `size_to_data` fields set from the data (training/sizing.py), and the values chosen
        (itself and {} when there are none)."""
        if not self.size_to_data:
            return self, {}
        chosen = self.d_sae or (
            None if "expansion_factor" in self.size_to_data else self.expansion_factor * d_in
        )
        values = sized_values(n_images, tokens_per_image, d_in, chosen)
        values = {k: v for k, v in values.items() if k in self.size_to_data}
        fields = {k: v for k, v in values.items() if not k.startswith("sae.")}
        sae = {**self.sae, **{k[4:]: v for k, v in values.items() if k.startswith("sae.")}}
        return dataclasses.replace(self, **fields, sae=sae, size_to_data=[]), values

    # -- derived ----------------------------------------------------------------------------------
    @property
    def hook_names(self) -> list[str]:
        names = [self.hook_name] if isinstance(self.hook_name, str) else list(self.hook_name)
        return list(dict.fromkeys(names))

    @property
    def total_training_steps(self) -> int:
        return self.training_tokens // self.train_batch_size_tokens

    @property
    def resolved_device(self) -> str:
        from sae_clip_plugin.model.device import resolve_device

        return resolve_device(self.device)

    def sae_kwargs(self) -> dict[str, Any]:
        """Architecture defaults merged with `sae`."""
        return {**SAE_DEFAULTS.get(self.architecture, {}), **self.sae}

    # -- checks that need nothing loaded -----------------------------------------------------------
    def validate(self) -> None:
        check_field_types(self)
        check_field_types(self.logger, prefix="logger")  # log_to_wandb: "false" must not turn wandb on
        self._check_sae_options()
        # checkpoints go beside the SAE, never into a stray ./checkpoints in the working directory
        if self.checkpoint_path == "auto":
            self.checkpoint_path = str(Path(self.output_path) / "checkpoints")
        if self.lr_end is None:
            self.lr_end = self.lr / 10
        if self.dead_feature_window is None:
            steps = self.training_tokens // max(self.train_batch_size_tokens, 1)
            self.dead_feature_window = min(DEFAULT_DEAD_WINDOW, max(1, steps // 20))
        self._check_ranges()
        check_token_selection(self.token_selection)
        if self.architecture not in TRAINING_ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {TRAINING_ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.normalize_activations is None:
            self.normalize_activations = (
                "expected_average_only_in" if self.architecture in TOPK_AUX_ARCHITECTURES else "layer_norm"
            )
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {NORMALIZATIONS}, got {self.normalize_activations!r}"
            )
        if (
            self.architecture in TOPK_AUX_ARCHITECTURES
            and self.normalize_activations in RUNTIME_NORMALIZATIONS
        ):
            raise ValueError(
                f"sae_lens' {self.architecture} auxiliary loss does not support normalize_activations="
                f"{self.normalize_activations!r} (it fails once features die); use 'expected_average_only_in' "
                "(the default for this architecture) or 'none'"
            )
        if self.cache_dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache_dtype must be one of {STORAGE_DTYPES}, got {self.cache_dtype!r}")
        if not self.hook_names:
            raise ValueError("hook_name is empty; name a hook such as 'blocks.6.hook_resid_post'")
        for name, value in (
            ("train_batch_size_tokens", self.train_batch_size_tokens),
            ("harvest_batch_size", self.harvest_batch_size),
            ("expansion_factor", self.expansion_factor),
            ("cache_shard_images", self.cache_shard_images),
            ("n_batches_in_buffer", self.n_batches_in_buffer),
            ("cache_chunk_images", self.cache_chunk_images),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.training_tokens < self.train_batch_size_tokens:
            raise ValueError(
                f"training_tokens ({self.training_tokens}) is smaller than one batch ({self.train_batch_size_tokens} "
                "tokens); raise training_tokens or lower train_batch_size_tokens"
            )
        steps = self.total_training_steps
        if self.lr_warm_up_steps + self.lr_decay_steps >= steps:
            raise ValueError(
                f"lr_warm_up_steps ({self.lr_warm_up_steps}) + lr_decay_steps ({self.lr_decay_steps}) leave no room in "
                f"{steps} training steps (training_tokens // train_batch_size_tokens); lower them or train longer"
            )
        if self.checkpoint_every_tokens is not None and self.checkpoint_every_tokens < 1:
            raise ValueError("checkpoint_every_tokens must be a positive number of tokens")
        if self.n_eval_images < 1:
            raise ValueError("n_eval_images must be >= 1")
        if not 0 <= self.activations_mixing_fraction <= 1:
            raise ValueError(
                f"activations_mixing_fraction must be in [0, 1], got {self.activations_mixing_fraction}"
            )
        k = self.sae_kwargs().get("k")
        if k is not None and self.d_sae is not None and k > self.d_sae:
            raise ValueError(f"k={k} active features cannot exceed d_sae={self.d_sae}; lower sae.k")

    def _check_sae_options(self) -> None:
        """`sae` holds keyword arguments of sae_lens' training config for the architecture: check them as fields."""
        if self.architecture not in TRAINING_ARCHITECTURES:
            return  # validate() names the valid architectures
        from sae_lens.registry import get_sae_training_class  # imports torch: only when a config is built

        _, cfg_cls = get_sae_training_class(self.architecture)
        from_fields = {  # sae_lens option -> the runner field that sets it
            "d_in": "hook_name (read from the model)",
            "d_sae": "d_sae or expansion_factor",
            "dtype": "sae_dtype",
            "device": "device",
            "metadata": "(written by the runner)",
            "apply_b_dec_to_input": "apply_b_dec_to_input",
            "normalize_activations": "normalize_activations",
            "decoder_init_norm": "decoder_init_norm",
        }
        for key in self.sae:
            if key in from_fields:
                raise ValueError(f"sae.{key} is set by the runner from {from_fields[key]}; set that instead")
        self.sae = check_mapping_types(dict(self.sae), cfg_cls, prefix=f"sae ({self.architecture})")

    def _check_ranges(self) -> None:
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("lr_end", self.lr_end, low=0)
        check_number("adam_beta1", self.adam_beta1, 0, 1, high_open=True)
        check_number("adam_beta2", self.adam_beta2, 0, 1, high_open=True)
        for name in (
            "lr_warm_up_steps",
            "lr_decay_steps",
            "n_checkpoints",
            "num_workers",
            "prefetch_batches",
        ):
            check_number(name, getattr(self, name), low=0)
        for name in ("n_restart_cycles", "dead_feature_window", "feature_sampling_window",
                     "n_batches_for_norm_estimate"):  # fmt: skip
            check_number(name, getattr(self, name), low=1)
        for name in ("wandb_log_frequency", "eval_every_n_wandb_logs"):
            check_number(f"logger.{name}", getattr(self.logger, name), low=1)
        if self.d_sae is not None:
            check_number("d_sae", self.d_sae, low=1)
        if self.max_images is not None:
            check_number("max_images", self.max_images, low=1)
        if self.sae_dtype != "float32":
            raise ValueError(
                f"sae_dtype={self.sae_dtype!r}: sae_lens trains the SAE's own parameters in this dtype, with no float32 "
                "master copy, and low-precision training ends in NaN; keep sae_dtype='float32' (use "
                "autocast_sae=True for mixed precision)"
            )
        if self.model_dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise ValueError(
                f"model_dtype must be one of float32, float16, bfloat16, float64, got {self.model_dtype!r}"
            )
        for key, value in self.sae.items():
            if key == "k":  # its type (int for topk, a number for batchtopk's average) is sae_lens' field's
                check_number("sae.k (active features per token)", value, low=1)
            if key.endswith("_coefficient") or key in ("l1_warm_up_steps",):
                check_number(f"sae.{key}", value, low=0)

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionSAERunnerConfig:
        """Build from a mapping; a `preset` key starts from that preset, the other keys override it."""
        data = renamed_fields(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields are {sorted(names)}")
        preset = data.get("preset")
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
            base = PRESETS[preset]
            merged_sae = {**base.get("sae", {}), **data.get("sae", {})}
            given = set(data) | {f"sae.{k}" for k in data.get("sae", {})}
            sized = [name for name in base.get("size_to_data", []) if name not in given]
            data = {**base, **data, "sae": merged_sae, "size_to_data": data.get("size_to_data", sized)}
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VisionSAERunnerConfig:
        """`VisionSAERunnerConfig.from_preset("topk", hook_name=..., dataset_path=...)`."""
        return cls.from_dict({"preset": name, **overrides})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> VisionSAERunnerConfig:
        """YAML or JSON file (YAML is a superset of JSON); `overrides` win over the file."""
        from sae_clip_plugin.yaml_files import load_yaml_file

        data = load_yaml_file(path) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
        data, overrides = renamed_fields(data), renamed_fields(overrides)
        nested = {
            key: {**(data.get(key) or {}), **(overrides.pop(key, None) or {})} for key in ("sae", "logger")
        }
        return cls.from_dict({**data, **overrides, **{k: v for k, v in nested.items() if v}})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")
