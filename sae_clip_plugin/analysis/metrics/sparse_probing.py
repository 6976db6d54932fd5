"""Sparse-probing AUC (ViSAEBench's SparseProbing, visaebench 0.1.0 M4; after Gurnee et al. 2023, arXiv 2305.01610).

Per-image codes (the features max-pooled over tokens) are ranked by their one-way ANOVA F statistic against the
class labels, over all images; for each k in k_values (1, 5, 10, 20, 50, 100, those <= F), a logistic-regression
probe on the k best features is fitted on a stratified 80 % split and scored by accuracy on the other 20 %; the AUC
is the trapezoid area under accuracy against k divided by (k_max - k_min) (the accuracy itself for one k).

The probe is ViSAEBench's (scikit-learn's LogisticRegression(C=1), L2 on the weights, intercept free; binary
logistic for two classes, multinomial for more) fitted here to convergence in float64 with torch's L-BFGS, so
scikit-learn is not needed. The split is our own seeded stratified split; pass `split=` to use another (the tests
pass scikit-learn's `train_test_split` to compare with ViSAEBench on the very same split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

K_VALUES = (1, 5, 10, 20, 50, 100)


def f_statistic(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-way ANOVA F per feature [F] (float64): between-class over within-class mean squares.

    NaN for a constant feature, +inf when classes differ but nothing varies within them.
    """
    x = codes.double()
    classes, y = torch.unique(torch.as_tensor(labels), return_inverse=True)
    n, k = x.shape[0], len(classes)
    onehot = torch.nn.functional.one_hot(y, k).double()  # [N, K]
    n_c = onehot.sum(0)
    mean = x.mean(0)
    class_means = (onehot.T @ x) / n_c[:, None]
    ss_between = (n_c[:, None] * (class_means - mean) ** 2).sum(0)
    ss_within = ((x - class_means[y]) ** 2).sum(0)
    return (ss_between / (k - 1)) / (ss_within / (n - k))


def stratified_split(
    labels: torch.Tensor, test_size: float = 0.2, seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) image indices: round(test_size * n_c) of each class to the test side, drawn with `seed`."""
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).reshape(-1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(test_size * len(idx)) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _objective(theta: torch.Tensor, x1: torch.Tensor, y: torch.Tensor, n_out: int, c: float) -> torch.Tensor:
    """(0.5 |W|^2 + c * sum of log-losses) / n for theta = [W | b] flattened, x1 = [x | 1]."""
    wb = theta.reshape(n_out, x1.shape[1])
    z = x1 @ wb.T
    if n_out == 1:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], y.double(), reduction="sum")
    else:
        loss = torch.nn.functional.cross_entropy(z, y, reduction="sum")
    return (0.5 * (wb[:, :-1] ** 2).sum() + c * loss) / x1.shape[0]


def _hessian(theta: torch.Tensor, x1: torch.Tensor, n_out: int, c: float) -> torch.Tensor:
    """The objective's Hessian: c X1^T (diag(p_k) delta_kl - p_k p_l) X1 / n per class pair, plus I on W."""
    n, d1 = x1.shape
    z = x1 @ theta.reshape(n_out, d1).T
    if n_out == 1:
        p = torch.sigmoid(z[:, 0])
        h = (x1 * (p * (1 - p))[:, None]).T @ x1
    else:
        p = torch.softmax(z, 1)
        h = torch.empty(n_out, d1, n_out, d1, dtype=x1.dtype)
        for k in range(n_out):
            for m in range(n_out):
                s = p[:, k] * (float(k == m) - p[:, m])
                h[k, :, m] = (x1 * s[:, None]).T @ x1
        h = h.reshape(n_out * d1, n_out * d1)
    reg = torch.ones(n_out, d1, dtype=x1.dtype)
    reg[:, -1] = 0  # the intercept is not penalised
    return (c * h + torch.diag(reg.reshape(-1))) / n


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float = 1.0, max_newton_params: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression, minimising 0.5 |W|^2 + c * sum_i log-loss_i (intercept unpenalised).

    y: class indices 0..n_classes-1. Two classes: one weight vector (binary logistic); more: one per class
    (multinomial), as scikit-learn's LogisticRegression. Solved to a gradient norm of 1e-10 by Newton's method with
    step halving (the objective is strictly convex in W), or by L-BFGS above `max_newton_params` parameters.
    Returns (W [n_out, d], b [n_out]), float64.
    """
    x1 = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    n_out = 1 if n_classes == 2 else n_classes
    theta = torch.zeros(n_out * x1.shape[1], dtype=torch.float64)
    if theta.numel() > max_newton_params:
        theta = _lbfgs(theta, x1, y, n_out, c)
    else:
        for _ in range(100):
            t = theta.clone().requires_grad_(True)
            with torch.enable_grad():
                f = _objective(t, x1, y, n_out, c)
                (g,) = torch.autograd.grad(f, t)
            if g.abs().max() < 1e-10:
                break
            step = _newton_step(_hessian(theta, x1, n_out, c), g)
            size = 1.0
            while size > 1e-8 and _objective(theta - size * step, x1, y, n_out, c) > f.detach():
                size /= 2
            theta = theta - size * step
    wb = theta.reshape(n_out, x1.shape[1])
    return wb[:, :-1].clone(), wb[:, -1].clone()


def _newton_step(hessian: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """H^-1 g; the least-norm step when H is singular. Why: with more than two classes the free intercepts can
    all shift by one constant without changing the loss, so H is singular along that direction (exactly so in
    float64 on some splits); the objective is flat there, and the least-norm step leaves it unchanged."""
    try:
        return torch.linalg.solve(hessian, grad)
    except torch.linalg.LinAlgError:
        return torch.linalg.pinv(hessian, hermitian=True) @ grad


def _lbfgs(theta: torch.Tensor, x1: torch.Tensor, y: torch.Tensor, n_out: int, c: float) -> torch.Tensor:
    t = theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([t], lr=1, max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = _objective(t, x1, y, n_out, c)
        f.backward()
        return f

    with torch.enable_grad():
        opt.step(closure)
    return t.detach()


def predict(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Class indices from a probe of `fit_logistic` (binary: 1 where the logit is > 0)."""
    z = x.double() @ w.T + b
    return (z[:, 0] > 0).long() if w.shape[0] == 1 else z.argmax(1)


