"""From a fitted :class:`~bayes_crl.infer.FitResult` to posterior summaries: draws of the global edge
variables, edge inclusion probabilities, per-environment strengths and networkx graphs.

Conventions: matrices are ``A[parent, child]``; per-environment arrays are ``(E, l, l)``; draws have a
leading sample axis ``S``.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from bayes_crl.device import CPU, on_device
from bayes_crl.fit_result import FitResult
from bayes_crl.order import bootstrap_orders, positions, precedence
from bayes_crl.rows import CHUNK_ROWS

N_LATENT_DRAWS = 4
"""Draws of the latents from ``q(z | x, u)`` that the spike-and-slab's exact edge marginals are averaged over."""

__all__ = ["inclusion_context", "posterior_draws", "edge_indicator_draws", "edge_inclusion", "edge_orientation",
           "most_probable_graphs", "credible_interval", "to_networkx"]


@torch.no_grad()
def inclusion_context(result: FitResult, x: torch.Tensor, env: torch.Tensor, *, n_order_draws: int = 0,
                      seed: int = 0, n_latent_draws: int = N_LATENT_DRAWS, device: torch.device = CPU) -> dict:
    """What the priors need to turn draws into inclusion probabilities, and the orientation draws.

    Parameters
    ----------
    result : FitResult
    x : Tensor (N, d) or :class:`bayes_crl.rows.ArrayRows` (read in chunks), env : Tensor (N,) int64
        The (scaled) training data.
    n_order_draws : int
        Environment-bootstrap draws of the causal order of the fitted latents
        (:func:`bayes_crl.order.bootstrap_orders`, shared score, on at most ``MAX_SEARCH_ROWS`` rows). 0 keeps
        the fitted order fixed: the probabilities are then conditional on it.
    seed : int
    n_latent_draws : int
        For priors with exact inclusion (:attr:`~bayes_crl.priors.EdgePrior.exact_inclusion`, the spike-and-slab):
        how many draws of the latents from ``q(z | x, u)`` (one per row each) the exact parent-set posterior is
        averaged over.
    device : torch.device, default CPU
        Where the encoder passes over ``x`` run (the rows move there chunk by chunk; the random draws are made
        on the CPU, so the result does not depend on the device beyond floating point).

    Returns
    -------
    dict
        ``n_per_env`` (float, mean rows per environment), ``snr_env`` (E, l, l):
        ``Var(phi_ji(z_j) | u) / scale_i(u)^2`` with ``z`` drawn from the encoder's posterior ``q(z | x, u)`` (one
        draw per row, seeded by ``seed``), ``snr`` (l, l) its mean over environments, and ``env_weight``
        (E, l): ``n_u scale_i(u)^2`` normalised over environments (how much each environment contributes to the
        child's noise variance; :func:`bayes_crl.priors.edge_effect` pools with it). With ``n_order_draws > 0``
        also ``order_draws`` (B, l) int64 (latent indices, root first) and ``env_draws`` (B, E): the bootstrap
        weights of the environments in each draw. For priors with exact inclusion also ``parent_stats``
        (K, E, l, l + 1, l + 1) and ``parent_counts`` (K, E): :func:`bayes_crl.parent_sets.child_statistics` of
        ``K = n_latent_draws`` draws of the latents, and ``seed``.
    """
    from bayes_crl.rows import row_subset
    from bayes_crl.stages import MAX_SEARCH_ROWS

    net = on_device(result.net, device)
    e, l = net.n_envs, net.n_latents
    s1 = torch.zeros(e, l, l)
    s2 = torch.zeros(e, l, l)
    n = len(x)
    keep = None
    if n_order_draws > 0 and n > MAX_SEARCH_ROWS:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[row_subset(n, MAX_SEARCH_ROWS, seed + 1)] = True
    # the latents the order bootstrap needs, in one buffer filled chunk by chunk (small tensors kept alive between
    # the chunks' large temporaries fragment the heap: the process grew by 100 MB over 10^7 rows)
    z_keep = torch.empty(int(keep.sum()) if keep is not None else (n if n_order_draws > 0 else 0), l)
    filled = 0
    gen = torch.Generator().manual_seed(seed + 2)
    shift = net.shift_matrix()
    for i in range(0, n, CHUNK_ROWS):  # chunked: memory does not grow with N
        loc, scale, u = net.encoder.forward_full(x[i:i + CHUNK_ROWS].to(device), env[i:i + CHUNK_ROWS].to(device))
        z = (loc @ shift).to(CPU)  # posterior means (as encode)
        # the parents' features on latents drawn from q(z | x, u), one draw per row: the model's noise scales are
        # those of latents drawn from q (their variance includes q's), so the explained variance is measured on the
        # same footing (on posterior means it comes out smaller, and weak edges fall below min_effect)
        w = scale * torch.randn(loc.shape, generator=gen).to(device)
        if u is not None:
            w = (w.unsqueeze(-2) @ u).squeeze(-2)
        feats = net.features((loc + w) @ shift).to(CPU)  # (B, l, l)
        s1.index_add_(0, env[i:i + CHUNK_ROWS], feats)
        s2.index_add_(0, env[i:i + CHUNK_ROWS], feats**2)
        if n_order_draws > 0:
            zk = z if keep is None else z[keep[i:i + CHUNK_ROWS]]
            z_keep[filled:filled + len(zk)] = zk
            filled += len(zk)
    counts = torch.bincount(env, minlength=e).clamp(min=1).to(s1.dtype)
    exact = getattr(result.prior, "exact_inclusion", False)
    mean, sq = s1 / counts[:, None, None], s2 / counts[:, None, None]
    var = (sq - mean**2).clamp(min=0)  # (E, l, l)
    scale2 = result.net.noise_scale() ** 2  # (E, l)
    snr_env = var / scale2[:, None, :]
    wgt = counts[:, None] * scale2
    ctx = {"n_per_env": float(counts.mean()), "snr": snr_env.mean(0), "snr_env": snr_env,
           "env_weight": wgt / wgt.sum(0, keepdim=True)}
    if exact:
        ctx["parent_stats"], ctx["parent_counts"] = _latent_draw_statistics(net, x, env, n_latent_draws, seed,
                                                                            device)
        ctx["seed"] = int(seed)
    if n_order_draws > 0 and l > 1:
        z = z_keep.double().numpy()
        ev = env.numpy() if keep is None else env[keep].numpy()
        orders, weights = bootstrap_orders(z, ev, n_draws=n_order_draws, n_envs=e, noise=result.noise.name,
                                           shared=True, seed=seed)
        ctx["order_draws"] = torch.as_tensor(orders)
        ctx["env_draws"] = torch.as_tensor(weights, dtype=s1.dtype)
    return ctx


