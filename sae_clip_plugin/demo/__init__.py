"""`sae-clip demo`: the toolchain end to end on the bundled toy CLIP (or a real CLIP and an image folder).

    sae-clip demo --out out/demo            # offline, < 10 minutes on 2 CPU cores
    from sae_clip_plugin.demo import DemoConfig, run_demo
    run_demo(DemoConfig.make("out/demo", fast=True))

See `pipeline.py` for the steps and the output layout.
"""

from sae_clip_plugin.demo.cli import register_commands, run_demo_command
from sae_clip_plugin.demo.config import FAST, FULL, DemoConfig
from sae_clip_plugin.demo.pipeline import STEPS, DemoRun, run_demo
from sae_clip_plugin.demo.state import SettingsMismatchError

__all__ = [
    "FAST",
    "FULL",
    "STEPS",
    "DemoConfig",
    "DemoRun",
    "SettingsMismatchError",
    "register_commands",
    "run_demo",
    "run_demo_command",
]
