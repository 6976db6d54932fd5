"""The demo's report: what each step produced, as tables and figures, from the files in the demo folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_clip_plugin.analysis.disentangle.text import (
    INTERVAL_NOTE,
    TABLE_KEYS,
    bars_text,
    column_names,
    condition_rows,
    headline,
)
from sae_clip_plugin.demo.config import DemoConfig
from sae_clip_plugin.demo.state import DemoState
from sae_clip_plugin.viz.report import FigureRef, Report, Section, Table

# the report shows these (every column is in metrics/metrics.csv); short headers so the table fits a page
METRIC_COLUMNS = {"name": "SAE", "explained_variance_all": "EV all", "explained_variance_cls": "EV CLS",
                  "explained_variance_patches": "EV patches", "l0_cls": "L0 CLS", "l0_patches": "L0 patches",
                  "dead_fraction": "dead %", "top1_clean": "top-1 clean %", "top1_spliced": "top-1 spliced %",
                  "ce_recovered_mean": "CE recovered"}  # fmt: skip
PERCENT_COLUMNS = ("dead_fraction", "top1_clean", "top1_spliced")
METRIC_FIGURES = (
    ("l0_by_layer.png", "L0 of the CLS token vs patch tokens across layers (the paper's sparsity figure)"),
    ("ev_vs_l0.png", "Explained variance against L0"),
    ("density_histogram.png", "Feature firing density (log10); each SAE's label counts its dead features"),
    (
        "l0_position_heatmaps.png",
        "L0 per patch position of the SAEs whose L0 varies (TopK SAEs have L0 = k on "
        "every token, so they are not shown); CLS L0 in the titles",
    ),
)


def _percent(value: Any) -> str:
    """A fraction as a percent cell with one decimal ("" when missing)."""
    if value is None or value != value:
        return ""
    return f"{100 * float(value):.1f}"


def _intro(root: Path, cfg: DemoConfig, state: DemoState) -> list[str]:
    harvest = state.result("harvest")
    images = (
        "the toy world (rendered shapes, colours, backgrounds and words)"
        if cfg.is_toy_world
        else f"`{cfg.images}`"
    )
    mode = "`--fast` (tiny budgets: a smoke test, not meaningful numbers)" if cfg.fast else "full"
    return [
        f"Model `{cfg.model_spec}`; images: {images}; budgets: {mode}. SAEs at "
        + ", ".join(f"`{h}`" for h in harvest.get("hooks", []))
        + f", trained on {harvest.get('n_images')} images x {harvest.get('tokens_per_image')} tokens (CLS + patches).",
        "Everything here was computed offline on this machine. Feature dashboards: [dashboard.html](dashboard.html); "
        "tables as CSV under `metrics/`, `steerability/` and `disentangle/`; SAEs (sae_lens format) under `saes/`.",
    ]


def _training(cfg: DemoConfig, state: DemoState) -> Section:
    rows = []
    for arch in cfg.architectures:
        result = state.result(f"train_{arch}")
        setting = ", ".join(f"{k}={v}" for k, v in result.get("sae", {}).items())
        for hook, info in result.get("saes", {}).items():
            rows.append([arch, hook, result.get("d_sae"), setting, result.get("training_tokens"),
                         info.get("explained_variance"), info.get("l0"), _percent(info.get("dead_fraction_eval"))])  # fmt: skip
    return Section(
        "SAEs trained",
        text=[
            "Trained with sae_lens' trainer on the cached activations (`saes/<architecture>/<hook>/`); the numbers "
            "are the runner's own evaluation on held images, in the model's units."
        ],
        tables=[
            Table(
                [
                    "architecture",
                    "hook",
                    "d_sae",
                    "setting",
                    "training tokens",
                    "explained variance",
                    "L0",
                    "dead %",
                ],
                rows,
            )
        ],
    )


def _metrics(root: Path) -> Section:
    import pandas as pd  # lazy: pandas

    df = pd.read_csv(root / "metrics" / "metrics.csv")
    figures = [FigureRef(f"metrics/figures/{name}", caption) for name, caption in METRIC_FIGURES
               if (root / "metrics" / "figures" / name).is_file()]  # fmt: skip
    n = int(df["n_images"].iloc[0]) if len(df) else 0
    for column in PERCENT_COLUMNS:  # fractions in the CSV, percent on the page like every other report table
        df[column] = df[column].map(_percent)
    return Section(
        "Metrics",
        text=[
            f"Reconstruction, sparsity by token type and zero-shot effect of splicing each SAE, over {n} images "
            "(`metrics/metrics.csv` has every column). EV: explained variance; L0: active features per token; dead: "
            "percentage of features that never fired on these images (on the toy world: shapes without text, so features of written words count as dead here; the SAEs-trained table above gives it on held-out training images); top-1: zero-shot accuracy of the clean model and "
            "with the SAE spliced in (no error term); CE recovered = (mean-ablated CE - spliced CE) / (mean-ablated "
            "CE - clean CE)."
        ],
        tables=[Table.from_frame(df, list(METRIC_COLUMNS), headers=METRIC_COLUMNS)],
        figures=figures,
    )


def _control_comparison(rows: list[dict[str, Any]]) -> list[str]:
    """What the random-model control says, per strength, in words: the verdict is the 95% interval of the trained
    SAE's steerable fraction minus the same features' on the random model (paired bootstrap over features)."""
    out = []
    for setting in dict.fromkeys(r.get("strength") for r in rows):
        runs = [r for r in rows if r.get("strength") == setting]
        control = next((r for r in runs if r["run"].endswith("on a random model")), None)
        sae = (
            next((r for r in runs if r["run"] == control["run"].removesuffix(" on a random model")), None)
            if control
            else None
        )
        if sae is None:
            continue
        head = (
            f"At {setting}: {sae['run']} {100 * sae['steerable_fraction']:.0f}% steerable (mean S {sae['mean_S']:.3f}), "
            f"the same features on the random model {100 * control['steerable_fraction']:.0f}% (mean S "
            f"{control['mean_S']:.3f})"
        )
        if "trained_minus_control" not in control:  # a state written before the interval existed
            out.append(head + ".")
            continue
        diff, lo, hi = (100 * control[f"trained_minus_control{k}"] for k in ("", "_lo", "_hi"))
        interval = f"difference {diff:+.0f} points, 95% interval [{lo:+.0f}, {hi:+.0f}] over features"
        if lo > 0:
            verdict = "the trained model is more steerable than the control (the interval is above 0)."
        elif hi < 0:
            verdict = ("the control is more steerable (the interval is below 0): the readout saturates at this "
                       "strength, so here steerability does not measure steering towards concepts.")  # fmt: skip
        else:
            verdict = ("no difference resolved at this budget (the interval contains 0): more features or images "
                       "would tell.")  # fmt: skip
        out.append(f"{head}: {interval}; {verdict}")
    return out


STEERABILITY_COLUMNS = [
    "run", "strength", "mean s", "features", "steerable", "steerable %", "coverage", "mean S", "top concepts (count)"
]  # fmt: skip


def _steerability(root: Path, state: DemoState) -> Section:
    result = state.result("steerability")
    rows = [[r["run"], r.get("strength", f"absolute {result.get('strength'):g}"), r.get("mean_absolute_strength"),
             r["n_features"], r["n_steerable"], _percent(r["steerable_fraction"]), r["coverage"], r["mean_S"], r["top_concepts"]]
            for r in result.get("rows", [])]  # fmt: skip
    relative = result.get("relative_strength")
    return Section(
        "Steerability",
        text=[
            f"Each feature (or neuron) at `{result.get('hook')}` clamped on all tokens, error term kept; readout over "
            f"{result.get('vocabulary_size')} words on {result.get('n_images')} images (the paper's steerability "
            "metric; arXiv 2504.08729, section 3), softmax scale "
            f"{result.get('readout_scale', 100.0):.3g} (the model's learned logit scale; the paper's 100 is "
            "ViT-B/32's). Steerable: S > 0.10. The random model is the same architecture "
            "re-initialised (control). Two strengths: the paper's absolute s = "
            f"{result.get('strength'):g}, and the model-relative strength {relative} (each feature's decoded edit "
            f"{relative} times as long as a typical input at the hook; this is s = 150 on the paper's ViT-B/32 SAEs).",
            *_control_comparison(result.get("rows", [])),
        ],
        tables=[Table(STEERABILITY_COLUMNS, rows)],
        figures=[
            FigureRef("steerability/s_vs_p.png", f"S against P per feature (relative strength {relative})"),
            FigureRef(
                "steerability/steering_curves.png",
                "S against absolute strength for the most steerable features",
            ),
        ],
    )


def _disentangle(root: Path, cfg: DemoConfig, state: DemoState) -> Section:
    result = state.result("disentangle")
    tasks = result.get("tasks", [])
    if not tasks:
        return Section("Disentanglement", text=[result.get("note", "no task ran")])
    tables, figures = [], []
    for task in tasks:
        s = task["summary"]
        caption = f"{task['task']} ({task['kind']})" + (
            f": {headline(s, task['kind'])}" if "sae" in s else ""
        )
        keys = TABLE_KEYS[task["kind"]]
        tables.append(Table(["condition", "layer", "setting", *column_names(keys)], condition_rows(s, task["kind"]),
                            caption=caption))  # fmt: skip
        png = f"disentangle/accuracy_by_layer_{task['task'].replace('/', '_')}.png"
        if (root / png).is_file():
            figures.append(FigureRef(png, f"{task['task']}: accuracy by layer"))
    harvest = state.result("harvest")
    text = [
        f"Spurious {result.get('architecture')} SAE features (ranked by AUROC on a selection split) clamped to 0 "
        "at one layer, error term kept; layer and k chosen on the selection split, numbers on a disjoint "
        "evaluation split. Baselines: k random live features; Dyslexify-style head ablation for typographic "
        "attacks. Details per layer: [disentangle/disentangle.md](disentangle/disentangle.md).",
        bars_text((task["kind"], task["summary"]) for task in tasks),
        INTERVAL_NOTE,
    ]
    if cfg.is_toy_world:
        d_sae = state.result(f"train_{result.get('architecture')}").get("d_sae", "?")
        text.append(
            f"The demo's budget: SAEs of {d_sae} features at {len(harvest.get('hooks', []))} layers, "
            f"{cfg['n_disentangle']} pairs (typographic) or images per group in each split. The reference run in the "
            "project's docs/toy_results.md uses 1024 features at all 6 layers and 300 per split, so its numbers (and "
            "which settings meet the bar) differ from these."
        )
    return Section("Disentanglement", text=text, tables=tables, figures=figures)


def _dashboard(state: DemoState) -> Section:
    result = state.result("dashboard")
    text = [
        f"[dashboard.html](dashboard.html): {s['title']} (features {', '.join(map(str, s['features']))})"
        for s in result.get("sections", [])
    ]
    text.append(
        "Each card: the top-activating images with the feature's activation on every patch overlaid, the "
        "activation histogram, and the concepts gained in the readout when the feature is clamped at the "
        "model-relative steering strength (the one of the steerability section; error term kept). A feature of an "
        "SAE that reads only the CLS token has no patch heat map (the card says so)."
    )
    caption = "A dashboard card: top images with the patch heatmap, activation histogram, concepts gained when steered"
    return Section(
        "Feature dashboards", text=text, figures=[FigureRef(p, caption) for p in result.get("figures", [])]
    )


def _timing(state: DemoState, timings: dict[str, Any]) -> Section:
    """Wall and CPU seconds per step (CPU counts every thread; on a busy machine wall >> CPU / threads)."""
    rows = []
    for name, seconds in timings.items():
        if seconds is None:
            continue
        cpu = state.cpu_timings.get(name)
        rows.append([name, round(seconds, 1), None if cpu is None else round(cpu, 1)])
    total = ["total (before the report)", round(sum(r[1] for r in rows), 1),
             round(sum(r[2] or 0.0 for r in rows), 1)]  # fmt: skip
    return Section(
        "Timing", tables=[Table(["step", "wall seconds", "CPU seconds"], [*rows, total], digits=1)]
    )


def build_report(root: Path, cfg: DemoConfig, state: DemoState, timings: dict[str, Any]) -> Report:
    report = Report("sae-clip demo", intro=_intro(root, cfg, state))
    report.add(_training(cfg, state))
    report.add(_metrics(root))
    report.add(_steerability(root, state))
    report.add(_disentangle(root, cfg, state))
    report.add(_dashboard(state))
    report.add(_timing(state, timings))
    return report
