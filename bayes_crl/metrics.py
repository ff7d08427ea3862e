"""Metrics for learned latents and latent graphs: pure functions, numpy in, float out.

Latents are compared after the best one-to-one matching (the model is identified only up to
permutation, scaling and shift); graphs are compared after reordering the learned graph by that
matching (:func:`align_graph`). Graph arguments may be (l, l) arrays with ``A[parent, child]`` or
:class:`networkx.DiGraph` objects (read in their node order). Graph metrics ignore the diagonal:
self-loops are not edges of a DAG.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._validation import BayesCRLValueError, as_adjacency_array, check_array_2d, check_scalar

__all__ = [
    "align_graph",
    "align_weights",
    "brier",
    "edge_auprc",
    "edge_auroc",
    "expected_calibration_error",
    "expected_shd",
    "match_latents",
    "mpc",
    "per_latent_correlation",
    "reliability",
    "shd",
    "strength_coverage",
]


# ----------------------------------------------------------------------------------------------------
# Latents
# ----------------------------------------------------------------------------------------------------
def _check_pair(z_true: Any, z_hat: Any) -> tuple[np.ndarray, np.ndarray]:
    zt = check_array_2d(z_true, "z_true")
    zh = check_array_2d(z_hat, "z_hat")
    if zt.shape[0] != zh.shape[0]:
        raise BayesCRLValueError(
            f"'z_true' and 'z_hat' must have the same number of rows (samples). Got "
            f"{zt.shape[0]} and {zh.shape[0]}."
        )
    if zh.shape[1] < zt.shape[1]:
        raise BayesCRLValueError(
            f"'z_hat' must have at least as many columns as 'z_true' ({zt.shape[1]}) for a "
            f"one-to-one matching. Got {zh.shape[1]}."
        )
    return zt, zh


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of a (N, l) and b (N, k); 0 for constant columns.

    A column counts as constant when its centred norm is below ``1e-10 * sqrt(N) * max|column|``
    (centring a constant column leaves only rounding error, whose correlations are meaningless).
    """
    def centred(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = m - m.mean(axis=0)
        norm = np.sqrt((c**2).sum(axis=0))
        constant = norm <= 1e-10 * np.sqrt(m.shape[0]) * np.abs(m).max(axis=0)
        return c, np.where(constant, np.inf, norm)  # 1 / inf = 0 correlation

    ca, na = centred(a)
    cb, nb = centred(b)
    corr = (ca / na).T @ (cb / nb)
    return np.clip(corr, -1.0, 1.0)


def match_latents(z_true: Any, z_hat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best one-to-one matching of learned to true latents by absolute Pearson correlation.

    Solved exactly with :func:`scipy.optimize.linear_sum_assignment` (maximising the summed
    absolute correlation).

    Parameters
    ----------
    z_true : array_like, shape (N, l)
    z_hat : array_like, shape (N, k), k >= l

    Returns
    -------
    perm : numpy.ndarray of int64, shape (l,)
        ``z_hat[:, perm[i]]`` matches true latent ``i``.
    signs : numpy.ndarray of float64, shape (l,)
        Sign (+1 or -1) of that correlation (+1 when it is 0), so ``signs[i] * z_hat[:, perm[i]]``
        increases with ``z_true[:, i]``.
    corr_matrix : numpy.ndarray, shape (l, k)
        Signed Pearson correlations ``corr(z_true[:, i], z_hat[:, j])``; 0 for constant columns.
    """
    zt, zh = _check_pair(z_true, z_hat)
    corr = _correlation(zt, zh)
    rows, cols = linear_sum_assignment(-np.abs(corr))
    perm = np.empty(zt.shape[1], dtype=np.int64)
    perm[rows] = cols
    matched = corr[np.arange(zt.shape[1]), perm]
    signs = np.where(matched < 0, -1.0, 1.0)
    return perm, signs, corr


def per_latent_correlation(z_true: Any, z_hat: Any) -> np.ndarray:
    """Absolute Pearson correlation of each true latent with its matched learned latent.

    Parameters
    ----------
    z_true : array_like, shape (N, l)
    z_hat : array_like, shape (N, k), k >= l

    Returns
    -------
    numpy.ndarray, shape (l,)
        Values in [0, 1]; ``mpc`` is their mean.
    """
    perm, _, corr = match_latents(z_true, z_hat)
    return np.abs(corr[np.arange(len(perm)), perm])


def mpc(z_true: Any, z_hat: Any, *, return_matching: bool = False) -> Any:
    """Mean absolute Pearson correlation after the best one-to-one matching (MPC).

    1 when ``z_hat`` equals ``z_true`` up to permutation, scaling (including sign) and shift; near
    0 for a representation independent of the truth; constant columns count as correlation 0.

    Parameters
    ----------
    z_true : array_like, shape (N, l)
    z_hat : array_like, shape (N, k), k >= l
    return_matching : bool, default False
        Also return the matching.

    Returns
    -------
    float
        The MPC, in [0, 1].
    perm, signs : numpy.ndarray, shape (l,)
        Only with ``return_matching=True``; see :func:`match_latents`.
    """
    perm, signs, corr = match_latents(z_true, z_hat)
    score = float(np.abs(corr[np.arange(len(perm)), perm]).mean())
    if return_matching:
        return score, perm, signs
    return score


# ----------------------------------------------------------------------------------------------------
# Graphs
# ----------------------------------------------------------------------------------------------------
def _square(a: Any, name: str, n: int | None = None) -> np.ndarray:
    arr = as_adjacency_array(a, name)
    if not np.isfinite(arr).all():
        raise BayesCRLValueError(f"'{name}' must contain only finite values.")
    if n is not None and arr.shape[0] != n:
        raise BayesCRLValueError(
            f"'{name}' must have shape ({n}, {n}) to match the true graph. Got {arr.shape}. Align a "
            f"learned graph to the true latents first with align_graph(a_hat, perm)."
        )
    return arr


def _binary(a: Any, name: str, n: int | None = None, threshold: float | None = None) -> np.ndarray:
    arr = _square(a, name, n)
    if threshold is not None:
        return (arr > threshold).astype(np.int64)
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise BayesCRLValueError(
            f"'{name}' must be a 0/1 (or bool) adjacency matrix. Got {float(arr[r, c])!r} at index "
            f"({r}, {c}). For edge probabilities pass threshold=0.5 (or another cut-off)."
        )
    return arr.astype(np.int64)


def _probs(p: Any, name: str, n: int) -> np.ndarray:
    arr = _square(p, name, n)
    if (arr < 0).any() or (arr > 1).any():
        raise BayesCRLValueError(
            f"'{name}' must hold probabilities in [0, 1]. Got values in [{arr.min():.3g}, "
            f"{arr.max():.3g}]."
        )
    return arr


def _offdiag(a: np.ndarray) -> np.ndarray:
    return a[~np.eye(a.shape[0], dtype=bool)]


def shd(a_true: Any, a_hat: Any, *, threshold: float | None = None) -> float:
    """Structural Hamming distance between two directed graphs.

    Counts, over unordered pairs of distinct nodes, those whose edge status differs: a missing
    edge counts 1, an extra edge 1, and a **reversed edge counts once** (1, not 2). The diagonal is
    ignored.

    Parameters
    ----------
    a_true : array_like, shape (l, l), or networkx.DiGraph
        True 0/1 adjacency, ``A[parent, child]``.
    a_hat : array_like, shape (l, l), or networkx.DiGraph
        Estimated 0/1 adjacency (aligned to the true latents, see :func:`align_graph`).
    threshold : float, optional
        If given, ``a_hat`` may hold probabilities and edges are ``a_hat > threshold``. Without it,
        non-0/1 entries raise an error.

    Returns
    -------
    float
        The SHD, an integer-valued float.
    """
    t = _binary(a_true, "a_true")
    h = _binary(a_hat, "a_hat", t.shape[0], threshold)
    np.fill_diagonal(t, 0)
    np.fill_diagonal(h, 0)
    diff = (t != h) | (t.T != h.T)  # pair {i, j} differs in either direction
    return float(np.triu(diff, k=1).sum())


def expected_shd(a_true: Any, adjacency_draws: Any, *, threshold: float | None = None) -> float:
    """Posterior expected SHD: the mean of :func:`shd` over sampled graphs.

    Parameters
    ----------
    a_true : array_like, shape (l, l), or networkx.DiGraph
    adjacency_draws : array_like, shape (S, l, l)
        Posterior graph draws (0/1, or probabilities with ``threshold``).
    threshold : float, optional
        Passed to :func:`shd`.

    Returns
    -------
    float
    """
    t = _binary(a_true, "a_true")
    draws = np.asarray(adjacency_draws, dtype=np.float64)
    l = t.shape[0]
    if draws.ndim != 3 or draws.shape[1:] != (l, l) or draws.shape[0] == 0:
        raise BayesCRLValueError(
            f"'adjacency_draws' must have shape (n_draws, {l}, {l}) with n_draws >= 1. Got "
            f"{draws.shape}. For a single graph use shd(a_true, a_hat) or add an axis: draws[None]."
        )
    return float(np.mean([shd(t, d, threshold=threshold) for d in draws]))


def _labels_scores(a_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _binary(a_true, "a_true")
    p = _probs(probs, "probs", t.shape[0])
    return _offdiag(t), _offdiag(p)


def edge_auroc(a_true: Any, probs: Any) -> float:
    """Area under the ROC curve of edge probabilities over the off-diagonal entries.

    Parameters
    ----------
    a_true : array_like, shape (l, l), or networkx.DiGraph
        True 0/1 adjacency.
    probs : array_like, shape (l, l)
        Posterior edge inclusion probabilities ``P(A[j, i] = 1)``, aligned to the true latents.

    Returns
    -------
    float
        AUROC in [0, 1]; ``nan`` (without a warning) when the true graph has no edges or is
        complete, since the curve is then undefined.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _labels_scores(a_true, probs)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def edge_auprc(a_true: Any, probs: Any) -> float:
    """Area under the precision-recall curve (average precision) of edge probabilities.

    Parameters
    ----------
    a_true : array_like, shape (l, l), or networkx.DiGraph
    probs : array_like, shape (l, l)

    Returns
    -------
    float
        Average precision in [0, 1] over off-diagonal entries; ``nan`` (without a warning) when
        there are no true edges or no true non-edges.
    """
    from sklearn.metrics import average_precision_score

    y, s = _labels_scores(a_true, probs)
    if y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, s))


