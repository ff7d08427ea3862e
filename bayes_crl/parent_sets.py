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

Beyond :data:`MAX_CANDIDATES` candidates: a variational posterior
-----------------------------------------------------------------
Enumeration stops at :data:`MAX_CANDIDATES` candidates. Beyond that :func:`variational_inclusion` fits the same
model with the variational family of Carbonetto & Stephens (2012, "varbvs"), extended to strengths per
environment under one indicator per edge: for each candidate ``j`` of child ``i``,

    q(gamma_j, b_j) = q(gamma_j) prod_u q(b_uj | gamma_j),  q(gamma_j = 1) = alpha_j,
    q(b_uj | gamma_j = g) = Normal(mu_guj, sigma_u^2 t_guj),

independent across candidates (mean field over the edges; each indicator paired with its own strengths). The
model is the one above: within environment ``u``, with the candidates' features
standardised and the child centred, ``y_u = X_u b_u + sigma_u eps``, ``b_uj ~ Normal(0, sigma_u^2 v_g)`` with
``v_1 = slab_scale^2`` and ``v_0 = spike_scale^2`` (a point mass when 0), ``gamma_j ~ Bernoulli(pi)``. With
``d = x_j'x_j`` and ``r = x_j'(y - sum_{k != j} x_k E b_k)`` per environment, the strengths' update is closed
form, ``t_g = v_g / (1 + d v_g)``, ``mu_g = t_g r``.