def sparse_probing_auc(
    codes: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    k_values: Sequence[int] = K_VALUES,
    test_size: float = 0.2,
    seed: int = 42,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[float, dict[int, float]]:
    """(normalised AUC of accuracy against k, {k: test accuracy}) for per-image codes [N, F] and class labels [N]."""
    codes = codes.double()
    classes, y = torch.unique(torch.as_tensor(labels), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            "sparse probing needs at least two classes; pass labelled images (one subfolder per class)"
        )
    f = f_statistic(codes, y).numpy()
    ranked = np.argsort(np.nan_to_num(f, nan=-np.inf), kind="stable")[::-1].copy()
    train, test = split if split is not None else stratified_split(y, test_size, seed)
    train, test = torch.as_tensor(train, dtype=torch.long), torch.as_tensor(test, dtype=torch.long)
    accuracies: dict[int, float] = {}
    for k in sorted(k for k in k_values if k <= codes.shape[1]):
        cols = torch.from_numpy(ranked[:k])
        w, b = fit_logistic(codes[train][:, cols], y[train], len(classes))
        accuracies[k] = float((predict(codes[test][:, cols], w, b) == y[test]).double().mean())
    ks = sorted(accuracies)
    if not ks:
        raise ValueError(f"no k in {list(k_values)} is at most the {codes.shape[1]} features")
    accs = [accuracies[k] for k in ks]
    if len(ks) == 1:
        return accs[0], accuracies
    area = sum((accs[i] + accs[i + 1]) / 2 * (ks[i + 1] - ks[i]) for i in range(len(ks) - 1))
    return area / (ks[-1] - ks[0]), accuracies


def class_separation(
    sae: torch.nn.Module, activations: torch.Tensor, labels: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """Per-feature F statistic [d_sae] of `sae`'s image codes against `labels` (the score sparse probing ranks
    features by): the card-sized entry point. activations: [N, tokens, d_in] (max-pooled) or [N, d_in]."""
    from sae_clip_plugin.analysis.metrics.monosemanticity import image_codes

    return f_statistic(image_codes(sae, activations), torch.as_tensor(labels))
