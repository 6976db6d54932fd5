"""The paper's steerability metric (arXiv 2504.08729): the metric and its summary (metric.py), the fast
engine that runs the model's prefix once for many edits (engine.py, suffix.py) and the random-model control
(controls.py), the comparison with neurons, random directions and a random model (compare.py) and the
concepts a feature gains and loses beyond a random edit (concepts.py). Names load on first use.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "steerability": "metric",
    "steering_curves": "metric",
    "SteerabilityResult": "metric",
    "random_vision_model": "controls",
    "concept_shift": "concepts",
    "compare_conditions": "compare",
    "summarise_conditions": "compare",
    "orderings": "compare",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
