"""sae_clip_plugin: CLIP's vision transformer in the transformer_lens / sae_lens toolchain.

Importing it is cheap (the public names load on first use) and registers, once and without network
access, the released vision SAEs with sae_lens (so `SAE.from_pretrained(release, sae_id)` finds them):
right away when sae_lens is already imported, else as soon as it is. QuickGELU is registered with
transformer_lens when the model code loads.
"""

from sae_clip_plugin._lazy import lazy_exports
from sae_clip_plugin._registration import register_with_sae_lens_on_import

_EXPORTS = {
    "HookedSAEViT": "sae_clip_plugin.model",
    "HookedViT": "sae_clip_plugin.model",
    "HookedViTConfig": "sae_clip_plugin.model",
    "UnsupportedModelError": "sae_clip_plugin.model",
    "list_pretrained": "sae_clip_plugin.pretrained",
    "load_prisma_sae": "sae_clip_plugin.pretrained",
    "save_sae": "sae_clip_plugin.pretrained",
    "upload_sae": "sae_clip_plugin.pretrained",
    "load_sae": "sae_clip_plugin.pretrained.loading",
    "VisionSAERunnerConfig": "sae_clip_plugin.training.config",
    "VisionSAETrainingRunner": "sae_clip_plugin.training.runner",
    "evaluate_sae": "sae_clip_plugin.analysis.metrics.evaluate",
    "evaluate_saes": "sae_clip_plugin.analysis.metrics.evaluate",
    "steer": "sae_clip_plugin.analysis.steering.interventions",
    "steerability": "sae_clip_plugin.analysis.steerability.metric",
    "DisentangleConfig": "sae_clip_plugin.analysis.disentangle.config",
    "run_disentangle": "sae_clip_plugin.analysis.disentangle.evaluate",
    "build_task": "sae_clip_plugin.analysis.disentangle.tasks",
    "decompose_image_embedding": "sae_clip_plugin.analysis.decomposition.direct_effects",
    "TokenSelection": "sae_clip_plugin.model.tokens",
    "image_source": "sae_clip_plugin.training.sources",
    "load_labelled_images": "sae_clip_plugin.data.image_folder",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

register_with_sae_lens_on_import()
