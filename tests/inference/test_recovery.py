"""Slow recovery checks on simulated data with known truth (run with ``pytest -m slow``).

Tolerances come from the recovery benchmark (BENCHMARKS.md): with the defaults (horseshoe, 6000 steps,
4 warm-ups) the 3-latent nonlinear chain (30 environments x 1000 rows) gives MPC 0.905-0.988 over seeds 0-4
(seed 1: 0.988, both edges found, no false edge); the check asks 0.88 for seed 1, so a real regression fails
while run-to-run noise across library versions does not.
"""
import numpy as np
import pytest

from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

pytestmark = pytest.mark.slow


def test_chain3_recovery_seed1():
    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, mechanism="nonlinear", random_state=1)
    m = LatentCausalModel(n_latents=3, random_state=1).fit(d.x, env=d.env)
    score, perm, _ = metrics.mpc(d.z, m.transform(d.x, env=d.env), return_matching=True)
    assert score >= 0.88
    probs = metrics.align_graph(m.edge_inclusion_, perm)
    # the two true edges (skeleton) carry high probability, in either direction
    skel = np.maximum(probs, probs.T)
    assert skel[0, 1] > 0.5 and skel[1, 2] > 0.5


def test_null_no_latent_edges_gives_low_edge_probabilities():
    """Independent latents: no edge is included (default horseshoe). Measured 0, 0, 0 on 2026-11-23; 0.925, 0, 0
    after the centring of 2026-11-24 (a plain mean over environments, moved by one environment where the
    parent's variance is tiny); 0, 0, 0 again with the pooled centring and effect measure (2026-11-24, session 5).

    Under the horseshoe's definition (posterior probability of an explained-variance share >= 0.05) the
    probabilities of one fit are near 0 or 1, so a single false edge among the three allowed ones (mean 0.33)
    fails the check."""
    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=500, mechanism="nonlinear",
                            graph=np.zeros((3, 3), dtype=int), random_state=0)
    m = LatentCausalModel(n_latents=3, random_state=0, num_steps=3000).fit(d.x, env=d.env)
    allowed = np.triu(np.ones((3, 3)), 1).astype(bool)
    assert m.edge_inclusion_[allowed].mean() <= 0.1


def test_many_environments_and_latents_fit_without_nonfinite_losses():
    """200 environments and 10 latents: every step finite (none rejected), outputs well formed."""
    d = simulate_latent_anm(n_latents=10, n_envs=200, n_per_env=30, n_obs_dims=12, graph="random",
                            mechanism="nonlinear", random_state=0)
    m = LatentCausalModel(n_latents=10, num_steps=300, n_restarts=1, random_state=0,
                          num_posterior_samples=100).fit(d.x, env=d.env)
    assert np.isfinite(m.loss_).all() and m.result_.n_rejected == 0
    assert m.edge_inclusion_.shape == (10, 10) and m.edge_weight_.shape == (200, 10, 10)
