"""Latents drawn from the spike-and-slab prior of :mod:`bayes_crl.parent_sets`: data whose true graph is a draw
of the prior, the reference for checking that edge probabilities are calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpikeSlabLatents", "simulate_spike_slab_latents"]


@dataclass
class SpikeSlabLatents:
    """Latents with a graph drawn from the spike-and-slab prior.

    Attributes
    ----------
    z : ndarray (N, l)
    env : ndarray (N,) int
    adjacency : ndarray (l, l) int, ``[parent, child]``; the causal order is ``0, 1, ..., l - 1``
    weights : ndarray (E, l, l), the raw strengths ``W[u, parent, child]``
    """

    z: np.ndarray
    env: np.ndarray
    adjacency: np.ndarray
    weights: np.ndarray


def simulate_spike_slab_latents(n_latents: int, n_envs: int, n_per_env: int, *, prior_inclusion: float = 0.3,
                                slab_scale: float = 1.0, spike_scale: float = 0.0, effect: float | None = None,
                                null: bool = False,
                                random_state: int | np.random.Generator | None = None) -> SpikeSlabLatents:
    """Draw a graph, strengths and latents from the spike-and-slab latent model.

    Per edge ``j -> i`` (``j < i``) an indicator ``~ Bernoulli(prior_inclusion)``; per environment the
    standardised strength ``W[u, j, i] sd_u(z_j) / sigma_i(u) ~ Normal(0, slab_scale^2)`` (``sd_u`` the sample
    standard deviation of the parent in that environment), or ``= +-effect`` with a random sign when ``effect``
    is given; an absent edge has standardised strength ``~ Normal(0, spike_scale^2)`` per environment (0 with
    the default ``spike_scale = 0``, with ``effect`` and with ``null``); noise ``sigma_i(u) ~ U(0.2, 2)`` and mean ``mu_i(u) ~ U(-2, 2)``. Latents are generated in the
    order ``0, ..., l-1``.

    Parameters
    ----------
    n_latents, n_envs, n_per_env : int
    prior_inclusion, slab_scale, spike_scale : float
    effect : float, optional
        A fixed standardised strength instead of the slab (effect-size grids).
    null : bool
        No edges at all (independent latents).
    random_state : int or Generator, optional

    Returns
    -------
    SpikeSlabLatents
    """
    rng = np.random.default_rng(random_state)
    l, e, m = n_latents, n_envs, n_per_env
    adj = np.triu(rng.random((l, l)) < prior_inclusion, 1).astype(int)
    if null:
        adj[:] = 0
    z = np.zeros((e, m, l))
    w = np.zeros((e, l, l))
    for u in range(e):
        sigma = rng.uniform(0.2, 2.0, l)
        mu = rng.uniform(-2.0, 2.0, l)
        for i in range(l):
            y = mu[i] + sigma[i] * rng.standard_normal(m)
            for j in range(i):
                sd = z[u, :, j].std()
                if adj[j, i]:
                    std_w = rng.choice([-1.0, 1.0]) * effect if effect is not None else slab_scale * rng.standard_normal()
                elif spike_scale > 0 and effect is None and not null:
                    std_w = spike_scale * rng.standard_normal()
                else:
                    continue
                w[u, j, i] = std_w * sigma[i] / max(sd, 1e-12)
                y = y + w[u, j, i] * z[u, :, j]
            z[u, :, i] = y
    env = np.repeat(np.arange(e), m)
    return SpikeSlabLatents(z=z.reshape(e * m, l), env=env, adjacency=adj, weights=w)
