"""The registry: worlds contribute names through an entry point; the library finds them without importing a world."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sae_clip_plugin import registry


def test_the_toy_world_registers_through_its_entry_point_in_a_fresh_process():
    code = (
        "import sys\n"
        "from sae_clip_plugin import registry\n"
        "assert not any(m.startswith('sae_clip_plugin.toy.') and m != 'sae_clip_plugin.toy.registration'"
        " for m in sys.modules)\n"
        "print(registry.names('model'), registry.names('task'), registry.names('vocabulary'))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip')], 'registering is cheap'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert (
        out.stdout.strip()
        == "['toy'] ['toy-background', 'toy-colour', 'toy-typographic'] ['toy', 'toy-concepts']"
    )


def test_lookup_of_an_unknown_name_lists_the_known_ones_and_the_fix():
    with pytest.raises(
        ValueError, match=r"no task named 'nope' is registered \(known: toy-background, toy-colour"
    ):
        registry.lookup("task", "nope")
    with pytest.raises(ValueError, match="unknown registry kind 'tasks'"):
        registry.find("tasks", "toy-colour")


def test_registering_by_hand_reaches_every_library_lookup(monkeypatch):
    from sae_clip_plugin.analysis.vocabulary import default_vocabulary, load_vocabulary

    monkeypatch.setitem(registry._REGISTRY, "vocabulary", dict(registry._REGISTRY["vocabulary"]))
    registry.register("vocabulary", "pets", lambda: ["cat", "dog", "cat"])
    registry.register(
        "vocabulary", "pets", registry.find("vocabulary", "pets")
    )  # the same factory: idempotent
    assert load_vocabulary("pets") == ["cat", "dog"]
    assert load_vocabulary("pets,toy")[:3] == ["cat", "dog", "circle"]
    assert default_vocabulary("toy") == "toy" and default_vocabulary("open_clip:ViT-B-32") == "imagenet"
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        registry.register("vocabulary", "pets", lambda: ["bird"])
    registry.register("vocabulary", "pets", lambda: ["bird", "fish"], overwrite=True)
    assert load_vocabulary("pets") == ["bird", "fish"]


def test_model_specs_accept_registered_names_only():
    from sae_clip_plugin.model.specs import ModelSpec

    assert str(ModelSpec.parse("toy")) == "toy" and ModelSpec.parse("toy").source == "registered"
    with pytest.raises(ValueError, match=r"or a registered model name \(toy\)"):
        ModelSpec.parse("no-such-world")


def test_the_model_of_a_world_follows_from_who_registered_the_names():
    assert registry.world_model("task", ["toy-typographic", "toy-colour"]) == "toy"
    assert registry.world_model("eval_images", ["toy"]) == "toy"
    assert registry.world_model("task", ["toy-typographic", "celeba"]) is None  # not all from one world