@torch.no_grad()
def _latent_draw_statistics(net, x: torch.Tensor, env: torch.Tensor, k: int, seed: int,
                            device: torch.device = CPU) -> tuple[torch.Tensor, torch.Tensor]:
    """Within-environment centred cross-products of ``(phi_.i(z), z_i)`` for ``k`` draws of ``z ~ q(z | x, u)``
    (:func:`bayes_crl.parent_sets.child_statistics`), accumulated in float64 chunk by chunk (``net`` on
    ``device``, the rows moved there chunk by chunk).

    Returns ``stats`` (k, E, l, l + 1, l + 1) and ``counts`` (k, E) float64 tensors.
    """
    e, l = net.n_envs, net.n_latents
    n = len(x)
    shift = net.shift_matrix()
    gen = torch.Generator().manual_seed(seed + 3)
    m1 = torch.zeros(k, e, l, l + 1, dtype=torch.float64)
    m2 = torch.zeros(k, e, l, l + 1, l + 1, dtype=torch.float64)
    for i in range(0, n, CHUNK_ROWS):
        ev = env[i:i + CHUNK_ROWS]
        loc, scale, u = net.encoder.forward_full(x[i:i + CHUNK_ROWS].to(device), ev.to(device))
        for r in range(k):
            w = scale * torch.randn(loc.shape, generator=gen).to(device)
            if u is not None:
                w = (w.unsqueeze(-2) @ u).squeeze(-2)
            z = (loc + w) @ shift
            v = torch.cat([net.features(z).transpose(-1, -2), z.unsqueeze(-1)], -1).to(CPU).double()  # (B, l, l + 1)
            m1[r].index_add_(0, ev, v)
            m2[r].index_add_(0, ev, v.unsqueeze(-1) * v.unsqueeze(-2))
    cnt = torch.bincount(env, minlength=e).double()
    c = cnt.clamp(min=1)[:, None, None, None]
    stats = m2 - m1.unsqueeze(-1) * m1.unsqueeze(-2) / c
    stats = torch.where((cnt >= 2)[None, :, None, None, None], stats, torch.zeros_like(stats))
    return stats, cnt.expand(k, e).clone()


