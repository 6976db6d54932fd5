"""Analysis of vision SAEs: metrics/, steering/, steerability/, disentangle/, decomposition/ subpackages, and
zero-shot evaluation, vocabularies, intervals and feature-dashboard data as modules.

The main names are reachable here (and from the package top level), loaded on first use so that importing the
package stays cheap and no module pulls in another's dependencies. The steerability function is
`sae_clip_plugin.steerability` (here `analysis.steerability` is always the subpackage).
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "evaluate_sae": "sae_clip_plugin.analysis.metrics.evaluate",
    "evaluate_saes": "sae_clip_plugin.analysis.metrics.evaluate",
    "evaluate_zero_shot": "sae_clip_plugin.analysis.zero_shot",
    "iter_image_batches": "sae_clip_plugin.analysis.pixels",
    "zero_shot_logits": "sae_clip_plugin.analysis.zero_shot",
    "steer": "sae_clip_plugin.analysis.steering.interventions",
    "run_disentangle": "sae_clip_plugin.analysis.disentangle.evaluate",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
