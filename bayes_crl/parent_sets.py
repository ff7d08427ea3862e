"""Exact posterior over each latent's parent set given the latents: the spike-and-slab's edge marginals.

The latent model of a child ``z_i`` in environment ``u`` is linear in its strengths,

    z_i = mu_i(u) + sum_{j in S} W[u, j, i] phi_ji(z_j) + sigma_i(u) eps,    eps ~ N(0, 1),

with ``S`` the child's parent set (a subset of the latents before ``i`` in the causal order). Given the latents
(and the features ``phi``), the spike-and-slab prior

- ``gamma[j, i] ~ Bernoulli(prior_inclusion)`` for every candidate parent ``j`` (the edge indicator, shared by
  all environments), ``S = {j : gamma[j, i] = 1}``;
- per-environment strengths on the standardised scale,
  ``W[u, j, i] sd_u(phi_ji) / sigma_i(u) ~ Normal(0, slab_scale^2)`` for ``j`` in ``S`` and
  ``~ Normal(0, spike_scale^2)`` otherwise (the continuous spike of George & McCulloch's SSVS; ``spike_scale =
  0`` is the point mass at 0): a strength is measured in noise standard deviations of the child per standard
  deviation of the parent's feature, so the prior means the same at every scale of the latents (which are
  identified only up to scaling). Why a spike of non-zero width: latents recovered from observations are not
  exact (correlations of 0.98-0.99 with the truth) and each carries a few per cent of its neighbours; with
  30 000 rows a point-mass spike turns such a leak into an edge of probability 1 (measured: BENCHMARKS.md,
  "Edge posterior"). The spike's width says how large an effect still counts as no edge;
- ``mu_i(u)`` flat and ``sigma_i(u)^2`` with the scale-invariant prior ``1 / sigma^2`` (both per environment),

is conjugate: every parameter but ``S`` integrates out in closed form, environment by environment, from the
within-environment cross-products of ``(phi_ji(z_j))_j`` and ``z_i``. Summing over all ``2^k`` subsets of the
``k`` candidates (``k <=`` :data:`MAX_CANDIDATES`) gives the exact posterior ``p(S | z)`` and the exact edge
marginals ``P(gamma[j, i] = 1 | z)``: Bayesian model averaging over parent sets (Titsias & Lazaro-Gredilla
2011 and Carbonetto & Stephens 2012 use the same conjugate structure inside variational schemes).

With respect to the priors on ``mu`` and ``sigma`` (translation- and scale-invariant), the posterior is exact
for data drawn from the prior whatever ``mu`` and ``sigma`` are, so it is calibrated: of the edges given
probability ``p``, a fraction ``p`` are present (measured: BENCHMARKS.md, "Edge posterior: calibration").

Per environment ``u`` with ``n_u`` rows and parent set ``S`` (``|S| = k_S``), standardised features ``X``
(centred and divided by their within-environment standard deviation) and centred child ``y``, with a point-mass
spike (``s = slab_scale``):

    log p(z_i^u | S) = const - k_S log(s) - 1/2 log|A_S| - (n_u - 1) / 2 log(y'y - b_S' A_S^{-1} b_S),
    A_S = X_S'X_S + I / s^2,   b_S = X_S'y;

with a spike of width ``s0 > 0`` every candidate stays in: ``A_S = X'X + D_S^{-1}``, ``b_S = X'y``, ``D_S``
diagonal with ``s^2`` for the candidates in ``S`` and ``s0^2`` for the others, and ``- k_S log(s)`` becomes
``- k_S log(s) - (k - k_S) log(s0)``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bayes_crl._validation import BayesCRLValueError

__all__ = ["MAX_CANDIDATES", "child_statistics", "parent_set_log_posterior", "subset_masks",
           "edge_marginals", "sample_parent_sets"]

MAX_CANDIDATES = 12
"""Most candidate parents per child whose ``2^k`` parent sets are enumerated (4096 sets)."""


def _check_hyper(prior_inclusion: float, slab_scale: float, spike_scale: float = 0.0) -> None:
    if not (isinstance(prior_inclusion, (int, float)) and 0.0 < prior_inclusion < 1.0):
        raise BayesCRLValueError(
            f"The 'prior_inclusion' parameter must be a float in (0, 1). Got {prior_inclusion!r} instead.")
    if not (isinstance(slab_scale, (int, float)) and np.isfinite(slab_scale) and slab_scale > 0):
        raise BayesCRLValueError(
            f"The 'slab_scale' parameter must be a positive finite float. Got {slab_scale!r} instead.")
    if not (isinstance(spike_scale, (int, float)) and 0 <= spike_scale < slab_scale):
        raise BayesCRLValueError(
            f"The 'spike_scale' parameter must be a float in [0, slab_scale) = [0, {slab_scale}). "
            f"Got {spike_scale!r} instead.")


def child_statistics(feats: np.ndarray, z: np.ndarray, env: np.ndarray, n_envs: int | None = None,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Within-environment centred cross-products of every child's candidate features and the child.

    Parameters
    ----------
    feats : ndarray (N, l, l)
        ``feats[n, j, i] = phi_ji(z_nj)``, the feature of parent ``j`` in the equation of child ``i``
        (``z`` itself, broadcast, for a linear model).
    z : ndarray (N, l)
    env : ndarray (N,) int codes in ``0..n_envs-1``
    n_envs : int, optional
        Default ``env.max() + 1``.
    weights : ndarray (n_envs,), optional
        Multiplies each environment's statistics and row count (an environment bootstrap); default 1.

    Returns
    -------
    stats : ndarray (E, l, l + 1, l + 1)
        ``stats[u, i]``: the centred cross-product matrix of ``(phi_0i(z_0), ..., phi_{l-1,i}(z_{l-1}), z_i)``
        over the rows of environment ``u``.
    counts : ndarray (E,)
        Rows per environment (times ``weights``).
    """
    feats = np.asarray(feats, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    env = np.asarray(env)
    n, l = z.shape
    if feats.shape != (n, l, l):
        raise BayesCRLValueError(f"The 'feats' argument must have shape {(n, l, l)}. Got {feats.shape} instead.")
    e = int(env.max()) + 1 if n_envs is None else int(n_envs)
    v = np.concatenate([np.swapaxes(feats, 1, 2), z[:, :, None]], axis=2)  # (N, l_child, l + 1)
    stats = np.zeros((e, l, l + 1, l + 1))
    counts = np.zeros(e)
    for u in range(e):
        vu = v[env == u]
        if len(vu) < 2:
            continue
        c = vu - vu.mean(0)
        stats[u] = np.einsum("nia,nib->iab", c, c)
        counts[u] = len(vu)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        stats = stats * w[:, None, None, None]
        counts = counts * w
    return stats, counts


def subset_masks(k: int) -> np.ndarray:
    """All ``2^k`` subsets of ``k`` candidates as a boolean array (2^k, k); row ``r`` holds bit ``c`` of ``r``."""
    r = np.arange(2**k)[:, None]
    return ((r >> np.arange(k)[None]) & 1).astype(bool)


def _standardised(stats: np.ndarray, counts: np.ndarray, child: int, cand: np.ndarray):
    """Per-environment ``X'X`` (E', k, k), ``X'y`` (E', k), ``y'y`` (E',) and rows (E',) of one child, with the
    candidates' features standardised within each environment (environments with fewer than 2 rows dropped)."""
    keep = counts >= 2
    st = stats[keep, child]  # (E', l + 1, l + 1)
    n_u = counts[keep]
    sxx = st[:, cand[:, None], cand[None, :]]  # (E', k, k)
    sxy = st[:, cand, -1]  # (E', k)
    syy = st[:, -1, -1]  # (E',)
    sd = np.sqrt(np.clip(np.diagonal(sxx, axis1=1, axis2=2), 0, None))  # sqrt of n_u times the variance
    sd = np.where(sd > 1e-12 * np.sqrt(np.maximum(syy, 1e-300))[:, None], sd, np.inf)
    scale = sd / np.sqrt(n_u)[:, None]  # the features' within-environment standard deviations
    xtx = sxx / (scale[:, :, None] * scale[:, None, :])  # standardised: diagonal n_u (0 for constant features)
    xty = sxy / scale
    return xtx, xty, syy, n_u


def parent_set_log_posterior(stats: np.ndarray, counts: np.ndarray, child: int, candidates, *,
                             prior_inclusion: float = 0.3, slab_scale: float = 1.0,
                             spike_scale: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Normalised log posterior of every parent set of one child.

    Parameters
    ----------
    stats, counts
        From :func:`child_statistics`.
    child : int
    candidates : sequence of int
        The latents allowed as parents (those before ``child`` in the causal order), at most
        :data:`MAX_CANDIDATES`.
    prior_inclusion, slab_scale, spike_scale : float
        The spike-and-slab's hyperparameters (module docstring).

    Returns
    -------
    masks : ndarray (2^k, k) bool
        The parent sets, as in :func:`subset_masks`.
    log_post : ndarray (2^k,)
        ``log p(S | z)`` (``logsumexp`` 0).
    """
    _check_hyper(prior_inclusion, slab_scale, spike_scale)
    cand = np.asarray(list(candidates), dtype=np.int64)
    k = len(cand)
    if k > MAX_CANDIDATES:
        raise BayesCRLValueError(
            f"Exact parent-set enumeration is limited to {MAX_CANDIDATES} candidate parents per child "
            f"(2^{MAX_CANDIDATES} sets). Got {k} candidates for child {child}.")
    masks = subset_masks(k)
    size = masks.sum(1)
    log_prior = size * np.log(prior_inclusion) + (k - size) * np.log1p(-prior_inclusion)
    if k == 0:
        return masks, np.zeros(1)
    s2 = float(slab_scale) ** 2
    xtx, xty, syy, n_u = _standardised(stats, counts, child, cand)
    m = masks.astype(np.float64)  # (M, k)
    if spike_scale > 0:  # every candidate stays in the regression, with the spike's or the slab's variance
        a = np.broadcast_to(xtx[None], (len(m), *xtx.shape))
        a = a + np.eye(k)[None, None] * np.where(m, 1.0 / s2, 1.0 / spike_scale**2)[:, None, :, None]
        b = np.broadcast_to(xty[None], (len(m), *xty.shape))
        log_scales = size * 0.5 * np.log(s2) + (k - size) * np.log(spike_scale)
    else:  # a point-mass spike: the candidates outside S leave the regression
        a = xtx[None] * (m[:, None, :, None] * m[:, None, None, :])  # (M, E', k, k)
        a = a + np.eye(k)[None, None] * np.where(m, 1.0 / s2, 1.0)[:, None, :, None]
        b = xty[None] * m[:, None, :]  # (M, E', k)
        log_scales = size * 0.5 * np.log(s2)
    chol = np.linalg.cholesky(a)
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)  # (M, E')
    sol = np.linalg.solve(chol, b[..., None])[..., 0]
    quad = (sol**2).sum(-1)
    resid = np.maximum(syy[None] - quad, 1e-12 * np.maximum(syy[None], 1e-300))
    loglik = -log_scales[:, None] - 0.5 * logdet - 0.5 * (n_u[None] - 1.0) * np.log(resid)
    lp = log_prior + loglik.sum(1)
    lp = lp - np.logaddexp.reduce(lp)
    return masks, lp


def _posteriors_for_order(stats, counts, order, cache, prior_inclusion, slab_scale, spike_scale):
    out = []
    for pos, child in enumerate(order):
        cand = tuple(int(c) for c in order[:pos])
        key = (int(child), tuple(sorted(cand)))
        if key not in cache:
            cs = key[1]
            masks, lp = parent_set_log_posterior(stats, counts, key[0], cs, prior_inclusion=prior_inclusion,
                                                 slab_scale=slab_scale, spike_scale=spike_scale)
            cache[key] = (np.asarray(cs, dtype=np.int64), masks, lp)
        out.append(cache[key])
    return out


def _check_orders(orders, l: int) -> np.ndarray:
    o = np.atleast_2d(np.asarray(orders))
    if o.ndim != 2 or o.shape[1] != l or not all(sorted(r) == list(range(l)) for r in o.tolist()):
        raise BayesCRLValueError(
            f"The 'orders' argument must be one permutation of 0..{l - 1} or an array (B, {l}) of them. "
            f"Got an array of shape {np.shape(orders)} instead.")
    return o.astype(np.int64)


def edge_marginals(stats: np.ndarray, counts: np.ndarray, orders, *, prior_inclusion: float = 0.3,
                   slab_scale: float = 1.0, spike_scale: float = 0.1) -> np.ndarray:
    """Exact posterior edge inclusion probabilities given the latents, averaged over causal orders.

    Parameters
    ----------
    stats, counts
        From :func:`child_statistics`.
    orders : array_like (l,) or (B, l) int
        Causal order(s), root first; the result is the mean over the orders (each a draw of the order's
        posterior, or one fixed order).
    prior_inclusion, slab_scale, spike_scale : float

    Returns
    -------
    ndarray (l, l)
        ``P[j, i]``: posterior probability that ``j -> i`` is an edge (0 where ``j`` does not precede ``i``).
    """
    l = stats.shape[1]
    orders = _check_orders(orders, l)
    cache: dict = {}
    p = np.zeros((l, l))
    for order in orders:
        for child, (cand, masks, lp) in zip(order, _posteriors_for_order(stats, counts, order, cache,
                                                                            prior_inclusion, slab_scale, spike_scale)):
            if len(cand):
                p[cand, child] += np.exp(lp) @ masks
    return p / len(orders)


def sample_parent_sets(stats: np.ndarray, counts: np.ndarray, orders, num_samples: int, *,
                       prior_inclusion: float = 0.3, slab_scale: float = 1.0, spike_scale: float = 0.1,
                       rng: np.random.Generator | None = None,
                       order_index: Callable[[int], int] | None = None) -> np.ndarray:
    """Graphs drawn from the exact posterior over parent sets: one DAG per draw.

    Draw ``s`` uses order ``orders[s mod B]`` (or ``orders[order_index(s)]``) and draws every child's parent
    set from its exact posterior given that order.

    Returns
    -------
    ndarray (num_samples, l, l) bool
        ``[draw, parent, child]``.
    """
    l = stats.shape[1]
    orders = _check_orders(orders, l)
    rng = np.random.default_rng(0) if rng is None else rng
    cache: dict = {}
    out = np.zeros((num_samples, l, l), dtype=bool)
    for s in range(num_samples):
        order = orders[s % len(orders) if order_index is None else order_index(s)]
        for child, (cand, masks, lp) in zip(order, _posteriors_for_order(stats, counts, order, cache,
                                                                            prior_inclusion, slab_scale, spike_scale)):
            if len(cand):
                r = rng.choice(len(lp), p=np.exp(lp) / np.exp(lp).sum())
                out[s, cand[masks[r]], child] = True
    return out
