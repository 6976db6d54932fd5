"""The image embedding as a sum of per-layer, per-head, per-token and per-neuron contributions.

Gandelsman, Efros & Steinhardt, "Interpreting CLIP's image representation via text-based
decomposition" (ICLR 2024): direct effects, TextSpan head descriptions, and the heads that carry
written text (the typographic heads of Dyslexify).
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "EmbeddingDecomposition": "direct_effects",
    "decompose_image_embedding": "direct_effects",
    "direct_logit_attribution": "direct_effects",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