def brier(a_true: Any, probs: Any) -> float:
    """Brier score: mean squared error of edge probabilities over off-diagonal entries.

    Returns
    -------
    float
        In [0, 1]; 0 for perfect (0/1 and correct) probabilities.
    """
    y, s = _labels_scores(a_true, probs)
    return float(np.mean((s - y) ** 2))


def expected_calibration_error(a_true: Any, probs: Any, *, n_bins: int = 10) -> float:
    """Expected calibration error of edge probabilities over off-diagonal entries.

    Probabilities are put in ``n_bins`` equal-width bins on [0, 1] (the last bin closed); the ECE
    is ``sum_b (n_b / n) |mean(a_true in b) - mean(probs in b)|``.

    Parameters
    ----------
    a_true : array_like, shape (l, l), or networkx.DiGraph
    probs : array_like, shape (l, l)
    n_bins : int, default 10

    Returns
    -------
    float
        In [0, 1]; 0 for perfect probabilities.
    """
    check_scalar(n_bins, "n_bins", int, "expected_calibration_error", min_val=1)
    return reliability(a_true, probs, n_bins=n_bins)["ece"]


def _pooled_labels_scores(a_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Off-diagonal labels and probabilities of one (l, l) pair or of sequences of pairs, concatenated."""
    single = not isinstance(a_true, (list, tuple))
    if single:
        return _labels_scores(a_true, probs)
    if not isinstance(probs, (list, tuple)) or len(probs) != len(a_true):
        got = len(probs) if isinstance(probs, (list, tuple)) else type(probs).__name__
        raise BayesCRLValueError(f"'probs' must be a list with one (l, l) matrix per entry of 'a_true' "
                                 f"({len(a_true)}). Got {got}.")
    if not a_true:
        raise BayesCRLValueError("'a_true' must hold at least one (l, l) matrix. Got an empty list.")
    pairs = [_labels_scores(t, p) for t, p in zip(a_true, probs)]
    return np.concatenate([y for y, _ in pairs]), np.concatenate([s for _, s in pairs])


def reliability(a_true: Any, probs: Any, *, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability (calibration) table of edge probabilities, pooled over one or several graphs.

    Off-diagonal entries are put in ``n_bins`` equal-width bins on [0, 1] (the last bin closed).

    Parameters
    ----------
    a_true : array_like (l, l), networkx.DiGraph, or list of them
        True adjacency; a list pools several fits (each may have its own ``l``).
    probs : array_like (l, l), or list of them
        Edge probabilities aligned to ``a_true`` (a list of the same length when ``a_true`` is a list).
    n_bins : int, default 10

    Returns
    -------
    dict
        ``bin_lower``, ``bin_upper`` (n_bins,): bin edges; ``mean_prob`` (n_bins,): mean probability in the
        bin; ``frac_true`` (n_bins,): fraction of true edges in the bin (``nan`` for empty bins); ``count``
        (n_bins,) int; ``ece``: expected calibration error (float); ``brier``: Brier score (float).
    """
    bins = check_scalar(n_bins, "n_bins", int, "reliability", min_val=1)
    y, s = _pooled_labels_scores(a_true, probs)
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(which, weights=s, minlength=bins) / count
        frac_true = np.bincount(which, weights=y, minlength=bins) / count
    ok = count > 0
    ece = float(np.sum(count[ok] / count.sum() * np.abs(frac_true[ok] - mean_prob[ok])))
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {"bin_lower": edges[:-1], "bin_upper": edges[1:], "mean_prob": mean_prob, "frac_true": frac_true,
            "count": count, "ece": ece, "brier": float(np.mean((s - y) ** 2))}


def strength_coverage(w_true: Any, draws: Any, a_true: Any, perm: Any, *, prob: float = 0.9) -> dict[str, Any]:
    """Coverage of the ``prob`` credible intervals of per-environment strengths against the truth.

    The model identifies a strength ``W[u, j, i]`` only up to one scale per edge (the scales of the learned
    ``z_j``, ``z_i`` and feature ``phi_ji``) and one offset per edge (the flat direction
    ``z_i -> z_i - c phi_ji(z_j)``, fixed by the centring convention). So for each true edge that the
    learned order allows (its draws are not all zero), the truth is mapped into the model's coordinates by
    the least-squares line ``a + b * W_true[u, j, i]`` through the posterior means over environments
    (2 numbers from ``E`` environments: slightly optimistic for small ``E``). A true edge the learned order
    cannot express (reversed) is counted as unscored. For an ordered pair with no true edge in either
    direction the truth is 0 in every environment in any coordinates: the interval covers when it holds 0.

    Parameters
    ----------
    w_true : array_like, shape (E, l, l)
        True strengths ``W[u, parent, child]``.
    draws : array_like, shape (S, E, l, l)
        Posterior draws of the learned strengths, over the learned latents, environments in the order of
        ``w_true``.
    a_true : array_like, shape (l, l)
        True 0/1 adjacency.
    perm : array_like of int, shape (l,)
        From :func:`match_latents`: learned latent ``perm[i]`` matches true latent ``i``.
    prob : float, default 0.9
        Central credible mass.

    Returns
    -------
    dict
        ``edge_hits``, ``edge_n``: covered and scored (environment, true edge) pairs; ``null_hits``,
        ``null_n``: the same for ordered pairs without a true edge that the learned order allows;
        ``edges_scored``, ``edges_unscored`` (int); ``width_ratio``: list, per scored edge, mean interval width
        over the standard deviation of the aligned truth across environments.
    """
    t = _binary(a_true, "a_true")
    l = t.shape[0]
    w = np.asarray(w_true, dtype=np.float64)
    d = np.asarray(draws, dtype=np.float64)
    if w.ndim != 3 or w.shape[1:] != (l, l):
        raise BayesCRLValueError(f"'w_true' must have shape (E, {l}, {l}). Got {w.shape}.")
    if d.ndim != 4 or d.shape[1:] != w.shape:
        raise BayesCRLValueError(f"'draws' must have shape (S, {w.shape[0]}, {l}, {l}). Got {d.shape}.")
    check_scalar(prob, "prob", float, "strength_coverage", min_val=0, max_val=1)
    p = _check_perm(perm, l)
    d = d[:, :, p][:, :, :, p]
    lo, hi = np.quantile(d, (1 - prob) / 2, axis=0), np.quantile(d, 1 - (1 - prob) / 2, axis=0)
    mean = d.mean(0)
    out: dict[str, Any] = dict(edge_hits=0, edge_n=0, null_hits=0, null_n=0, edges_scored=0, edges_unscored=0,
                               width_ratio=[])
    for j in range(l):
        for i in range(l):
            if i == j or np.all(d[:, :, j, i] == 0.0):
                out["edges_unscored"] += int(i != j and t[j, i] == 1)
                continue
            inside = None
            if t[j, i]:
                b, a = np.polyfit(w[:, j, i], mean[:, j, i], 1)
                target = a + b * w[:, j, i]
                inside = (lo[:, j, i] <= target) & (target <= hi[:, j, i])
                out["edges_scored"] += 1
                out["width_ratio"].append(float(np.mean(hi[:, j, i] - lo[:, j, i]) / max(np.std(target), 1e-12)))
                out["edge_hits"] += int(inside.sum())
                out["edge_n"] += len(inside)
            elif not t[i, j]:
                inside = (lo[:, j, i] <= 0.0) & (0.0 <= hi[:, j, i])
                out["null_hits"] += int(inside.sum())
                out["null_n"] += len(inside)
    return out


def align_graph(a_hat: Any, perm: Any) -> np.ndarray:
    """Reorder a learned (k, k) graph or probability matrix to the true latents' order.

    Parameters
    ----------
    a_hat : array_like, shape (k, k), or networkx.DiGraph
        Learned adjacency or edge probabilities, ``a_hat[parent, child]`` over learned latents.
    perm : array_like of int, shape (l,)
        From :func:`match_latents`: learned latent ``perm[i]`` matches true latent ``i``.

    Returns
    -------
    numpy.ndarray, shape (l, l)
        ``out[i, j] = a_hat[perm[i], perm[j]]``.
    """
    a = as_adjacency_array(a_hat, "a_hat")
    p = _check_perm(perm, a.shape[0])
    return a[np.ix_(p, p)]


def align_weights(weights: Any, perm: Any) -> np.ndarray:
    """Reorder learned per-environment strengths (E, k, k) to the true latents' order.

    Parameters
    ----------
    weights : array_like, shape (E, k, k)
        ``weights[u, parent, child]`` over learned latents.
    perm : array_like of int, shape (l,)

    Returns
    -------
    numpy.ndarray, shape (E, l, l)
        ``out[u, i, j] = weights[u, perm[i], perm[j]]``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise BayesCRLValueError(
            f"'weights' must have shape (n_envs, k, k). Got {w.shape}. For one graph use "
            f"align_graph."
        )
    p = _check_perm(perm, w.shape[1])
    return w[:, p[:, None], p[None, :]]


def _check_perm(perm: Any, k: int) -> np.ndarray:
    p = np.asarray(perm)
    if p.ndim != 1 or p.dtype.kind not in "iu" or len(np.unique(p)) != len(p) or (
        len(p) and (p.min() < 0 or p.max() >= k)
    ):
        raise BayesCRLValueError(
            f"'perm' must be a 1-D array of distinct integer indices in [0, {k}) as returned by "
            f"match_latents. Got {perm!r}."
        )
    return p.astype(np.int64)