The indicator's update integrates the child's noise scale out locally: given the others' expected residual sum of
squares ``R`` (their fit, posterior spread and prior terms, as in the exact evidence's ``y'y - b'A^{-1}b``),

    logit alpha_j = logit pi + sum_u [ -1/2 log(1 + d v_1) + 1/2 log(1 + d v_0)
                                       - (n_u - 1) / 2 (log(R - t_1 r^2) - log(R - t_0 r^2)) ],

which is the exact log Bayes factor of the edge when it is the only candidate. A noise scale shared by both
values of the indicator (the plain mean-field update) makes an uncertain edge self-confirming at small samples:
against the exact marginals on l = 4 it put 4 % of graphs more than 0.1 off, the local integration 2 %
(BENCHMARKS.md, "Spike-and-slab beyond 12 candidate parents"). Coordinate ascent starts from three points
(every ``alpha`` at the prior, at 1, at 0) and keeps the end point with the highest evidence lower bound (with
the noise scales at their maximisers).

Mean field over the edges is exact when the candidates' features are uncorrelated within every environment; where
correlated candidates explain the same variance it tends to give one of them the edge (up to 0.5 off the exact
marginals at 20-50 rows per environment), and is then sure of it. So the result is refined: the
:data:`REFINE_MAX` candidates whose inclusion is least certain get their exact joint posterior over parent sets,
with every other candidate held in or out as mean field has it and its strengths integrated out exactly (a Schur
complement of the regression on the held candidates). A candidate's doubt is the larger of mean field's own
(``min(alpha, 1 - alpha)``) and the exact posterior weight of the best parent set one move away from mean
field's mode that changes it (adding or dropping it, or swapping it with another candidate: the move that shows
two candidates are alternatives). A child whose uncertain candidates are at most :data:`REFINE_MAX` thus gets its
exact marginals, conditional only on the held candidates being right (BENCHMARKS.md, "Spike-and-slab beyond 12
candidate parents"). Cost: ``O(E k^2)`` per mean-field sweep, ``k + k_in (k - k_in)`` small solves per
environment for the moves (``k_in`` candidates in the mode) and ``2^REFINE_MAX`` for the refinement.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bayes_crl._validation import BayesCRLValueError

__all__ = ["MAX_CANDIDATES", "child_statistics", "parent_set_log_posterior", "subset_masks",
           "edge_marginals", "sample_parent_sets", "variational_inclusion"]

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
    if k == 0:
        return masks, np.zeros(1)
    xtx, xty, syy, n_u = _standardised(stats, counts, child, cand)
    return masks, _masks_log_posterior(xtx, xty, syy, n_u, masks, prior_inclusion, slab_scale, spike_scale)


def _masks_log_posterior(xtx, xty, syy, n_u, masks, prior_inclusion, slab_scale, spike_scale) -> np.ndarray:
    """Normalised log posterior of the parent sets ``masks`` (M, k) from per-environment ``X'X`` (E', k, k),
    ``X'y`` (E', k), ``y'y`` (E',) and rows (E',) (module docstring)."""
    k = masks.shape[1]
    size = masks.sum(1)
    log_prior = size * np.log(prior_inclusion) + (k - size) * np.log1p(-prior_inclusion)
    s2 = float(slab_scale) ** 2
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
    return lp - np.logaddexp.reduce(lp)


def _posteriors_for_order(stats, counts, order, cache, prior_inclusion, slab_scale, spike_scale, method):
    """Per child of ``order``: ``(candidates, masks, probs)`` with the exact posterior over parent sets, or
    ``(candidates, None, (alpha, block))`` with the variational inclusion probabilities and the joint posterior
    of the refined candidates (:func:`variational_inclusion`'s ``return_block``)."""
    out = []
    for pos, child in enumerate(order):
        cand = tuple(int(c) for c in order[:pos])
        key = (int(child), tuple(sorted(cand)))
        if key not in cache:
            cs = np.asarray(key[1], dtype=np.int64)
            hyper = dict(prior_inclusion=prior_inclusion, slab_scale=slab_scale, spike_scale=spike_scale)
            if method == "variational" or (method == "auto" and len(cs) > MAX_CANDIDATES):
                cache[key] = (cs, None, variational_inclusion(stats, counts, key[0], cs, return_block=True,
                                                              **hyper))
            else:
                masks, lp = parent_set_log_posterior(stats, counts, key[0], cs, **hyper)
                p = np.exp(lp)
                cache[key] = (cs, masks, p / p.sum())
        out.append(cache[key])
    return out


_METHODS = ("auto", "exact", "variational")


def _check_method(method) -> str:
    if method not in _METHODS:
        raise BayesCRLValueError(f"The 'method' argument must be one of {_METHODS}. Got {method!r} instead.")
    return method


def _check_orders(orders, l: int) -> np.ndarray:
    o = np.atleast_2d(np.asarray(orders))
    if o.ndim != 2 or o.shape[1] != l or not all(sorted(r) == list(range(l)) for r in o.tolist()):
        raise BayesCRLValueError(
            f"The 'orders' argument must be one permutation of 0..{l - 1} or an array (B, {l}) of them. "
            f"Got an array of shape {np.shape(orders)} instead.")
    return o.astype(np.int64)


def edge_marginals(stats: np.ndarray, counts: np.ndarray, orders, *, prior_inclusion: float = 0.3,
                   slab_scale: float = 1.0, spike_scale: float = 0.1, method: str = "auto") -> np.ndarray:
    """Posterior edge inclusion probabilities given the latents, averaged over causal orders: exact up to
    :data:`MAX_CANDIDATES` candidate parents per child, variational beyond (:func:`variational_inclusion`).

    Parameters
    ----------
    stats, counts
        From :func:`child_statistics`.
    orders : array_like (l,) or (B, l) int
        Causal order(s), root first; the result is the mean over the orders (each a draw of the order's
        posterior, or one fixed order).
    prior_inclusion, slab_scale, spike_scale : float
    method : {"auto", "exact", "variational"}
        ``"auto"``: exact where a child has at most :data:`MAX_CANDIDATES` candidates, variational beyond;
        ``"exact"`` raises beyond; ``"variational"`` everywhere (to check it against the exact answer).

    Returns
    -------
    ndarray (l, l)
        ``P[j, i]``: posterior probability that ``j -> i`` is an edge (0 where ``j`` does not precede ``i``).
    """
    l = stats.shape[1]
    orders = _check_orders(orders, l)
    method = _check_method(method)
    cache: dict = {}
    p = np.zeros((l, l))
    for order in orders:
        for child, (cand, masks, prob) in zip(order, _posteriors_for_order(
                stats, counts, order, cache, prior_inclusion, slab_scale, spike_scale, method)):
            if len(cand):
                p[cand, child] += prob[0] if masks is None else prob @ masks
    return p / len(orders)


def sample_parent_sets(stats: np.ndarray, counts: np.ndarray, orders, num_samples: int, *,
                       prior_inclusion: float = 0.3, slab_scale: float = 1.0, spike_scale: float = 0.1,
                       rng: np.random.Generator | None = None,
                       order_index: Callable[[int], int] | None = None, method: str = "auto") -> np.ndarray:
    """Graphs drawn from the posterior over parent sets: one DAG per draw.

    Draw ``s`` uses order ``orders[s mod B]`` (or ``orders[order_index(s)]``) and draws every child's parent
    set from its posterior given that order: exact, or, where the child has more than :data:`MAX_CANDIDATES`
    candidates (``method`` as in :func:`edge_marginals`), from the variational posterior: the candidates its
    refinement enumerated (up to :data:`REFINE_MAX`, the least certain) jointly from their exact posterior, so
    that two candidates explaining the same variance are drawn as alternatives, the others independently
    from their inclusion probabilities.

    Returns
    -------
    ndarray (num_samples, l, l) bool
        ``[draw, parent, child]``.
    """
    l = stats.shape[1]
    orders = _check_orders(orders, l)
    rng = np.random.default_rng(0) if rng is None else rng
    method = _check_method(method)
    cache: dict = {}
    out = np.zeros((num_samples, l, l), dtype=bool)
    for s in range(num_samples):
        order = orders[s % len(orders) if order_index is None else order_index(s)]
        for child, (cand, masks, prob) in zip(order, _posteriors_for_order(
                stats, counts, order, cache, prior_inclusion, slab_scale, spike_scale, method)):
            if len(cand):
                if masks is None:
                    alpha, (refined, block, block_probs) = prob
                    pick = rng.random(len(cand)) < alpha  # the candidates held by the refinement: independent
                    pick[refined] = block[rng.choice(len(block_probs), p=block_probs)]  # the refined: jointly
                    out[s, cand[pick], child] = True
                else:
                    out[s, cand[masks[rng.choice(len(prob), p=prob)]], child] = True
    return out


_STARTS = ("prior", 1.0, 0.0)


def variational_inclusion(stats: np.ndarray, counts: np.ndarray, child: int, candidates, *,
                          prior_inclusion: float = 0.3, slab_scale: float = 1.0, spike_scale: float = 0.1,
                          max_sweeps: int = 500, tol: float = 1e-7, refine: int | None = None,
                          return_block: bool = False) -> np.ndarray | tuple[np.ndarray, tuple]:
    """Variational posterior inclusion probabilities ``q(gamma_j = 1)`` of one child's candidate parents.

    Parameters
    ----------
    stats, counts
        From :func:`bayes_crl.parent_sets.child_statistics`: (E, l, l + 1, l + 1) and (E,).
    child : int
    candidates : sequence of int
        The latents allowed as parents (any number).
    prior_inclusion, slab_scale, spike_scale : float
        The spike-and-slab's hyperparameters (:mod:`bayes_crl.parent_sets`).
    max_sweeps : int
        Most coordinate-ascent sweeps over the candidates from each start.
    tol : float
        A start has converged when no inclusion probability moved by more than this in a sweep.
    refine : int, optional
        Replace the mean-field probabilities of the ``refine`` (default :data:`REFINE_MAX`) most uncertain
        candidates by their exact posterior with the other candidates held where mean field puts them (module
        docstring); 0 keeps the mean-field probabilities.
    return_block : bool, default False
        Also return the refined candidates' joint posterior, ``(positions, masks, probs)``: their positions in
        ``candidates`` (m,), every subset of them as a (2^m, m) bool mask and its posterior probability
        (2^m,); empty arrays when nothing was refined. :func:`sample_parent_sets` draws that block jointly.

    Returns
    -------
    ndarray (k,)
        ``alpha_j`` in the order of ``candidates``; with ``return_block``, the pair ``(alpha, block)``.
    """
    _check_hyper(prior_inclusion, slab_scale, spike_scale)
    cand = np.asarray(list(candidates), dtype=np.int64)
    k = len(cand)
    if k == 0:
        return np.zeros(0)
    xtx, xty, syy, n_u = _standardised(stats, counts, child, cand)  # (E, k, k), (E, k), (E,), (E,)
    if len(n_u) == 0:
        return np.full(k, float(prior_inclusion))
    v1, v0 = float(slab_scale) ** 2, float(spike_scale) ** 2
    best = None
    for start in _STARTS:
        a0 = float(prior_inclusion) if start == "prior" else float(start)
        alpha, bound = _coordinate_ascent(xtx, xty, syy, n_u, np.full(k, a0), float(prior_inclusion), v1, v0,
                                          int(max_sweeps), float(tol))
        if best is None or bound > best[1]:
            best = (alpha, bound)
    refine = REFINE_MAX if refine is None else int(refine)
    if refine <= 0:
        return best[0]
    alpha, block = _refine(xtx, xty, syy, n_u, best[0], float(prior_inclusion), float(slab_scale),
                           float(spike_scale), refine)
    if return_block:
        return alpha, block
    return alpha


REFINE_MAX = 10
"""Most uncertain candidates whose parent sets :func:`variational_inclusion` enumerates exactly (1024 sets)."""

_CLEAR = 1e-3
_NO_BLOCK = (np.zeros(0, dtype=np.int64), np.zeros((1, 0), dtype=bool), np.ones(1))
_CHUNK_ENTRIES = 2**22


def _move_doubt(xtx, xty, syy, n_u, mode: np.ndarray, pi, slab, spike) -> np.ndarray:
    """Per candidate, the exact posterior weight of the best parent set that differs from the mean-field mode
    ``mode`` (k,) bool by one move involving it (adding or dropping it, or swapping it with another candidate),
    relative to that set and the mode: ``w / (1 + w)`` with ``w`` the posterior ratio. Mean field can be sure
    and wrong where two correlated candidates explain the same variance (it gives one of them the edge with
    ``alpha`` near 1 and the other near 0, where the exact posterior splits it); the swap shows it."""
    k = len(mode)
    inn, out = np.flatnonzero(mode), np.flatnonzero(~mode)
    swap_in, swap_out = np.repeat(inn, len(out)), np.tile(out, len(inn))  # every (in, out) pair
    swaps = np.repeat(mode[None], len(swap_in), axis=0)
    swaps[np.arange(len(swap_in)), swap_in] = False
    swaps[np.arange(len(swap_in)), swap_out] = True
    moves = np.concatenate([mode[None], mode[None] ^ np.eye(k, dtype=bool), swaps])  # the mode, flips, swaps
    # in chunks that each start with the mode (their log posteriors are normalised within the chunk), so that the
    # (moves, E, k, k) systems stay within about _CHUNK_ENTRIES numbers however many latents and environments
    chunk = max(1, _CHUNK_ENTRIES // max(1, xtx.size))
    rel = []
    for a in range(1, len(moves), chunk):
        lp = _masks_log_posterior(xtx, xty, syy, n_u, np.concatenate([moves[:1], moves[a:a + chunk]]), pi, slab,
                                  spike)
        rel.append(np.exp(np.minimum(lp[1:] - lp[0], 0.0)))
    rel = np.concatenate(rel)
    best = rel[:k].copy()
    np.maximum.at(best, swap_in, rel[k:])
    np.maximum.at(best, swap_out, rel[k:])
    return best / (1.0 + best)


def _refine(xtx, xty, syy, n_u, alpha, pi, slab, spike, most: int) -> tuple[np.ndarray, tuple]:
    """Exact posterior over the (up to ``most``) most uncertain candidates, with every other candidate
    held in or out as the mean-field posterior has it; their strengths are integrated out exactly (a Schur
    complement of the regression on the held candidates). Returns the inclusion probabilities of all
    candidates and the refined block ``(positions, masks, probs)``."""
    k = len(alpha)
    doubt = np.maximum(np.minimum(alpha, 1.0 - alpha),
                       _move_doubt(xtx, xty, syy, n_u, alpha >= 0.5, pi, slab, spike))
    unsure = np.flatnonzero(doubt > _CLEAR)
    if len(unsure) == 0:
        return alpha, _NO_BLOCK
    unsure = np.sort(unsure[np.argsort(-doubt[unsure], kind="stable")][:most])
    held = np.setdiff1d(np.arange(k), unsure)
    inside = alpha[held] >= 0.5
    keep = held if spike > 0 else held[inside]  # the held candidates that stay in the regression
    xu, bu, yy = xtx[:, unsure][:, :, unsure], xty[:, unsure], syy
    if len(keep):
        var = np.where(alpha[keep] >= 0.5, slab**2, spike**2)
        a_ff = xtx[:, keep][:, :, keep] + np.diag(1.0 / var)[None]
        a_fu = xtx[:, keep][:, :, unsure]
        b_f = xty[:, keep]
        s_fu = np.linalg.solve(a_ff, a_fu)
        s_fb = np.linalg.solve(a_ff, b_f[..., None])[..., 0]
        xu = xu - np.einsum("efu,efv->euv", a_fu, s_fu)
        bu = bu - np.einsum("efu,ef->eu", a_fu, s_fb)
        yy = syy - np.einsum("ef,ef->e", b_f, s_fb)
    masks = subset_masks(len(unsure))
    lp = _masks_log_posterior(xu, bu, yy, n_u, masks, pi, slab, spike)
    probs = np.exp(lp)
    probs /= probs.sum()
    out = alpha.copy()
    out[unsure] = probs @ masks
    return out, (unsure, masks, probs)


def _coordinate_ascent(xtx, xty, syy, n_u, alpha, pi, v1, v0, max_sweeps, tol):
    """Coordinate ascent from the inclusion probabilities ``alpha``; returns them and the evidence lower bound
    (constants dropped) at the end point."""
    k = len(alpha)
    d = np.diagonal(xtx, axis1=1, axis2=2).copy()  # (E, k)
    t1, t0 = v1 / (1.0 + d * v1), v0 / (1.0 + d * v0)
    log_det = 0.5 * (np.log1p(d * v0) - np.log1p(d * v1))
    logit_pi = np.log(pi) - np.log1p(-pi)
    inv_v0 = 1.0 / v0 if v0 > 0 else 0.0  # a point-mass spike has mu_0 = 0
    # start from the joint posterior means of the strengths with every candidate in the slab (or the spike or the
    # prior's mixture of both): coordinate ascent from the one-at-a-time means of correlated candidates ends in
    # the wrong one's edge
    prior_var = alpha * v1 + (1.0 - alpha) * v0
    inside = prior_var > 0
    mean = np.zeros_like(xty)
    if inside.any():
        ridge = xtx[:, inside][:, :, inside] + np.diag(1.0 / prior_var[inside])[None]
        mean[:, inside] = np.linalg.solve(ridge, xty[:, inside][..., None])[..., 0]
    mu1, mu0 = mean.copy(), (mean.copy() if v0 > 0 else np.zeros_like(mean))
    second = alpha * mu1**2 + (1.0 - alpha) * mu0**2  # E over gamma of the squared conditional means
    pen = alpha * mu1**2 / v1 + (1.0 - alpha) * mu0**2 * inv_v0  # the prior's quadratic term, per candidate
    am = np.einsum("ukl,ul->uk", xtx, mean)  # X'X E b, kept up to date so one update costs O(E k)
    for _ in range(max_sweeps):
        prev = alpha.copy()
        for j in range(k):
            mj = mean[:, j]
            r = xty[:, j] - am[:, j] + d[:, j] * mj
            # the others' expected residual sum of squares, with j's own contribution left out:
            # ||y - X m_o||^2 for m_o = m without j, plus the others' posterior spread and prior terms
            fit_o = (syy - 2.0 * (np.einsum("uk,uk->u", mean, xty) - mj * xty[:, j])
                     + np.einsum("uk,uk->u", mean, am) - 2.0 * mj * am[:, j] + mj**2 * d[:, j])
            terms = d * (second - mean**2) + pen
            big_r = np.maximum(fit_o + terms.sum(1) - terms[:, j], 1e-300)
            lr1 = np.log(np.maximum(big_r - t1[:, j] * r**2, 1e-12 * big_r))
            lr0 = np.log(np.maximum(big_r - t0[:, j] * r**2, 1e-12 * big_r))
            logit = logit_pi + np.sum(log_det[:, j] - 0.5 * (n_u - 1.0) * (lr1 - lr0))
            alpha[j] = 1.0 / (1.0 + np.exp(-np.clip(logit, -700.0, 700.0)))
            mu1[:, j], mu0[:, j] = t1[:, j] * r, t0[:, j] * r
            new_mean = alpha[j] * mu1[:, j] + (1.0 - alpha[j]) * mu0[:, j]
            am += xtx[:, :, j] * (new_mean - mean[:, j])[:, None]
            mean[:, j] = new_mean
            second[:, j] = alpha[j] * mu1[:, j] ** 2 + (1.0 - alpha[j]) * mu0[:, j] ** 2
            pen[:, j] = alpha[j] * mu1[:, j] ** 2 / v1 + (1.0 - alpha[j]) * mu0[:, j] ** 2 * inv_v0
        if np.max(np.abs(alpha - prev)) < tol:
            break
    # the bound at the end point, with sigma_u^2 at its maximiser (n_u - 1 residual degrees of freedom after the
    # flat location, + 2 from the 1 / sigma^2 prior); the strengths' posterior variances cancel against their
    # prior's sigma^2 scaling
    fit = syy - 2.0 * np.einsum("uk,uk->u", mean, xty) + np.einsum("uk,ukl,ul->u", mean, xtx, mean)
    rss = np.maximum(fit + np.sum(d * (second - mean**2) + pen, axis=1), 1e-300)
    dof = n_u + 1.0
    sigma2 = rss / dof
    ell = -0.5 * dof * np.log(sigma2) - 0.5 * dof
    kl1 = -0.5 * np.log1p(d * v1) + d * v1 / (2.0 * (1.0 + d * v1))
    kl0 = -0.5 * np.log1p(d * v0) + d * v0 / (2.0 * (1.0 + d * v0))
    a, b = np.clip(alpha, 1e-300, 1.0), np.clip(1.0 - alpha, 1e-300, 1.0)
    per_edge = (alpha * (kl1.sum(0) + np.log(pi) - np.log(a)) + (1.0 - alpha) * (kl0.sum(0) + np.log1p(-pi)
                                                                                  - np.log(b)))
    return alpha, float(ell.sum() + per_edge.sum())
