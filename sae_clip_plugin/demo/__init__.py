"""`sae-clip demo`: the toolchain end to end on the bundled toy CLIP (or a real CLIP and an image folder).

    sae-clip demo --out out/demo            # offline, < 10 minutes on 2 CPU cores
    from sae_clip_plugin.demo import DemoConfig, run_demo
    run_demo(DemoConfig.make("out/demo", fast=True))

See `pipeline.py` for the steps and the output layout.
"""

from sae_clip_plugin._lazy import lazy_exports

_EXPORTS = {
    "FAST": "config",
    "FULL": "config",
    "DemoConfig": "config",
    "STEPS": "pipeline",
    "DemoRun": "pipeline",
    "run_demo": "pipeline",
    "SettingsMismatchError": "state",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
