"""Steering through SAE features, neurons or directions: hook factories and `steer` (interventions.py),
the bases a feature index means in (bases.py), and strengths relative to the hook's input norm (strength.py).
Names load on first use.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "steer": "interventions",
    "sae_feature_hook": "interventions",
    "sae_feature_hooks": "interventions",
    "neuron_hook": "interventions",
    "direction_hook": "interventions",
    "feature_means": "interventions",
    "make_basis": "bases",
    "SAEBasis": "bases",
    "NeuronBasis": "bases",
    "DirectionBasis": "bases",
    "absolute_strengths": "strength",
    "typical_input_norm": "strength",
    "relative_strengths": "strength",
    "PAPER_RELATIVE_STRENGTH": "strength",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
