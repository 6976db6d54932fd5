"""Bootstrap intervals: against the normal approximation, degenerate cases, and pairing."""

from __future__ import annotations

import math

import pytest
import torch

from sae_clip_plugin.analysis.disentangle.text import format_with_interval
from sae_clip_plugin.analysis.intervals import bootstrap_intervals, difference_interval


def test_a_fair_coin_interval_matches_the_normal_approximation() -> None:
    n = 400
    correct = torch.zeros(n)
    correct[::2] = 1.0  # accuracy exactly 0.5
    groups = torch.zeros(n, dtype=torch.long)
    found = bootstrap_intervals(correct, groups, "groups", n_boot=4000)
    half = 1.96 * math.sqrt(0.25 / n)  # 0.049
    assert found["top1_lo"] == pytest.approx(0.5 - half, abs=0.01)
    assert found["top1_hi"] == pytest.approx(0.5 + half, abs=0.01)


def test_certain_results_and_identical_conditions_have_zero_width() -> None:
    groups = torch.tensor([0] * 10 + [1] * 10)
    ones = torch.ones(20)
    found = bootstrap_intervals(ones, groups, "typographic", baseline=ones)
    assert found["clean_acc_lo"] == found["clean_acc_hi"] == 1.0
    assert found["delta_attacked_acc_lo"] == found["delta_attacked_acc_hi"] == 0.0


def test_pairing_makes_a_consistent_improvement_certain() -> None:
    """20 of 200 attacked images flip from wrong to right and nothing gets worse: the paired interval is above
    0, although the two accuracies' own intervals overlap."""
    groups = torch.tensor([0] * 200 + [1] * 200)
    before = torch.cat([torch.ones(200), (torch.arange(200) % 2 == 0).double()])  # attacked 50%
    after = before.clone()
    after[200 + torch.arange(1, 40, 2)] = 1.0  # 20 more right: 60%
    found = bootstrap_intervals(after, groups, "typographic", baseline=before)
    assert found["delta_attacked_acc_lo"] > 0
    unpaired = bootstrap_intervals(before, groups, "typographic")
    assert unpaired["attacked_acc_hi"] > found["attacked_acc_lo"]  # the marginal intervals overlap
    lo, hi = difference_interval(after, before, groups, "typographic", "attacked_acc")
    assert (lo, hi) == (found["delta_attacked_acc_lo"], found["delta_attacked_acc_hi"])


def test_worst_group_uses_the_worst_group_of_each_resample() -> None:
    groups = torch.tensor([0] * 50 + [1] * 50)
    correct = torch.cat([torch.ones(50), torch.zeros(50)])
    found = bootstrap_intervals(correct, groups, "groups")
    assert found["worst_group_acc_lo"] == found["worst_group_acc_hi"] == 0.0
    assert found["mean_group_acc_lo"] == found["mean_group_acc_hi"] == 0.5


def test_seed_rows_bootstrap_the_mean_over_seeds_of_each_seeds_metric() -> None:
    """Random-feature rows report the mean over seeds of each seed's worst group; the interval must be of
    that statistic. Two seeds failing opposite groups: each seed's worst group is 0, so their mean is 0 on
    every resample, while the worst group of the averaged correctness would be 0.5."""
    groups = torch.tensor([0] * 40 + [1] * 40)
    seed_a = torch.cat([torch.ones(40), torch.zeros(40)])
    seed_b = 1 - seed_a
    found = bootstrap_intervals(torch.stack([seed_a, seed_b]), groups, "groups", baseline=torch.zeros(80))
    assert found["worst_group_acc_lo"] == found["worst_group_acc_hi"] == 0.0
    assert found["delta_worst_group_acc_lo"] == found["delta_worst_group_acc_hi"] == 0.0
    assert found["mean_group_acc_lo"] == found["mean_group_acc_hi"] == 0.5  # linear metrics: unchanged
    assert found["top1_lo"] == found["top1_hi"] == 0.5
    averaged = bootstrap_intervals((seed_a + seed_b) / 2, groups, "groups")
    assert averaged["worst_group_acc_lo"] == 0.5  # the other statistic, which the rows do not report


def test_format() -> None:
    row = {"delta_x_lo": -0.012, "delta_x_hi": 0.088, "y_lo": 0.5, "y_hi": 0.6}
    assert format_with_interval(0.05, row, "delta_x", signed=True) == "+5.0 [-1.2, +8.8]"
    assert format_with_interval(0.55, row, "y") == "55.0 [50.0, 60.0]"
    assert format_with_interval(None, row, "y") == ""
    assert format_with_interval(0.55, {}, "y") == "55.0"
