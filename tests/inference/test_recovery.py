"""Slow recovery checks on simulated data with known truth (run with ``pytest -m slow``).

Tolerances come from the recovery benchmark (BENCHMARKS.md) with the defaults (horseshoe,
4500 steps, 4 batched warm-ups) on the 3-latent nonlinear chain (30 environments x 1000 rows):
- seed 0: MPC 0.976 and the exact graph at 0.5 (true pooled effects 0.49 and 0.62, strong edges; the true edges at
  0.98 and 1.00, the grandparent z0 -> z2 at 0.37); the check asks MPC >= 0.93 and the exact graph, so a
  regression in latents or orientation fails;
- seed 1: MPC 0.995 with weak edges (true pooled effects only 0.08 and 0.16). The defaults give z1 - z2 0.98 and
  the weaker z0 - z1 only 0.19 (`recovery_default.jsonl`): the weak edge is missed at 0.5 (SHD 1), so the check
  is that the strong edge is found and the weak edge still ranks above the absent z0 - z2 (0.00).

The fits run with one torch thread, as the benchmark does. A single fit is sensitive to floating-point details:
seed 0 with 2 threads has given MPC 0.834 where one thread gave 0.970. Run-to-run spread across seeds and
configurations is documented in BENCHMARKS.md.
"""
import numpy as np
import pytest

from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

pytestmark = pytest.mark.slow


def _chain3_fit(seed: int):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in benchmarks/recovery.py
    try:
        return _fit(seed)
    finally:
        torch.set_num_threads(threads)


def _fit(seed: int):
    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, mechanism="nonlinear", random_state=seed)
    m = LatentCausalModel(n_latents=3, random_state=seed).fit(d.x, env=d.env)
    score, perm, _ = metrics.mpc(d.z, m.transform(d.x, env=d.env), return_matching=True)
    return score, metrics.align_graph(m.edge_inclusion_, perm)


@pytest.fixture(scope="module")
def chain3_seed1():
    return _chain3_fit(1)


def test_chain3_recovery_seed0_latents_and_exact_graph():
    score, probs = _chain3_fit(0)
    assert score >= 0.93
    truth = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    off = ~np.eye(3, dtype=bool)
    assert (probs[truth] > 0.5).all() and (probs[off & ~truth] < 0.5).all()


def test_chain3_recovery_seed1_latents(chain3_seed1):
    score, _ = chain3_seed1
    assert score >= 0.95


def test_chain3_recovery_seed1_weak_edges(chain3_seed1):
    _, probs = chain3_seed1
    skel = np.maximum(probs, probs.T)
    assert skel[1, 2] > 0.5
    assert skel[0, 1] > skel[0, 2] + 0.1  # measured 0.19 against 0.00


def test_null_no_latent_edges_gives_low_edge_probabilities():
    """Independent latents: no edge is included (default horseshoe; measured 0, 0, 0). A plain mean over
    environments in the centring gave 0.925 on one pair (one environment where the parent's variance is tiny moved
    it); the pooled centring and effect measure are what keep it at 0.

    Under the horseshoe's definition (posterior probability of an explained-variance share >= 0.05, with the
    environments reweighted by the bootstrap draws) a clear false edge has a probability near 1, so a single
    one among the three pairs (mean 0.33) fails the check. Both orientations of a pair count (edges may point
    either way)."""
    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=500, mechanism="nonlinear",
                            graph=np.zeros((3, 3), dtype=int), random_state=0)
    m = LatentCausalModel(n_latents=3, random_state=0, num_steps=3000).fit(d.x, env=d.env)
    p = m.edge_inclusion_
    pairs = np.triu(np.ones((3, 3)), 1).astype(bool)
    assert (p + p.T)[pairs].mean() <= 0.1  # probability that a pair is adjacent, either way


def test_many_environments_and_latents_fit_without_nonfinite_losses():
    """200 environments and 10 latents: every step finite (none rejected), outputs well formed."""
    d = simulate_latent_anm(n_latents=10, n_envs=200, n_per_env=30, n_obs_dims=12, graph="random",
                            mechanism="nonlinear", random_state=0)
    m = LatentCausalModel(n_latents=10, num_steps=300, n_restarts=1, random_state=0,
                          num_posterior_samples=100).fit(d.x, env=d.env)
    assert np.isfinite(m.loss_).all() and m.result_.n_rejected == 0
    assert m.edge_inclusion_.shape == (10, 10) and m.edge_weight_.shape == (200, 10, 10)


def test_outside_regime_linear_chain_weak_strengths_d_2l():
    """The regime of outside generators (benchmarks/recovery.py suite ``wide``, setting chain3-d6-lin): linear
    mechanisms, strengths |w| in (0.2, 1.5) with random signs, observed dimension d = 2l = 6. Measured with one
    torch thread on seed 0: MPC 0.987, per latent 0.991, 0.980, 0.989, linear ceiling 0.992-0.995 (BENCHMARKS.md,
    wide grid). The check asks MPC >= 0.95 and the root >= 0.95: a regression that loses the coordinates (the
    failure on d = l outside data, where the matched correlations fall to 0.7-0.9 under a ceiling of 0.95+) fails
    it, while the seed-to-seed and thread-count spread of the identifiable settings (about 0.02) does not. The
    graph is not checked: a linear-Gaussian chain's orientation is not identified by the order search."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, n_obs_dims=6, mechanism="linear",
                                weight_range=(0.2, 1.5), random_state=0)
        m = LatentCausalModel(n_latents=3, random_state=0).fit(d.x, env=d.env)
    finally:
        torch.set_num_threads(threads)
    z = m.transform(d.x, env=d.env)
    assert metrics.mpc(d.z, z) >= 0.95
    assert metrics.per_latent_correlation(d.z, z)[0] >= 0.95  # z0 is the chain's root


def test_spike_and_slab_chain3_exact_edge_posterior():
    """The spike-and-slab's exact edge posterior on a recovered chain (seed 0): measured MPC 0.978, true edges
    at probability 1.00, the edges against the causal order at 0.00. The grandparent edge z0 -> z2 is not
    checked: the middle latent comes out a little mixed with its parent (0.94 on this seed; the centring settles
    the flat direction ``z1 - c h(z0)`` near, not at, the truth), and an exact posterior given those latents
    reports the leak as an edge (1.00 here; on 3 of 5 chain seeds, BENCHMARKS.md, "Edge posterior"). The check
    leaves room for a fit that differs in floating-point details: MPC >= 0.95, true edges >= 0.9, reversed
    edges <= 0.1."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, mechanism="nonlinear", random_state=0)
        m = LatentCausalModel(n_latents=3, edge_prior="spike_slab", random_state=0).fit(d.x, env=d.env)
    finally:
        torch.set_num_threads(threads)
    score, perm, _ = metrics.mpc(d.z, m.transform(d.x, env=d.env), return_matching=True)
    probs = metrics.align_graph(m.edge_inclusion_, perm)
    assert score >= 0.95
    truth = d.adjacency.astype(bool)
    assert (probs[truth] >= 0.9).all()
    assert (probs[np.tril_indices(3, -1)] <= 0.1).all()  # every edge against the chain's order
