"""Each module imported first thing in a fresh process works, and sae_lens then knows our releases.

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
    "sae_clip_plugin.analysis.steering.interventions",
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


# Every module, each first in its own process: a parent that has imported the third-party libraries (torch,
# open_clip, transformer_lens, ...) but nothing of ours and not sae_lens forks one child per module, so each
# child starts with none of our modules loaded (an import cycle or a hidden dependence on import order fails
# there) at a fraction of a fresh interpreter's start-up cost. (The sae_lens registration check above runs for the
# entry modules only: reading sae_lens' pretrained directory costs a second per process.)
FORKING_IMPORTER = """
import importlib.util, json, os, pathlib, sys, traceback
import matplotlib, numpy, open_clip, pandas, PIL.Image, torch, transformer_lens, transformers, datasets
root = pathlib.Path(importlib.util.find_spec("sae_clip_plugin").origin).parent
files = sorted(p.relative_to(root.parent).with_suffix("") for p in root.rglob("*.py"))
names = [".".join(p.parts[:-1] if p.name == "__init__" else p.parts) for p in files]
assert not any(m == "sae_lens" or m.startswith(("sae_lens.", "sae_clip_plugin")) for m in sys.modules)
failures = {}
for name in names:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc().strip().splitlines()[-1]
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    if message:
        failures[name] = message
print(json.dumps({"n": len(names), "failures": failures}))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (Linux, macOS)")
@pytest.mark.timeout(600)
def test_every_module_imports_first_in_its_own_process():
    import json

    out = subprocess.run(
        [sys.executable, "-c", FORKING_IMPORTER], capture_output=True, text=True, timeout=600, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] > 100 and result["failures"] == {}
