"""Causal-order search on inferred latents.

The Pyro model factorises ``p(z | u)`` in a fixed *slot* order (edges only from earlier to later slots),
but which true latent the encoder puts in which slot is decided at random early in training, and a
child placed before its parent turns the graph around. After a warm-up, the fit therefore scores every
order of the current latent estimates with a decomposable, environment-aware additive-model score
(CAM-style, Buehlmann et al. 2014, with per-environment regressions and a BIC penalty), finds the best
order exactly by dynamic programming over subsets (Silander & Myllymaeki 2006) for ``l <= 12``, and
permutes the slots.

Local score of child ``i`` with parent set ``S``, summed over environments ``u`` (the default)::

    -N_u / 2 * log RSS_u(i, S) / N_u  -  1/2 * log(N_u) * (1 + k |S|)

where ``RSS_u`` is the residual sum of squares of the least-squares regression of ``z_i`` on an
intercept and ``k`` basis functions of each parent (``z, tanh(z), z^2`` on standardised latents).

With ``shared=True`` the score is that of the model's own mechanism class, one function per parent shared by
all environments times a strength per environment, ``z_i = b_u + sum_j W[u, j] h_j(z_j)``::

    sum_u [-N_u / 2 * log RSS_u(i, S) / N_u  -  1/2 * log(N_u) * (1 + |S|)]  -  1/2 * log(N) * (k - 1) |S|

On the benchmark's *final* fitted latents it put 52 of 61 true edges forward, against 43 of 61 for the free
score (29 saved fits, ``benchmarks/order_scores.py``), so the fit's final order search uses it
(:func:`bayes_crl.stages.final_identification`). On the blurrier warm-up latents it did worse, so the
searches after the warm-up and at the recheck keep the free score.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["best_order", "best_order_from_scores", "bootstrap_orders", "env_grams", "greedy_order", "local_scores",
           "order_scores", "positions", "precedence", "scores_from_grams"]

_K = 3


def _basis(z: np.ndarray) -> np.ndarray:
    zc = np.clip(z, -4, 4)
    return np.stack([zc, np.tanh(zc), zc**2 - 1.0], -1)  # (N, l, K)


def local_scores(z: np.ndarray, env: np.ndarray, *, penalty: float = 1.0, noise: str = "gaussian",
                 shared: bool = False) -> np.ndarray:
    """Local scores for every child and parent set.

    Parameters
    ----------
    z : ndarray (N, l)
    env : ndarray (N,) int codes
    penalty : float
        Multiplier of the BIC penalty.
    noise : str
        ``"laplace"`` scores residuals with a Laplace likelihood (``-N log mean|r|``), which is what makes
        the order of a *linear* model with non-Gaussian noise identifiable (LiNGAM's asymmetry); any other
        value uses the Gaussian ``-N/2 log RSS/N``.
    shared : bool
        Score the model's own mechanism class: each parent enters through one function shared by all
        environments times a strength per environment, ``z_i = b_u + sum_j W[u, j] h_j(z_j)`` with
        ``h_j`` in the span of the basis (fitted by alternating least squares; BIC counts ``K - 1`` shared
        and one per-environment parameter per parent). ``False``: free basis coefficients in every
        environment. The shared form separates the directions of a nonlinear edge better: the conditional
        mean of a parent given its child changes shape across environments, which free coefficients absorb
        at no cost in fit and the same penalty in both directions.

    Returns
    -------
    ndarray (l, 2**l)
        ``out[i, S]`` for parent bitmask ``S`` (entries with bit ``i`` set are ``-inf``).
    """
    grams, counts, phis = env_grams(z, env)
    return scores_from_grams(grams, counts, phis, z.shape[1], penalty=penalty, noise=noise, shared=shared)


def env_grams(z: np.ndarray, env: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-environment Gram matrices of ``[1, basis of every standardised latent]``.

    Returns ``grams`` (E', P, P) with ``P = 1 + l K``, ``counts`` (E',) rows, and ``phis`` (the per-environment
    feature matrices, needed by the Laplace score), one entry per environment present in ``env`` (sorted codes).
    Everything the scores need: :func:`scores_from_grams` turns them into a local score table.
    """
    z = (z - z.mean(0)) / (z.std(0) + 1e-12)
    feats = _basis(z)  # (N, l, K)
    grams, counts, phis = [], [], []
    for u in np.unique(env):
        m = env == u
        phi = np.concatenate([np.ones((m.sum(), 1)), feats[m].reshape(m.sum(), -1)], 1)  # (n_u, 1 + l K)
        grams.append(phi.T @ phi)
        counts.append(m.sum())
        phis.append(phi)
    return np.stack(grams), np.asarray(counts, float), phis


def scores_from_grams(grams: np.ndarray, counts: np.ndarray, phis: list, l: int, *, penalty: float = 1.0,
                      noise: str = "gaussian", shared: bool = False,
                      env_weights: np.ndarray | None = None) -> np.ndarray:
    """Local score table (l, 2**l) from :func:`env_grams` (see :func:`local_scores` for the score).

    ``env_weights`` (E',) positive, optional: weigh each environment's log-likelihood (an environment of weight
    2 counts as if it had been observed twice; :func:`bootstrap_orders` uses Dirichlet weights).
    """
    G = np.asarray(grams, dtype=np.float64)
    nu = np.asarray(counts, dtype=np.float64)
    if env_weights is not None:
        w = np.asarray(env_weights, dtype=np.float64)
        G, nu = G * w[:, None, None], nu * w  # means and RSS / N per environment are unchanged
    if shared:
        return _shared_scores(G, nu, phis, l, penalty=penalty, noise=noise)
    out = np.full((l, 2**l), -np.inf)
    for i in range(l):
        y = 1 + i * _K  # column of the linear term of z_i
        yy = G[:, y, y]
        for s in range(2**l):
            if s >> i & 1:
                continue
            cols, b, coef = _regression(G, i, [j for j in range(l) if s >> j & 1])
            if noise == "laplace":
                mad = np.array([np.abs(p[:, y] - p[:, cols] @ c).mean() for p, c in zip(phis, coef)])
                ll = -nu * np.log(np.maximum(mad, 1e-9))
            else:
                rss = np.maximum(yy - (b * coef).sum(-1), 1e-9 * nu)
                ll = -0.5 * nu * np.log(rss / nu)
            out[i, s] = ll.sum() - penalty * 0.5 * np.log(nu).sum() * (1 + _K * bin(s).count("1"))
    return out


def _regression(G: np.ndarray, i: int, parents) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Per-environment least squares of latent ``i`` on an intercept and the basis of ``parents`` from the Gram
    matrices ``G`` (E, P, P): the columns used, ``X'y`` (E, c) and the coefficients (E, c)."""
    y = 1 + i * _K
    cols = [0] + [1 + j * _K + k for j in parents for k in range(_K)]
    A = G[:, cols][:, :, cols] + 1e-8 * np.eye(len(cols))
    b = G[:, cols, y]
    return cols, b, np.linalg.solve(A, b[..., None])[..., 0]


def _strengths(c: np.ndarray, Cxx: np.ndarray, Cxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-environment least-squares strengths ``w`` (E, k) of the shared functions ``h_j = basis_j @ c[j]``
    (``c`` (k, K)) given the centred scatters ``Cxx`` (E, kK, kK) and ``Cxy`` (E, kK); also returns the
    right-hand side ``M^T Cxy`` (E, k), whose product with ``w`` is the explained sum of squares."""
    k = c.shape[0]
    M = np.zeros((k * _K, k))
    for a in range(k):
        M[a * _K:(a + 1) * _K, a] = c[a]
    A = np.einsum("pa,epq,qb->eab", M, Cxx, M) + 1e-9 * np.eye(k)
    bvec = np.einsum("pa,ep->ea", M, Cxy)
    return np.linalg.solve(A, bvec[..., None])[..., 0], bvec


def _shared_scores(G: np.ndarray, nu: np.ndarray, phis: list, l: int, *, penalty: float, noise: str,
                   n_iter: int = 15) -> np.ndarray:
    """Local scores of the shared-function model (see :func:`local_scores`, ``shared=True``) from the
    per-environment Gram matrices ``G`` (E, P, P) of ``[1, basis of every latent]``."""
    e = len(nu)
    out = np.full((l, 2**l), -np.inf)
    mean = G[:, 0, :] / nu[:, None]  # (E, P): per-environment means of the columns
    C = G - nu[:, None, None] * mean[:, :, None] * mean[:, None, :]  # centred scatter (E, P, P)
    pen_env = 0.5 * np.log(nu).sum()
    pen_shared = 0.5 * np.log(nu.sum())
    for i in range(l):
        y = 1 + i * _K
        yy = C[:, y, y]
        for s in range(2**l):
            if s >> i & 1:
                continue
            par = [j for j in range(l) if s >> j & 1]
            k = len(par)
            cols = [1 + j * _K + q for j in par for q in range(_K)]
            if k == 0:
                rss = np.maximum(yy, 1e-9 * nu)
                coef_full = None
            else:
                Cxx, Cxy = C[:, cols][:, :, cols], C[:, cols, y]  # (E, kK, kK), (E, kK)
                # start: linear term of every parent (h_j = z_j)
                c = np.zeros((k, _K))
                c[:, 0] = 1.0
                for _ in range(n_iter):
                    w = _strengths(c, Cxx, Cxy)[0]
                    # shapes given the strengths (one least-squares problem pooled over environments)
                    ws = np.repeat(w, _K, axis=1)  # (E, kK)
                    lhs = np.einsum("ep,epq,eq->pq", ws, Cxx, ws) + 1e-9 * np.eye(k * _K)
                    rhs = np.einsum("ep,ep->p", ws, Cxy)
                    c = np.linalg.solve(lhs, rhs).reshape(k, _K)
                    norm = np.linalg.norm(c, axis=1, keepdims=True)
                    c = c / np.where(norm > 0, norm, 1.0)
                w, bvec = _strengths(c, Cxx, Cxy)
                rss = np.maximum(yy - (bvec * w).sum(-1), 1e-9 * nu)
                coef_full = (w[:, :, None] * c[None]).reshape(e, -1)  # (E, kK) basis coefficients
            if noise == "laplace":
                mad = []
                for u, p in enumerate(phis):
                    r = p[:, y] - mean[u, y]
                    if coef_full is not None:
                        r = r - (p[:, cols] - mean[u, cols]) @ coef_full[u]
                    mad.append(np.abs(r).mean())
                ll = -nu * np.log(np.maximum(np.asarray(mad), 1e-9))
            else:
                ll = -0.5 * nu * np.log(rss / nu)
            out[i, s] = ll.sum() - penalty * (pen_env * (1 + k) + pen_shared * (_K - 1) * k)
    return out


def best_order(z: np.ndarray, env: np.ndarray, *, penalty: float = 1.0,
               noise: str = "gaussian", shared: bool = False) -> tuple[list[int], float, np.ndarray]:
    """Best causal order of the columns of ``z`` under the environment-aware additive-model score.

    Returns
    -------
    order : list[int]
        Columns from first (root) to last.
    score : float
        Total score of that order (best parent sets within it).
    parents : ndarray (l, l) int
        Best parent sets within the order, ``parents[j, i] = 1`` for ``j -> i``.
    """
    if z.shape[1] > 12:
        raise ValueError("exact order search is limited to 12 latents")
    return best_order_from_scores(local_scores(z, env, penalty=penalty, noise=noise, shared=shared))


def align_scores(ls: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Re-index a local score table (l, 2**l) of another run into reference coordinates, where the other
    run's latent ``perm[i]`` matches reference latent ``i``."""
    l = ls.shape[0]
    out = np.full_like(ls, -np.inf)
    for s in range(2**l):
        t = 0
        for j in range(l):
            if s >> j & 1:
                t |= 1 << int(perm[j])
        out[:, s] = ls[perm, t]
    return out


def best_order_from_scores(ls: np.ndarray) -> tuple[list[int], float, np.ndarray]:
    """Exact best order and parent sets from a local score table (l, 2**l) (see :func:`local_scores`);
    tables of several runs aligned with :func:`align_scores` can be summed first."""
    l = ls.shape[0]
    full = 2**l
    # best parent subset of i within candidate set P: subset-max dynamic programme
    best_local = np.full((l, full), -np.inf)
    best_set = np.zeros((l, full), dtype=np.int64)
    for i in range(l):
        for p in range(full):
            if p >> i & 1:
                continue
            best_local[i, p], best_set[i, p] = ls[i, p], p
            for j in range(l):
                if p >> j & 1:
                    q = p & ~(1 << j)
                    if best_local[i, q] > best_local[i, p]:
                        best_local[i, p], best_set[i, p] = best_local[i, q], best_set[i, q]
    best = np.full(full, -np.inf)
    best[0] = 0.0
    last = np.zeros(full, dtype=np.int64)
    for u in range(1, full):
        for i in range(l):
            if u >> i & 1:
                prev = u & ~(1 << i)
                v = best[prev] + best_local[i, prev]
                if v > best[u]:
                    best[u], last[u] = v, i
    order, u = [], full - 1
    while u:
        i = last[u]
        order.append(int(i))
        u &= ~(1 << i)
    order = order[::-1]
    parents = np.zeros((l, l), dtype=int)
    pred = 0
    for i in order:
        s = best_set[i, pred]
        for j in range(l):
            if s >> j & 1:
                parents[j, i] = 1
        pred |= 1 << i
    return order, float(best[full - 1]), parents


def order_scores(z: np.ndarray, env: np.ndarray, *, penalty: float = 1.0,
                 noise: str = "gaussian", shared: bool = False) -> dict[tuple[int, ...], float]:
    """Score of every order (only for small ``l``; for inspection and tests)."""
    l = z.shape[1]
    ls = local_scores(z, env, penalty=penalty, noise=noise, shared=shared)
    out = {}
    for perm in itertools.permutations(range(l)):
        tot, pred = 0.0, 0
        for i in perm:
            tot += max(ls[i, s] for s in range(2**l) if s & ~pred == 0 and not s >> i & 1)
            pred |= 1 << i
        out[perm] = tot
    return out


def bootstrap_orders(z: np.ndarray, env: np.ndarray, *, n_draws: int = 100, n_envs: int | None = None,
                     noise: str = "gaussian", shared: bool = True, penalty: float = 1.0,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Causal orders of ``z`` under an environment-level Bayesian bootstrap.

    The environments observed are a sample of the environments that could have been observed. Each draw
    weighs them by ``E * Dirichlet(1, ..., 1)`` weights (Rubin's Bayesian bootstrap, at the level of
    environments: rows within an environment share its noise parameters and strengths, so environments, not
    rows, are the exchangeable units) and finds the best order of the weighted score exactly. How often ``j``
    comes before ``i`` over the draws is the probability of that orientation given the latents; a score that
    prefers one order by a wide margin in every subset of environments gives probability 1. Ties (orders with
    equal scores, as between latents with no edge between them) are broken at random.

    Parameters
    ----------
    z : ndarray (N, l)
        Latents.
    env : ndarray (N,) int codes in ``0..n_envs-1``
    n_draws : int
        Bootstrap draws ``B``. Cost: one score table per draw (with the shared score on 30 x 1000 rows, one
        core: about 0.01 s at l = 3, 0.09 s at l = 5, 0.8 s at l = 7, 2.4 s at l = 8; the Gram matrices are
        computed once; BENCHMARKS.md, fit time).
    n_envs : int, optional
        Number of environment codes (default ``env.max() + 1``); codes without rows get weight 0.
    noise, shared, penalty
        As in :func:`local_scores` (default: the shared score of the model's mechanism class, the one the
        fit's final order check uses).
    seed : int

    Returns
    -------
    orders : ndarray (B, l) int
        One order per draw, root first.
    env_weights : ndarray (B, n_envs) float
        The draws' environment weights (mean 1 over the environments present).
    """
    env = np.asarray(env)
    l = z.shape[1]
    if l > 12:
        raise ValueError("exact order search is limited to 12 latents")
    e = int(env.max()) + 1 if n_envs is None else int(n_envs)
    present = np.unique(env)
    grams, counts, phis = env_grams(z, env)
    rng = np.random.default_rng(seed)
    orders = np.zeros((n_draws, l), dtype=np.int64)
    weights = np.zeros((n_draws, e))
    for b in range(n_draws):
        w = rng.dirichlet(np.ones(len(present))) * len(present)
        weights[b, present] = w
        ls = scores_from_grams(grams, counts, phis, l, penalty=penalty, noise=noise, shared=shared, env_weights=w)
        # relabel the latents at random before the search, so that orders with equal scores (e.g. between
        # independent latents) are picked at random rather than always in the same way
        perm = rng.permutation(l)
        orders[b] = perm[best_order_from_scores(align_scores(ls, perm))[0]]
    return orders, weights


def positions(orders: np.ndarray) -> np.ndarray:
    """Position of every latent in each order: ``pos[b, orders[b, k]] = k`` (B, l)."""
    orders = np.asarray(orders)
    b, l = orders.shape
    pos = np.empty_like(orders)
    pos[np.arange(b)[:, None], orders] = np.arange(l)[None]
    return pos


def precedence(orders: np.ndarray) -> np.ndarray:
    """``P[j, i]``: the fraction of the orders (B, l) in which ``j`` comes before ``i`` (diagonal 0)."""
    pos = positions(orders)
    return (pos[:, :, None] < pos[:, None, :]).mean(0)


def _free_score(G: np.ndarray, nu: np.ndarray, i: int, parents, penalty: float) -> float:
    """Local score of child ``i`` with ``parents`` (the free score of :func:`local_scores`, Gaussian residuals),
    from the per-environment Gram matrices of :func:`env_grams`."""
    y = 1 + i * _K
    _, b, coef = _regression(G, i, sorted(parents))
    rss = np.maximum(G[:, y, y] - (b * coef).sum(-1), 1e-9 * nu)
    return float((-0.5 * nu * np.log(rss / nu)).sum() - penalty * 0.5 * np.log(nu).sum() * (1 + _K * len(parents)))


def _greedy_parents(G, nu, i, candidates, penalty, max_parents, cache) -> tuple[float, tuple[int, ...]]:
    """Forward selection of ``i``'s parents among ``candidates``: add the parent that raises the local score most
    while it rises (at most ``max_parents``)."""
    key = (i, frozenset(candidates))
    if key in cache:
        return cache[key]
    chosen: list[int] = []
    best = _free_score(G, nu, i, chosen, penalty)
    while len(chosen) < max_parents:
        trials = [(_free_score(G, nu, i, chosen + [j], penalty), j) for j in candidates if j not in chosen]
        if not trials:
            break
        s, j = max(trials)
        if s <= best:
            break
        best, chosen = s, chosen + [j]
    cache[key] = (best, tuple(sorted(chosen)))
    return cache[key]


def greedy_order(z: np.ndarray, env: np.ndarray, *, penalty: float = 1.0, max_parents: int = 4, n_starts: int = 4,
                 start=None, seed: int = 0) -> tuple[list[int], float, np.ndarray]:
    """Causal order by hill climbing over orders, for more latents than the exact search allows.

    The score of an order is the sum over latents of the free local score (:func:`local_scores`, Gaussian) of its
    best parent set among its predecessors, found by forward selection with at most ``max_parents`` parents.
    Moves swap two adjacent latents (only their two local scores change); the climb stops when no swap improves
    the score (Teyssier & Koller 2005). It starts from ``start`` (default the identity) and from ``n_starts - 1``
    random orders; the best local optimum is returned. Against :func:`best_order` on true latents it reaches the
    exact optimum on 7 of 10 graphs of 6 and 8 latents and stops in a local optimum on the others
    (``benchmarks/order_search.py``; BENCHMARKS.md, "Order search beyond 12 latents").

    Parameters
    ----------
    z : ndarray (N, l)
    env : ndarray (N,) int codes
    penalty : float
        Multiplier of the BIC penalty.
    max_parents : int
        Largest parent set considered per latent.
    n_starts : int
        Starting orders (the first is ``start``).
    start : sequence of int, optional
    seed : int

    Returns
    -------
    order : list[int]
        Columns from first (root) to last.
    score : float
    parents : ndarray (l, l) int
        The chosen parent sets, ``parents[j, i] = 1`` for ``j -> i``.
    """
    G, nu, _ = env_grams(z, env)
    G = np.asarray(G, dtype=np.float64)
    l = z.shape[1]
    rng = np.random.default_rng(seed)
    cache: dict = {}
    best_run = None
    starts = [list(range(l)) if start is None else [int(v) for v in start]]
    starts += [list(rng.permutation(l)) for _ in range(max(0, n_starts - 1))]
    for order in starts:
        local = [_greedy_parents(G, nu, c, order[:p], penalty, max_parents, cache) for p, c in enumerate(order)]
        improved = True
        while improved:
            improved = False
            for p in range(l - 1):
                a, b = order[p], order[p + 1]
                # after the swap b precedes a: b loses a as a candidate, a gains b
                new_b = _greedy_parents(G, nu, b, order[:p], penalty, max_parents, cache)
                new_a = _greedy_parents(G, nu, a, order[:p] + [b], penalty, max_parents, cache)
                if new_b[0] + new_a[0] > local[p][0] + local[p + 1][0] + 1e-9:
                    order[p], order[p + 1] = b, a
                    local[p], local[p + 1] = new_b, new_a
                    improved = True
        total = sum(s for s, _ in local)
        if best_run is None or total > best_run[1]:
            best_run = (list(order), total, [ps for _, ps in local])
    order, total, psets = best_run
    parents = np.zeros((l, l), dtype=int)
    for c, ps in zip(order, psets):
        parents[list(ps), c] = 1
    return [int(v) for v in order], float(total), parents
