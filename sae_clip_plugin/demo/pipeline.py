"""`sae-clip demo`: harvest, train, measure, steer, disentangle, dashboard, report; each step resumable.

    from sae_clip_plugin.demo import DemoConfig, run_demo
    run_demo(DemoConfig.make("out/demo", fast=True))

Outputs (DIR = cfg.out):

    cache/                       activations at the trained hooks (sae_lens cached-activation layout)
    saes/<arch>/<hook>/          trained SAEs in sae_lens format (topk and standard)
    metrics/                     metrics.csv, metrics.md, figures/*.png (sae-clip eval's outputs)
    steerability/                per-run tables, summary.csv/.md, steering curves and S-vs-P figures
    disentangle/                 disentangle.csv/.md, summary.json, accuracy_by_layer_<task>.png
    dashboard.html, figures/     feature dashboards (self-contained page) and their card figures
    report.md, report.html       the report of everything above
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from sae_clip_plugin.analysis.disentangle.config import DisentangleConfig
from sae_clip_plugin.analysis.steerability.config import SteerabilityConfig
from sae_clip_plugin.analysis.vocabulary import load_vocabulary, text_embeddings
from sae_clip_plugin.atomic import atomic_write_text
from sae_clip_plugin.demo.config import DemoConfig
from sae_clip_plugin.demo.data import DemoData
from sae_clip_plugin.demo.state import DemoState, write_json
from sae_clip_plugin.model.random_init import random_vision_model
from sae_clip_plugin.viz.metrics_report import SUMMARY_COLUMNS, write_metrics_results
from sae_clip_plugin.viz.steerability_report import write_steerability

if TYPE_CHECKING:  # annotations only: the model classes pull in sae_lens, open_clip and transformers
    from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT
    from sae_clip_plugin.model.hooked_vit import HookedViT

STEPS = (
    ("harvest", "harvest activations"),
    ("train_topk", "train TopK SAEs"),
    ("train_standard", "train standard (ReLU + L1) SAEs"),
    ("metrics", "SAE metrics"),
    ("steerability", "steerability"),
    ("disentangle", "disentanglement"),
    ("dashboard", "feature dashboards"),
    ("report", "report"),
)
CURVE_STRENGTHS = (0.0, 25.0, 50.0, 100.0, 150.0, 200.0, 300.0)


class DemoRun:
    """One demo folder: the model is loaded only when a step that needs it has not run yet."""

    def __init__(
        self, cfg: DemoConfig, model: HookedViT | None = None, log: Callable[[str], None] = print
    ) -> None:
        self.cfg = cfg
        self.root = Path(cfg.out)
        self.state = DemoState(cfg, log)
        self.log = log
        self._model = model
        self._data: DemoData | None = None

    # -- lazily loaded ---------------------------------------------------------------------------
    @property
    def model(self) -> HookedSAEViT:
        """A HookedSAEViT (metrics splice SAEs into it; every other step uses it as a HookedViT)."""
        from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT  # lazy: sae_lens, open_clip

        if self._model is None:
            self.log(f"loading model {self.cfg.model_spec} ...")
            self._model = HookedSAEViT.from_pretrained(self.cfg.model_spec, device=self.cfg.device)
        elif not isinstance(self._model, HookedSAEViT):
            self._model = HookedSAEViT.from_hooked_vit(self._model)
        return self._model.eval()

    @property
    def data(self) -> DemoData:
        if self._data is None:
            self._data = DemoData(self.cfg, self.model)
        return self._data

    @property
    def layers(self) -> list[int]:
        if self.state.done("harvest"):
            return list(self.state.result("harvest")["layers"])
        return self.cfg.choose_layers(self.model.cfg.n_layers)

    @property
    def hooks(self) -> list[str]:
        return [f"blocks.{layer}.{self.cfg.hook_type}" for layer in self.layers]

    @property
    def middle_hook(self) -> str:
        hooks = self.hooks
        return hooks[(len(hooks) - 1) // 2]

    @property
    def relative_setting(self) -> str:
        """The label (and file-name part) of the steerability runs at the model-relative strength."""
        return f"relative {self.cfg.steer_relative_strength:g}"

    def sae_dir(self, arch: str, hook: str) -> Path:
        return self.root / "saes" / arch / hook

    def load_sae(self, arch: str, hook: str) -> Any:
        from sae_lens import SAE  # lazy: sae_lens

        return SAE.load_from_disk(str(self.sae_dir(arch, hook)), device=self.cfg.device).eval()

    # -- the run ---------------------------------------------------------------------------------
    def run(self, force: bool = False) -> dict[str, Path]:
        if self.cfg.layers is not None:
            self.cfg.choose_layers(self.model.cfg.n_layers)  # bad --layers fail before anything is touched
        self.state.open(force=force)
        self.state.marker("report").unlink(missing_ok=True)  # cheap, from the files: always written anew
        steps = [(n, t) for n, t in STEPS if not n.startswith("train_") or n[6:] in self.cfg.architectures]
        start = time.perf_counter()
        for i, (name, title) in enumerate(steps, 1):
            self.state.step(name, title, getattr(self, f"step_{name}"), i, len(steps))
        self.log(f"demo finished in {time.perf_counter() - start:.1f} s: {self.root / 'report.md'}")
        return {"report": self.root / "report.md", "html": self.root / "report.html",
                "dashboard": self.root / "dashboard.html"}  # fmt: skip

    # -- steps -----------------------------------------------------------------------------------
    def step_harvest(self) -> dict[str, Any]:
        # lazy: torchvision (sae_clip_plugin.data)
        from sae_clip_plugin.training.cache import write_activation_cache
        from sae_clip_plugin.training.harvest import ActivationHarvester

        layers = self.cfg.choose_layers(self.model.cfg.n_layers)
        hooks = [f"blocks.{layer}.{self.cfg.hook_type}" for layer in layers]
        source = self.data.train_source()
        harvester = ActivationHarvester(self.model, hooks, "all", batch_size=64, num_workers=0)
        cache = write_activation_cache(
            self.root / "cache", self.model, source, hooks, "all", storage_dtype="float16",
            shard_images=self._shard_images(), harvester=harvester,
        )  # fmt: skip
        return {"layers": layers, "hooks": hooks, "n_images": cache.n_images, "dataset": source.describe(),
                "tokens_per_image": cache.context_size}  # fmt: skip

    def _shard_images(self) -> int:
        return max(16, min(512, self.cfg["n_train_images"] // 4))

    def _output_path(self, arch: str) -> Path:
        """The runner saves one SAE at output_path itself, several at output_path/<hook>."""
        hooks = self.hooks
        return self.sae_dir(arch, hooks[0]) if len(hooks) == 1 else self.root / "saes" / arch

    def _runner_config(self, arch: str) -> Any:
        from sae_clip_plugin.training.config import VisionSAERunnerConfig  # lazy: sae_lens

        b = self.cfg.budgets
        common = dict(
            model_name=self.cfg.model_spec, hook_name=self.hooks, token_selection="all",
            dataset_path=self.data.dataset_spec, max_images=b["n_train_images"], harvest_batch_size=64, num_workers=0,
            cached_activations_path=str(self.root / "cache"), cache_dtype="float16", cache_shard_images=self._shard_images(),
            expansion_factor=b["expansion_factor"], training_tokens=b["training_tokens"],
            train_batch_size_tokens=b["train_batch_size_tokens"], lr=b["lr"], lr_warm_up_steps=b["lr_warm_up_steps"],
            device=self.cfg.device, output_path=str(self._output_path(arch)), overwrite_output=True,
            checkpoint_path=None, n_eval_images=min(64, b["n_train_images"]), seed=self.cfg.seed,
            prefetch_batches=0, n_batches_in_buffer=4,
        )  # fmt: skip
        if arch == "topk":
            topk = {**common, "lr": b["topk_lr"], "decoder_init_norm": b["topk_decoder_init_norm"]}
            sae = {"k": b["topk_k"], "aux_loss_coefficient": b["topk_aux_loss_coefficient"]}
            return VisionSAERunnerConfig.from_preset("topk", sae=sae, **topk)
        return VisionSAERunnerConfig.from_dict({**common, "sae": {"l1_coefficient": b["l1_coefficient"]}})

    def _train(self, arch: str) -> dict[str, Any]:
        from sae_clip_plugin.training.runner import VisionSAETrainingRunner  # lazy: the sae_lens trainer

        cfg = self._runner_config(arch)
        runner = VisionSAETrainingRunner(cfg, override_model=self.model)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exceeds the .* tokens of one pass.*")
            runner.run()
        final = runner.eval_log[-1]["metrics"] if runner.eval_log else {}
        out = {}
        for hook in cfg.hook_names:
            target = runner.output_dir(hook)
            metrics = final.get(hook, {})
            out[hook] = {
                "path": str(target),
                **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        return {"architecture": arch, "saes": out, "training_tokens": cfg.training_tokens,
                "d_sae": cfg.d_sae or cfg.expansion_factor * self.model.cfg.d_model, "sae": cfg.sae_kwargs()}  # fmt: skip

    def step_train_topk(self) -> dict[str, Any]:
        return self._train("topk")

    def step_train_standard(self) -> dict[str, Any]:
        return self._train("standard")

    def step_metrics(self) -> dict[str, Any]:
        from sae_clip_plugin.analysis.metrics.evaluate import evaluate_saes  # lazy: sae_lens

        images, classnames, templates = self.data.metric_images()
        saes = {f"{arch}/L{layer}": self.sae_dir(arch, hook) for arch in self.cfg.architectures
                for layer, hook in zip(self.layers, self.hooks, strict=True)}  # fmt: skip
        df = evaluate_saes(self.model, saes, images, classnames=classnames, templates=templates,
                           batch_size=64, max_images=self.cfg["n_metric_images"], progress=True)  # fmt: skip
        columns = ["name", "architecture", *[c for c in SUMMARY_COLUMNS if c != "name"]]
        # sae-clip eval's writer; the report needs the sweep-level figures only
        figures = write_metrics_results(df, self.root / "metrics", f"SAE metrics ({self.cfg.model_spec})", columns,
                                        per_sae_figures=False)  # fmt: skip
        return {"n_saes": len(saes), "n_images": int(df["n_images"].iloc[0]),
                "figures": [str(p.relative_to(self.root)) for p in figures]}  # fmt: skip

    def steerability_config(self, **settings: Any) -> Any:
        """The `sae-clip steerability` settings of one demo run (the CLI with these gives the same files)."""
        return SteerabilityConfig(model=self.cfg.model_spec, images=self.data.dataset_spec, vocabulary=self.data.vocabulary,
                                  max_images=self.cfg["n_steer_images"], seed=self.cfg.seed, device=self.cfg.device,
                                  out=str(self.root / "steerability"), **settings)  # fmt: skip

    def steerability_plan(self, saes: dict[str, Any]) -> list[tuple[str, str, Any]]:
        """(run, strength setting, SteerabilityConfig) of every steerability run: each architecture's SAE, the
        neurons, and the first SAE on the random control, at the model-relative strength and the paper's absolute s.
        `sae-clip steerability` with one of these configs writes the same files as the demo."""
        hook, n, first = self.middle_hook, self.cfg["n_steer_features"], self.cfg.architectures[0]
        settings = {
            self.relative_setting: {"relative_strength": self.cfg.steer_relative_strength},
            f"absolute {self.cfg.steer_strength:g}": {"strength": self.cfg.steer_strength},
        }
        plan = []
        for setting, strength in settings.items():
            what = [
                (f"{arch} SAE", {"sae": str(self.sae_dir(arch, hook))}, sae.cfg.d_sae)
                for arch, sae in saes.items()
            ]
            what.append(("neurons", {"neurons": True, "hook": hook}, self.model.cfg.d_model))
            what.append((f"{first} SAE on a random model", {"sae": str(self.sae_dir(first, hook)), "random_model": True,
                         "random_seed": self.cfg.seed}, saes[first].cfg.d_sae))  # fmt: skip
            for name, settings_of_run, width in what:
                cfg = self.steerability_config(features=str(min(n, width)), prefix=_slug(f"{name} {setting}"),
                                               **settings_of_run, **strength)  # fmt: skip
                plan.append((name, setting, cfg))
        return plan

    def step_steerability(self) -> dict[str, Any]:
        # lazy: sae_lens, matplotlib
        from sae_clip_plugin.analysis.resolve import ResolvedRun
        from sae_clip_plugin.analysis.steerability.metric import steering_curves
        from sae_clip_plugin.analysis.steerability.run import run_steerability, steerability_pixels
        from sae_clip_plugin.viz.steering_figures import plot_steerability_scatter, plot_steering_curves

        out = self.root / "steerability"
        hook, spec, device = self.middle_hook, self.cfg.model_spec, self.cfg.device
        words = load_vocabulary(self.data.vocabulary)
        runs: dict[tuple[str, str], Any] = {}
        with torch.inference_mode():
            trained = ResolvedRun(self.model, spec, device, hook=hook, images=self.data.dataset_spec)
            pixels = steerability_pixels(self.steerability_config(), trained)
            text = text_embeddings(self.model, words)
            saes = {arch: self.load_sae(arch, hook) for arch in self.cfg.architectures}
            first = self.cfg.architectures[0]
            control = ResolvedRun(random_vision_model(self.model, seed=self.cfg.seed), f"random:{spec}", device,
                                  {hook: saes[first]}, hook=hook)  # fmt: skip
            for name, setting, cfg in self.steerability_plan(saes):
                if cfg.random_model:
                    inputs = control
                elif cfg.neurons:
                    inputs = trained
                else:
                    inputs = ResolvedRun(self.model, spec, device, {hook: saes[name.split()[0]]}, hook=hook)
                run = run_steerability(cfg, inputs=inputs, pixels=pixels, text=text)
                write_steerability(run, out)
                runs[name, setting] = run.result
            del control
            main = self.relative_setting
            table = runs[f"{first} SAE", main].table.sort_values("S", ascending=False)
            top = table["feature"].head(self.cfg["n_curve_features"]).tolist()
            curves = steering_curves(self.model, saes[first], pixels, words, top, CURVE_STRENGTHS, text=text)
        rows = []
        for (name, setting), result in runs.items():
            s = result.summary
            top_concepts = ", ".join(f"{k} ({v})" for k, v in list(s["top_concepts"].items())[:5])
            rows.append({"run": name, "strength": setting, "mean_absolute_strength": s["mean_strength"], "hook": hook,
                         "n_features": s["n_features"], "n_steerable": s["n_steerable"],
                         "steerable_fraction": s["steerable_fraction"], "coverage": s["coverage"], "mean_S": s["mean_S"],
                         "top_concepts": top_concepts, **_versus_control(runs, name, setting)})  # fmt: skip
        import pandas as pd  # lazy: pandas

        summary = pd.DataFrame(rows)
        atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
        atomic_write_text(out / "curves.csv", curves.to_csv(index=False))
        _save_pyplot(plot_steering_curves(curves, 0.10), out / "steering_curves.png")
        scatter = {name: r.table for (name, setting), r in runs.items() if setting == main}
        _save_pyplot(plot_steerability_scatter(scatter, 0.10), out / "s_vs_p.png")
        readout = runs[f"{first} SAE", main].summary["readout_scale"]
        return {"hook": hook, "rows": rows, "n_images": len(pixels), "vocabulary_size": len(words),
                "strength": self.cfg.steer_strength, "relative_strength": self.cfg.steer_relative_strength,
                "readout_scale": readout}  # fmt: skip

    def step_disentangle(self) -> dict[str, Any]:
        # lazy: sae_lens, matplotlib
        from sae_clip_plugin.analysis.disentangle.evaluate import run_disentangle
        from sae_clip_plugin.viz.disentangle_report import write_disentangle_outputs

        names = self.data.task_names()
        if not names:
            return {"tasks": [], "note": "no task: the image folder has no class subfolders"}
        arch = self.cfg.disentangle_architecture
        saes = {hook: self.load_sae(arch, hook) for hook in self.hooks}
        b = self.cfg.budgets
        dcfg = DisentangleConfig(ks=tuple(b["disentangle_ks"]), n_random=b["n_random"], n_heads=tuple(b["n_heads"]),
                                 batch_size=64)  # fmt: skip
        results = []
        with torch.inference_mode():
            for name in names:
                task = self.data.task(name)
                results.append((run_disentangle(self.model, saes, task, dcfg, progress=True), task))
        command = f"sae-clip demo --out {self.cfg.out}" + (" --fast" if self.cfg.fast else "")
        write_disentangle_outputs(results, self.root / "disentangle", command)
        return {"architecture": arch, "tasks": [{"task": r.task, "kind": r.kind, "summary": r.summary,
                                                  "best": r.best} for r, _ in results]}  # fmt: skip

    def _dashboard_features(self, pixels: torch.Tensor) -> list[tuple[str, str, list[int], list[str]]]:
        """(hook, title, features, labels) per dashboard section: the most steerable features that fire on
        the dashboard images (a dead feature steers too, through its decoder row, but shows no image), and
        the features suppressed against typographic attacks."""
        # lazy: pandas, matplotlib
        import pandas as pd

        from sae_clip_plugin.viz.dashboard import feature_activations

        first = self.cfg.architectures[0]
        hook = self.middle_hook
        k = self.cfg["n_dashboard_features"]
        relative = self.relative_setting
        table = pd.read_csv(self.root / "steerability" / f"{_slug(f'{first} SAE {relative}')}.csv")
        table = table.sort_values("S", ascending=False).head(4 * k)
        candidates = [int(f) for f in table["feature"]]
        peaks = torch.nan_to_num(
            feature_activations(self.model, self.load_sae(first, hook), pixels, candidates), nan=0.0
        )
        live = [f for f, peak in zip(candidates, peaks.amax(dim=(0, 1)).tolist(), strict=True) if peak > 0]
        chosen = (live or candidates)[:k]
        # the card's own steering (same relative strength) gives the concept; the label only says why it is shown
        sections = [(hook, f"Most steerable {first} SAE features at {hook} (that fire on these images)", chosen,
                     [f"among the most steerable at {relative}" for _ in chosen])]  # fmt: skip
        disentangle = self.state.result("disentangle")
        for task in disentangle.get("tasks", []):
            sae = task["summary"].get("sae")
            if (
                task["kind"] == "typographic"
                and sae
                and sae.get("features")
                and disentangle["architecture"] == first
            ):
                feats = [int(f) for f in str(sae["features"]).split()][:k]
                sections.append((sae["hook"], f"Features suppressed against typographic attacks ({task['task']})",
                                 feats, ["chosen to suppress: separates attacked from clean images (AUROC)"]
                                 * len(feats)))  # fmt: skip
        return sections

    def step_dashboard(self) -> dict[str, Any]:
        # lazy: torchvision (sae_clip_plugin.data), matplotlib
        from sae_clip_plugin.analysis.pixels import as_pixels
        from sae_clip_plugin.viz.dashboard import collect_dashboard_data, plot_feature, write_dashboard
        from sae_clip_plugin.viz.metrics_figures import save_figure

        pixels = as_pixels(self.model, self.data.dashboard_images())
        first = self.cfg.architectures[0]
        dashboards, figures = [], []
        with torch.inference_mode():
            sections = self._dashboard_features(pixels)
            for hook, title, feats, labels in tqdm(sections, desc="feature dashboards", unit="section"):
                data = collect_dashboard_data(
                    self.model, self.load_sae(first, hook), pixels, feats, labels=labels,
                    n_top=self.cfg["n_top_images"], vocabulary=self.data.vocabulary, strength="relative",
                    n_steer_images=self.cfg["n_steer_images"], title=title,
                )  # fmt: skip
                dashboards.append(data)
                path = self.root / "figures" / f"feature_{_slug(hook)}_{feats[0]}.png"
                save_figure(plot_feature(data.features[0]), path)
                figures.append(str(path.relative_to(self.root)))
        write_dashboard(dashboards, self.root / "dashboard.html", title="sae-clip demo: feature dashboards")
        return {"sections": [{"hook": d.hook_name, "title": d.title, "features": [f.feature for f in d.features]}
                             for d in dashboards], "figures": figures}  # fmt: skip

    def step_report(self) -> dict[str, Any]:
        from sae_clip_plugin.demo.report import build_report  # lazy: matplotlib

        timings = {name: self.state.timings.get(name) for name, _ in STEPS}
        report = build_report(self.root, self.cfg, self.state, timings)
        md, page = report.write(self.root)
        write_json(self.root / "state" / "timings.json", timings)
        return {"report": str(md), "html": str(page)}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_")


def _save_pyplot(fig: Any, path: Path) -> None:
    from sae_clip_plugin.viz.metrics_figures import save_figure  # lazy: matplotlib

    save_figure(fig, path)
    with contextlib.suppress(Exception):
        import matplotlib.pyplot as plt  # lazy: matplotlib

        plt.close(fig)


def run_demo(
    cfg: DemoConfig,
    model: HookedViT | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Run (or resume) the demo described by `cfg`; `model` replaces loading `cfg.model_spec`."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    return DemoRun(cfg, model=model, log=log).run(force=force)


def _versus_control(runs: dict[tuple[str, str], Any], name: str, setting: str) -> dict[str, float]:
    """For an SAE's run on the random model: the trained SAE's steerable fraction minus it (same features, paired),
    with its 95% bootstrap interval over features (`analysis.steerability.compare`); {} for any other run."""
    from sae_clip_plugin.analysis.steerability.compare import bootstrap_mean  # lazy: sae_lens

    trained = runs.get((name.removesuffix(" on a random model"), setting))
    if not name.endswith(" on a random model") or trained is None:
        return {}

    def flags(result: Any) -> dict[int, Any]:
        return {0: result.table.set_index("feature")["steerable"].astype(float)}

    diff, lo, hi = bootstrap_mean(flags(trained), flags(runs[name, setting]))
    return {"trained_minus_control": diff, "trained_minus_control_lo": lo, "trained_minus_control_hi": hi}
