"""SteerabilityConfig: the settings of one steerability measurement (`sae-clip steerability`'s flags).

Torch-free, so `sae-clip --help` stays fast; `run_steerability(cfg)` (run.py) measures, viz.steerability_report
writes. Defaults are the paper's (arXiv 2504.08729, section 3) where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_clip_plugin.command_config import CommandConfig, finite_numbers, option, token_spec

WHAT, DATA, RUN, OUT = "what to steer", "images and readout", "steering", "output"


@dataclass
class SteerabilityConfig(CommandConfig):
    """What `sae-clip steerability` measures: an SAE's features, or the neurons at a hook, on a model or its
    randomly initialised control."""

    model: str | None = option(None, "model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, a registered name "
                               "such as toy, or random:<spec> (default: the SAE's metadata model_name)", group=WHAT)  # fmt: skip
    sae: str | None = option(None, "SAE: a sae_lens folder, a Prisma .pt file, or RELEASE:SAE_ID", group=WHAT)
    neurons: bool = option(False, "steer the neurons at --hook instead (baseline)", group=WHAT)
    hook: str | None = option(None, "hook name (neurons; overrides the SAE's hook)", group=WHAT)
    random_model: bool = option(False, "randomly re-initialise the image tower (control)", group=WHAT)
    random_seed: int = option(0, "seed of the random image tower", group=WHAT)
    images: str | None = option(None, "images: a folder, a datasets save_to_disk folder, hf:<hub name>, or a "
                                "registered name (default: the model's own registered images, e.g. toy)", group=DATA)  # fmt: skip
    split: str = option("validation", "split of a hub / datasets source", group=DATA)
    max_images: int = option(192, "images of --images to average over (paper: 192)", group=DATA)
    vocabulary: str | None = option(None, "imagenet | a registered name (toy, toy-concepts) | toy,imagenet | "
                                    "word-per-line file | JSON list (default: the model's registered vocabulary, else "
                                    "imagenet)", group=DATA)  # fmt: skip
    readout_scale: float | None = option(None, "softmax scale of the readout (default: the model's learned logit "
                                         "scale: the paper's 100 on ViT-B/32, 18 on the toy)", group=DATA)  # fmt: skip
    features: str = option("0.05", "fraction (0.05), count (200) or comma list (3,17,42)", group=RUN)
    strength: float | None = option(None, "absolute value each feature is set to (the paper's: 150); default: "
                                    "--relative-strength", group=RUN)  # fmt: skip
    relative_strength: float | None = option(None, "strength relative to the hook's typical activation norm "
                                             "(default 5.41, which is the paper's 150 on ViT-B/32 SAEs; carries over "
                                             "between models)", group=RUN)  # fmt: skip
    threshold: float = option(0.10, "a feature is steerable when S > this (the paper's)", group=RUN)
    tokens: str | list[int] = option("all", "all | cls | patches | comma list of positions (from 0)", parse=token_spec,
                                     group=RUN)  # fmt: skip
    mode: str = option(
        "set", "set (clamp), add to, or scale the feature", choices=["set", "add", "scale"], group=RUN
    )
    no_error_term: bool = option(False, "drop the SAE error term when steering", group=RUN)
    strengths: list[float] | None = option(None, "comma list of strengths: also write steering curves",
                                           parse=finite_numbers, group=RUN)  # fmt: skip
    curve_features: int = option(8, "features for the steering curves", group=RUN)
    method: str = option("fast", "fast: shared cached prefix; naive: one forward per feature; same numbers",
                         choices=["fast", "naive"], group=RUN)  # fmt: skip
    batch_size: int = option(256, "rows (features x images) per forward", group=RUN)
    seed: int = option(0, "feature sampling seed (the images are drawn with seed + 1)", group=RUN)
    device: str = option(
        "auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, ...", group=RUN
    )
    out: str | None = option(None, "output folder", group=OUT, required=True)
    json: bool = option(False, "print the summary as JSON instead of one line", group=OUT)
    prefix: str = option("steerability", "file name prefix of the outputs", group=OUT)

    def parsed_features(self) -> float | int | list[int]:
        """--features as the measurement takes it: a fraction, a count, or feature indices."""
        text = self.features.strip()
        if "," in text:
            return [int(x) for x in text.split(",") if x.strip()]
        if "." in text or "e" in text.lower():
            return float(text)
        return int(text)
