"""Feature dashboards: activations, top images, heatmap placement, steering effect and the HTML page.

References are computed independently: SAE activations through HookedSAEViT's spliced SAE cache,
the steering effect with the steering module's `steer` context and the paper's readout by hand,
the patch layout and overlays from hand-built heatmaps.
"""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from sae_lens import StandardSAE, StandardSAEConfig

from sae_clip_plugin import HookedSAEViT
from sae_clip_plugin.analysis.dashboard import AUTO_STRENGTH
from sae_clip_plugin.analysis.steering.interventions import steer
from sae_clip_plugin.viz.dashboard import (
    collect_dashboard_data,
    dashboard_html,
    display_images,
    feature_activations,
    overlay_heatmap,
    patch_grid,
    plot_feature,
    write_dashboard,
)
from sae_clip_plugin.viz.dashboard_figures import MAX_ALPHA
from tests.model.clips import tiny_open_clip

HOOK = "blocks.1.hook_resid_post"
SPEC = "open_clip:tiny-dashboard"
WORDS = ["cat", "dog", "car", "tree", "house", "red", "boat", "sky"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> HookedSAEViT:
    clip = tiny_open_clip(layers=2)  # 64 px, patch 16: CLS + 4x4 patches, width 64
    return HookedSAEViT.from_open_clip(
        clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"), model_spec=SPEC
    ).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(10, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def make_sae(token_selection: str = "all") -> StandardSAE:
    torch.manual_seed(1)
    sae = StandardSAE(StandardSAEConfig(d_in=64, d_sae=24, normalize_activations="none"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.3)
    meta = sae.cfg.metadata
    meta.hook_name, meta.model_name, meta.token_selection = HOOK, SPEC, token_selection
    return sae.eval()


@torch.no_grad()
def spliced_acts(model, sae, pixels) -> torch.Tensor:
    """[n_images, 17, d_sae] from the SAE spliced into the model (sae_lens wrapper path)."""
    _, cache = model.run_with_cache_with_saes(pixels, saes=[sae], names_filter=[f"{HOOK}.hook_sae_acts_post"])
    return cache[f"{HOOK}.hook_sae_acts_post"]


def test_patch_grid_is_row_major_after_cls():
    values = np.concatenate([[99.0], np.arange(16.0)])
    grid = patch_grid(values, 17)
    assert grid.shape == (4, 4)
    assert grid[0, 3] == 3 and grid[1, 0] == 4 and grid[3, 2] == 14  # patch p at (p // 4, p % 4)
    with pytest.raises(ValueError, match="square"):
        patch_grid(np.zeros(18), 18)


def test_overlay_colours_exactly_the_active_patch():
    image = np.full((64, 64, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[1, 2] = 2.0  # patch 6: rows 16..31, columns 32..47
    out = overlay_heatmap(image, heat, vmax=2.0)
    changed = np.argwhere((out != image).any(-1))
    assert changed[:, 0].min() == 16 and changed[:, 0].max() == 31
    assert changed[:, 1].min() == 32 and changed[:, 1].max() == 47
    assert len(changed) == 16 * 16
    # full activation: (1 - a) * pixel + a * inferno(1.0), inferno(1.0) = (0.988362, 0.998364, 0.644924)
    expected = (1 - MAX_ALPHA) * 100 / 255 + MAX_ALPHA * np.array([0.988362, 0.998364, 0.644924])
    np.testing.assert_allclose(out[20, 40] / 255, expected, atol=1 / 255)
    # half activation is fainter, and no heatmap leaves the image alone
    half = overlay_heatmap(image, heat, vmax=4.0)
    assert 0 < np.abs(half[20, 40].astype(int) - 100).sum() < np.abs(out[20, 40].astype(int) - 100).sum()
    assert (overlay_heatmap(image, None) == image).all()


def test_cls_activity_shows_as_a_band_above_the_image():
    from sae_clip_plugin.viz.dashboard_figures import with_cls_band

    tile = np.full((128, 128, 3), 100, dtype=np.uint8)
    assert with_cls_band(tile, None, 2.0) is tile  # the SAE does not read CLS: no band
    off = with_cls_band(tile, 0.0, 2.0)
    assert off.shape == (144, 128, 3) and (off[16:] == tile).all()
    assert (off[:15] <= 4).all()  # CLS silent: inferno(0), black
    on = with_cls_band(
        tile, 2.0, 2.0
    )  # CLS at the feature's max: inferno(1.0) = (0.988362, 0.998364, 0.644924)
    np.testing.assert_allclose(on[0, 0] / 255, [0.988362, 0.998364, 0.644924], atol=1 / 255)
    half = with_cls_band(tile, 1.0, 2.0)  # inferno(0.5) = (0.735683, 0.215906, 0.330245)
    np.testing.assert_allclose(half[0, 0] / 255, [0.735683, 0.215906, 0.330245], atol=2 / 255)


def test_histogram_counts_read_as_plain_numbers():
    from sae_clip_plugin.analysis.dashboard import FeatureData
    from sae_clip_plugin.viz.dashboard_figures import plot_activation_histogram

    def labels(values):
        acts = np.asarray(values, dtype=float)
        data = FeatureData(0, HOOK, [], acts, acts.size, 1, float((acts > 0).mean()), float(acts.max()))
        fig = plot_activation_histogram(data)
        fig.canvas.draw()
        ax = fig.axes[0]
        return ax.get_yscale(), [t.get_text() for t in ax.get_yticklabels() if t.get_text()]

    scale, few = labels([0.5, 1.0, 1.0, 2.0])  # counts 1-2 per bin: a linear axis of whole numbers
    assert scale == "linear" and all(t.lstrip("\u2212-").isdigit() for t in few)
    scale, many = labels(np.r_[np.full(500, 1.0), np.linspace(0.1, 3, 50)])
    assert scale == "log" and "100" in many and not any("times" in t or "^" in t for t in many)


def test_display_images_undo_the_preprocessing(model):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    shown = display_images(model.preprocess(Image.fromarray(raw))[None], model.cfg.preprocess)
    assert shown.shape == (1, 64, 64, 3) and shown.dtype == np.uint8
    assert np.abs(shown[0].astype(int) - raw.astype(int)).max() <= 1


def test_activations_top_images_and_heatmaps_match_the_spliced_sae(model, pixels):
    sae = make_sae()
    features = [3, 0, 17]
    ref = spliced_acts(model, sae, pixels)[..., features]
    acts = feature_activations(model, sae, pixels, features, batch_size=4)
    torch.testing.assert_close(acts, ref, atol=1e-5, rtol=1e-5)

    data = collect_dashboard_data(model, sae, pixels, features, n_top=3, steer=False)
    for j, fd in enumerate(data.features):
        per_image = ref[:, :, j].max(dim=1).values
        expected = [i for i in torch.argsort(per_image, descending=True)[:3].tolist() if per_image[i] > 0]
        assert [t.index for t in fd.top] == expected and expected
        for t in fd.top:
            np.testing.assert_allclose(t.heatmap, ref[t.index, 1:, j].reshape(4, 4).numpy(), atol=1e-5)
            assert t.cls_activation == pytest.approx(float(ref[t.index, 0, j]), abs=1e-5)
            assert t.max_activation == pytest.approx(float(per_image[t.index]), abs=1e-5)
        values = ref[:, :, j].reshape(-1)
        assert fd.n_tokens_seen == values.numel() == 10 * 17
        assert fd.density == pytest.approx(float((values > 0).float().mean()))
        assert fd.max_activation == pytest.approx(float(values.max()), abs=1e-5)
        np.testing.assert_allclose(np.sort(fd.nonzero), np.sort(values[values > 0].numpy()), atol=1e-5)
    assert data.patch_side == 4 and data.n_images == 10
    # an image where the feature never fires is no top image
    silent = make_sae()
    with torch.no_grad():
        silent.b_enc[2] = -1e4
    assert collect_dashboard_data(model, silent, pixels, [2], steer=False).features[0].top == []


def test_patch_only_sae_has_no_cls_and_the_same_patch_values(model, pixels):
    every, patches = make_sae("all"), make_sae("patches")
    full = feature_activations(model, every, pixels, [5])
    only = feature_activations(model, patches, pixels, [5])
    assert torch.isnan(only[:, 0]).all()
    torch.testing.assert_close(only[:, 1:], full[:, 1:])
    data = collect_dashboard_data(model, patches, pixels, [5], n_top=2, steer=False)
    assert all(t.cls_activation is None and t.heatmap is not None for t in data.features[0].top)
    assert data.features[0].n_tokens_seen == 10 * 16


@torch.no_grad()
def test_steering_effect_matches_steering_by_hand(model, pixels):
    sae = make_sae()
    feature, strength = 4, 30.0
    data = collect_dashboard_data(model, sae, pixels, [feature], vocabulary=WORDS, strength=strength,
                                  n_steer_images=6, n_top=2, beyond_random=False)  # fmt: skip
    text = F.normalize(model.encode_text(WORDS), dim=-1)

    scale = float(model.text.logit_scale.exp())  # the readout at the model's own learned scale

    def readout(emb):
        return torch.softmax(scale * F.normalize(emb, dim=-1) @ text.T, dim=-1)

    clean = readout(model(pixels[:6]))
    with steer(model, sae, {feature: strength}):
        steered = readout(model(pixels[:6]))
    delta = (steered - clean).mean(0).double()
    effect = data.features[0].steering
    assert effect["S"] == pytest.approx(float((delta**2).sum()), rel=1e-4, abs=1e-7)
    assert effect["P"] == pytest.approx(float(delta.max()), rel=1e-4, abs=1e-7)
    gained = [WORDS[i] for i in torch.argsort(delta, descending=True).tolist() if delta[i] > 1e-3][:5]
    assert [w for w, _ in effect["gained"]] == gained
    for word, d in effect["gained"] + effect["lost"]:
        assert d == pytest.approx(float(delta[WORDS.index(word)]), abs=1e-6)
        assert abs(d) > 1e-3  # changes of 0.1 points or less are noise, not shown as gains or losses

    # beyond random directions (the default): the shift minus what random directions of the SAE's decoder norm do,
    # as steerability.concepts.concept_shift measures it; S and P stay the feature's own
    from sae_clip_plugin.analysis.steerability.concepts import concept_shift

    beyond = collect_dashboard_data(model, sae, pixels, [feature], vocabulary=WORDS, strength=strength,
                                    n_steer_images=6, n_top=2).features[0].steering  # fmt: skip
    reference = concept_shift(model, sae, pixels[:6], [feature], WORDS, strength=strength)[0]
    assert beyond["S"] == pytest.approx(effect["S"]) and beyond["beyond_random"] is True
    expected = [(w, d) for w, d in reference["gained"] if d > 1e-3]
    assert [w for w, _ in beyond["gained"]] == [w for w, _ in expected]
    for (_, d), (_, r) in zip(beyond["gained"], expected, strict=True):
        assert d == pytest.approx(r, abs=1e-9)

    # strength="auto": a few times each feature's own largest activation on the images
    auto = collect_dashboard_data(
        model, sae, pixels, [feature, 9], vocabulary=WORDS, strength="auto", n_steer_images=2
    )
    peaks = spliced_acts(model, sae, pixels)[..., [feature, 9]].amax(dim=(0, 1))
    for fd, peak in zip(auto.features, peaks, strict=True):
        assert fd.steering["strength"] == pytest.approx(AUTO_STRENGTH * float(peak), rel=1e-5)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_html_page_embeds_every_picture_as_a_valid_png(model, pixels, tmp_path):
    sae = make_sae()
    data = collect_dashboard_data(model, sae, pixels, [1, 2], n_top=3, vocabulary=WORDS, n_steer_images=4)
    page = dashboard_html(data)
    parser = _Images()
    parser.feed(page)
    assert len(parser.srcs) == 2 * (3 + 2)  # per feature: top images, histogram, steering chart
    sizes = []
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        sizes.append(image.size)
    assert sizes[0] == (128, 144)  # 64 px tiles blown up x2 so patches stay visible, a 16 px CLS band above
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    path = write_dashboard(data, tmp_path / "sub" / "dash.html")
    assert path.read_text(encoding="utf-8") == page
    assert not list(path.parent.glob(".*"))  # no temporary file left


def test_plot_feature_is_one_figure_with_every_panel(model, pixels):
    data = collect_dashboard_data(model, make_sae(), pixels, [7], n_top=4, vocabulary=WORDS, n_steer_images=3)
    fig = plot_feature(data.features[0])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4 + 2
    with pytest.raises(ValueError, match="out of range"):
        collect_dashboard_data(model, make_sae(), pixels, [24], steer=False)


def test_card_measures_by_hand():
    """Two red and two blue images: a feature firing on the two red ones has top images that look alike to the
    colour-histogram encoder (MS 1), one firing on a red and a blue one does not (MS 0); a 2x2 patch grid is too
    small for Moran's I under ViSAEBench's rules (5 active patches at least), so localisation is NaN."""
    from sae_clip_plugin.analysis.dashboard import card_measures

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    red, blue = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
    pixels = torch.stack([(c.view(3, 1, 1).expand(3, 8, 8) - mean) / std for c in (red, red, blue, blue)])
    acts = torch.zeros(4, 5, 2)  # [images, CLS + 2x2 patches, features]
    acts[[0, 1], 1, 0] = 1.0
    acts[[0, 2], 2, 1] = 1.0
    measures = card_measures(acts, pixels, None, positions=range(5))
    assert measures[0]["monosemanticity"] == pytest.approx(1.0)
    assert measures[1]["monosemanticity"] == pytest.approx(0.0, abs=1e-12)
    assert all(np.isnan(m["localisation"]) for m in measures)
