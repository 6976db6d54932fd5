"""One token-selection type: every form (positions, slice, mask, count, sae_lens seqpos_slice) agrees with the
others and with a hand-written list, for named selections and explicit positions."""

from __future__ import annotations

import pytest
import torch

from sae_clip_plugin.model.tokens import TokenSelection

N = 5  # CLS + 4 patches


@pytest.mark.parametrize(
    "tokens, expected",
    [
        ("all", [0, 1, 2, 3, 4]),
        ("cls", [0]),
        ("patches", [1, 2, 3, 4]),
        ([3, -1, 3], [3, 4]),
        ([0, 1, 2, 3, 4], None),
    ],
)
def test_every_form_agrees(tokens, expected):
    sel = TokenSelection.parse(tokens)
    listed = expected or list(range(N))
    assert sel.all_positions(N) == listed and sel.count(N) == len(listed)
    assert sel.positions(N) == (None if len(listed) == N else listed)
    mask = sel.mask(N)
    assert (mask is None and len(listed) == N) or mask.nonzero().flatten().tolist() == listed
    x = torch.arange(2 * N).reshape(2, N)
    if isinstance(tokens, str):
        assert x[:, sel.slice()].tolist() == x[:, listed].tolist()
        start_stop = sel.seqpos_slice()
        assert x[:, slice(*start_stop)].tolist() == x[:, listed].tolist()  # what sae_lens slices


def test_hooks_without_cls_and_bad_input():
    assert TokenSelection.parse("patches").positions(4, has_cls=False) is None
    assert TokenSelection.parse("patches").seqpos_slice(has_cls=False) == (None,)
    with pytest.raises(ValueError, match="without a CLS token"):
        TokenSelection.parse("cls").positions(4, has_cls=False)
    with pytest.raises(ValueError, match="must be one of"):
        TokenSelection.parse("first")
    with pytest.raises(ValueError, match="empty list"):
        TokenSelection.parse([])
    with pytest.raises(ValueError, match=r"\[7\] are out of range for a model with 5 tokens"):
        TokenSelection.parse([7]).positions(N)
    with pytest.raises(ValueError, match="no slice form"):
        TokenSelection.parse([1]).slice()


def test_hooked_vit_answers_with_the_same_type():
    from sae_clip_plugin.model.config import HookedViTConfig
    from sae_clip_plugin.model.hooked_vit import HookedViT

    model = HookedViT(HookedViTConfig(d_model=8, n_layers=1, n_heads=2, d_mlp=16, image_size=8, patch_size=4))
    assert model.cfg.n_tokens == 5
    assert model.token_positions("cls") == [0] and model.token_positions("patches") == [1, 2, 3, 4]
    assert model.token_positions([-1]) == [4] and model.token_positions() == [0, 1, 2, 3, 4]
