"""From a fitted :class:`~bayes_crl.infer.FitResult` to posterior summaries: draws of the global edge
variables, edge inclusion probabilities, per-environment strengths and networkx graphs.

Conventions: matrices are ``A[parent, child]``; per-environment arrays are ``(E, l, l)``; draws have a
leading sample axis ``S``.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from bayes_crl.infer import FitResult, encode

__all__ = ["inclusion_context", "posterior_draws", "edge_inclusion", "most_probable_graphs", "credible_interval",
           "to_networkx"]


@torch.no_grad()
def inclusion_context(result: FitResult, x: torch.Tensor, env: torch.Tensor) -> dict:
    """What the priors need to turn draws into inclusion probabilities.

    Returns a dict with ``n_per_env`` (float, mean rows per environment), ``snr_env`` (E, l, l):
    ``Var(phi_ji(z_j) | u) / scale_i(u)^2``, ``snr`` (l, l) its mean over environments, and ``env_weight``
    (E, l): ``n_u scale_i(u)^2`` normalised over environments (how much each environment contributes to the
    child's noise variance; :func:`bayes_crl.priors.edge_effect` pools with it).
    """
    net = result.net
    e, l = net.n_envs, net.n_latents
    s1 = torch.zeros(e, l, l)
    s2 = torch.zeros(e, l, l)
    for i in range(0, len(x), 65536):  # chunked: memory does not grow with N
        feats = net.features(encode(net, x[i:i + 65536], env[i:i + 65536]))  # (B, l, l)
        s1.index_add_(0, env[i:i + 65536], feats)
        s2.index_add_(0, env[i:i + 65536], feats**2)
    counts = torch.bincount(env, minlength=e).clamp(min=1).to(s1.dtype)
    mean, sq = s1 / counts[:, None, None], s2 / counts[:, None, None]
    var = (sq - mean**2).clamp(min=0)  # (E, l, l)
    scale2 = net.noise_scale() ** 2  # (E, l)
    snr_env = var / scale2[:, None, :]
    wgt = counts[:, None] * scale2
    return {"n_per_env": float(counts.mean()), "snr": snr_env.mean(0), "snr_env": snr_env,
            "env_weight": wgt / wgt.sum(0, keepdim=True)}


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
def edge_inclusion(result: FitResult, context: dict, num_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """Posterior edge inclusion probabilities (l, l), by the prior's own definition."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = result.global_guide.draws(num_samples)
    p = result.prior.inclusion(d, context) * result.net.mask
    return p.numpy()


@torch.no_grad()
def most_probable_graphs(result: FitResult, context: dict, k: int = 5, num_samples: int = 1000,
                         seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """The ``k`` most frequent graphs among posterior draws, with their posterior mass.

    Each draw of the global edge variables gives a graph through the prior's per-draw edge indicators;
    the mass of a graph is the fraction of draws that give it (a Monte Carlo estimate; with a point-estimate
    prior there is one graph with mass 1). Returns ``[(adjacency (l, l) int, mass), ...]``, most probable first.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = result.global_guide.draws(num_samples)
    ind = (result.prior.indicators(d, context) & result.net.mask.bool()).numpy().astype(np.int8)
    graphs, counts = np.unique(ind.reshape(num_samples, -1), axis=0, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:k]
    l = ind.shape[-1]
    return [(graphs[t].reshape(l, l).astype(int), float(counts[t] / num_samples)) for t in top]


def credible_interval(draws: np.ndarray, prob: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed credible interval over the leading sample axis."""
    a = (1 - prob) / 2
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)


def to_networkx(inclusion: np.ndarray, weight: np.ndarray, *, names, threshold: float = 0.5,
                weight_draws: np.ndarray | None = None, prob: float = 0.9) -> nx.DiGraph:
    """A ``networkx.DiGraph`` with the edges whose inclusion probability is at least ``threshold``.

    Edge attributes: ``probability``, ``weight`` (posterior mean strength averaged over environments),
    ``weight_per_env`` (E,), and, given ``weight_draws`` (S, E, l, l), ``weight_ci`` ((E,), (E,)) the
    equal-tailed ``prob`` credible interval per environment.
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
                attrs = {"probability": float(inclusion[j, i]), "weight": float(weight[:, j, i].mean()),
                         "weight_per_env": weight[:, j, i].copy()}
                if lo is not None:
                    attrs["weight_ci"] = (lo[:, j, i].copy(), hi[:, j, i].copy())
                g.add_edge(names[j], names[i], **attrs)
    return g
