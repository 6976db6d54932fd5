"""Disentanglement by suppressing spurious SAE features (arXiv 2504.08729): tasks and their disjoint
splits (tasks.py), feature selection (select.py), suppression with baselines and the layer sweep (evaluate.py,
baselines.py, forward.py), and the wording of results (text.py). Names load on first use.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "DisentangleConfig": "config",
    "DisentangleResult": "evaluate",
    "run_disentangle": "evaluate",
    "SpuriousTask": "tasks",
    "ImageSplit": "tasks",
    "task_from_dataset": "tasks",
    "task_from_datasets": "tasks",
    "select_spurious_features": "select",
    "build_task": "tasks",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
