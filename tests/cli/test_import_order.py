"""Each module imported first thing in a fresh interpreter works, and sae_lens then knows our releases.

Why: `import sae_lens` runs our registration (a post-import hook), which imports the Prisma registry; a module
of ours that imports sae_lens while the registry needs it half-imported would be an import cycle that only
shows in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "sae_clip_plugin.pretrained",
    "sae_clip_plugin.pretrained.unpickler",
    "sae_clip_plugin.pretrained.prisma",
    "sae_clip_plugin.pretrained.tanh_relu",
    "sae_clip_plugin.pretrained.registry",
    "sae_clip_plugin.pretrained.loading",
    "sae_clip_plugin.pretrained.saving",
    "sae_clip_plugin.model.hooked_sae_vit",
    "sae_clip_plugin.training.runner",
    "sae_clip_plugin.analysis.steering",
]
CHECK = (
    "import sae_lens\n"
    "from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory\n"
    "from sae_lens.registry import SAE_CLASS_REGISTRY\n"
    "assert 'prisma-clip-vit-b-32-vanilla-x64' in get_pretrained_saes_directory()\n"
    "assert 'prisma_tanh_relu' in SAE_CLASS_REGISTRY\n"
)


@pytest.mark.timeout(600)
def test_every_entry_module_imports_first_in_a_fresh_interpreter():
    procs = {
        m: subprocess.Popen(
            [sys.executable, "-c", f"import {m}\n{CHECK}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in MODULES
    }
    failures = {}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            failures[module] = err.strip().splitlines()[-1:]
    assert failures == {}