@torch.no_grad()
def posterior_draws(result: FitResult, num_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Draws of the global edge sites from the variational posterior plus the effective strengths
    ``weight`` (S, E, l, l) (zero outside the learned order's allowed edges)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = result.global_guide.draws(num_samples)
    out = {k: v.numpy() for k, v in d.items()}
    out["weight"] = (result.prior.weights(d) * result.net.mask).numpy()
    return out


@torch.no_grad()
def edge_indicator_draws(result: FitResult, context: dict, num_samples: int = 1000, seed: int = 0) -> torch.Tensor:
    """One graph per posterior draw: edge indicators (S, l, l) bool, ``[parent, child]``.

    Without orientation draws in ``context``: the prior's indicators (:meth:`~bayes_crl.priors.EdgePrior.indicators`)
    of each draw of the global edge variables, within the fitted order (the probabilities are conditional on
    the fitted latents and their order).

    For a prior with exact inclusion (the spike-and-slab), draw ``s`` is a graph drawn from the exact posterior
    over parent sets given latent draw ``s mod K`` and order draw ``s mod B`` of ``context``.

    With ``order_draws`` and ``env_draws`` (from :func:`inclusion_context` with ``n_order_draws > 0``), draw ``s``
    is paired with bootstrap draw ``b = s mod B``:

    - *adjacency*: the prior's indicator of the pair, with the environments in its pooled effect reweighted by
      the bootstrap weights of draw ``b`` (an edge whose effect rests on a few environments is then included
      in some draws and not in others);
    - *orientation*: the edge points from the earlier to the later latent of order ``b``.

    So every draw is a DAG, and the inclusion probability of ``j -> i`` is the posterior probability that
    the two are adjacent *and* that ``j`` precedes ``i``. It carries the two uncertainties the strengths'
    variational posterior (given the latents, with N rows) does not: which way an edge points and how much
    its effect depends on the particular environments observed. The effect of a pair is measured in the
    fitted orientation even in draws that reverse it (an approximation: the edge's share of explained
    variance is not the same in both directions).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = result.global_guide.draws(num_samples)
    if getattr(result.prior, "exact_inclusion", False):
        return result.prior.indicators(d, {**context, "seed": seed})
    mask = result.net.mask.bool()
    if "order_draws" not in context:
        return result.prior.indicators(d, context) & mask
    orders, env_draws = context["order_draws"], context["env_draws"]
    b = torch.arange(num_samples) % orders.shape[0]
    ctx = dict(context)
    ew = context["env_weight"].unsqueeze(0) * env_draws[b].unsqueeze(-1)  # (S, E, l)
    ctx["env_weight"] = ew / ew.sum(1, keepdim=True).clamp(min=1e-30)
    ind = result.prior.indicators(d, ctx) & mask
    adj = ind | ind.transpose(-1, -2)
    pos = torch.as_tensor(positions(orders.numpy()))[b]  # (S, l): each draw's position of every latent
    return adj & (pos.unsqueeze(-1) < pos.unsqueeze(-2))


@torch.no_grad()
def edge_inclusion(result: FitResult, context: dict, num_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """Posterior edge inclusion probabilities (l, l): the mean of :func:`edge_indicator_draws`, or, for a prior
    with exact inclusion (the spike-and-slab), the exact marginals themselves."""
    if getattr(result.prior, "exact_inclusion", False):
        return result.prior.inclusion({}, context).to(torch.float64).numpy()
    return edge_indicator_draws(result, context, num_samples, seed).to(torch.float64).mean(0).numpy()


def edge_orientation(context: dict) -> np.ndarray:
    """``P[j, i]``: the probability that latent ``j`` precedes latent ``i`` in the causal order (l, l).

    From the environment-bootstrap ``order_draws`` of ``context``; without them, 1 where the fitted slot
    order (slots are numbered in causal order) puts ``j`` first.
    """
    if "order_draws" in context:
        return precedence(np.asarray(context["order_draws"]))
    l = context["snr_env"].shape[-1]
    return np.triu(np.ones((l, l)), 1)


@torch.no_grad()
def most_probable_graphs(result: FitResult, context: dict, k: int = 5, num_samples: int = 1000,
                         seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """The ``k`` most frequent graphs among posterior draws, with their posterior mass.

    Each draw gives a graph (:func:`edge_indicator_draws`); the mass of a graph is the fraction of draws that
    give it (a Monte Carlo estimate; with a point-estimate prior and no orientation draws there is one graph
    with mass 1). Returns ``[(adjacency (l, l) int, mass), ...]``, most probable first.
    """
    ind = edge_indicator_draws(result, context, num_samples, seed).numpy().astype(np.int8)
    graphs, counts = np.unique(ind.reshape(num_samples, -1), axis=0, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:k]
    l = ind.shape[-1]
    return [(graphs[t].reshape(l, l).astype(int), float(counts[t] / num_samples)) for t in top]


def credible_interval(draws: np.ndarray, prob: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed credible interval over the leading sample axis."""
    a = (1 - prob) / 2
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)


def to_networkx(inclusion: np.ndarray, weight: np.ndarray, *, names, threshold: float = 0.5,
                weight_draws: np.ndarray | None = None, prob: float = 0.9,
                allowed: np.ndarray | None = None) -> nx.DiGraph:
    """A ``networkx.DiGraph`` with the edges whose inclusion probability is at least ``threshold``.

    Edge attributes: ``probability``, ``weight`` (posterior mean strength averaged over environments),
    ``weight_per_env`` (E,), and, given ``weight_draws`` (S, E, l, l), ``weight_ci`` ((E,), (E,)) the
    equal-tailed ``prob`` credible interval per environment. Given ``allowed`` (l, l) bool, the pairs the
    fitted order holds strengths for, also ``in_fitted_order``; an edge that points against the fitted order
    (the environment bootstrap reversed it in most draws) has no strengths of its own: its ``weight``,
    ``weight_per_env`` and ``weight_ci`` are ``nan``.
    """
    g = nx.DiGraph()
    g.add_nodes_from(names)
    l = inclusion.shape[0]
    lo = hi = None
    if weight_draws is not None:
        lo, hi = credible_interval(weight_draws, prob)
    for j in range(l):
        for i in range(l):
            if i != j and inclusion[j, i] >= threshold:
                fitted = True if allowed is None else bool(allowed[j, i])
                nan = np.full(weight.shape[0], np.nan)
                attrs = {"probability": float(inclusion[j, i]),
                         "weight": float(weight[:, j, i].mean()) if fitted else float("nan"),
                         "weight_per_env": weight[:, j, i].copy() if fitted else nan}
                if lo is not None:
                    attrs["weight_ci"] = (lo[:, j, i].copy(), hi[:, j, i].copy()) if fitted else (nan, nan.copy())
                if allowed is not None:
                    attrs["in_fitted_order"] = fitted
                g.add_edge(names[j], names[i], **attrs)
    return g
