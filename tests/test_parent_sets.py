"""Exact parent-set posterior of the spike-and-slab (bayes_crl.parent_sets)."""
import numpy as np
import pytest
from scipy import integrate, stats

from bayes_crl._validation import BayesCRLValueError
from bayes_crl.parent_sets import (MAX_CANDIDATES, child_statistics, edge_marginals, parent_set_log_posterior,
                                   sample_parent_sets, subset_masks, variational_inclusion)
from bayes_crl.simulate.spike_slab import simulate_spike_slab_latents


def _linear_stats(z, env, n_envs=None):
    n, l = z.shape
    return child_statistics(np.broadcast_to(z[:, :, None], (n, l, l)), z, env, n_envs)


def _numeric_log_evidence(y, x, scales):
    """log p(y | x) with standardised strengths ~ Normal(0, scales^2), by quadrature over log sigma^2 of the
    Gaussian marginal on the centred space."""
    n = len(y)
    q = np.linalg.svd(np.eye(n) - 1.0 / n)[0][:, :n - 1]  # orthonormal basis of centred vectors
    yy = q.T @ (y - y.mean())
    xs = (x - x.mean(0)) / x.std(0) if x.shape[1] else x
    v = np.eye(n - 1) + (q.T @ xs) @ np.diag(np.asarray(scales, dtype=float) ** 2) @ (q.T @ xs).T

    def f(t):
        return np.exp(stats.multivariate_normal(np.zeros(n - 1), np.exp(t) * v).logpdf(yy))

    return np.log(integrate.quad(f, -20, 20, limit=500, epsabs=0, epsrel=1e-12)[0])


def test_closed_form_matches_quadrature_over_the_noise_scale():
    rng = np.random.default_rng(1)
    n = 12
    x = rng.normal(size=(n, 2))
    y = 0.7 * x[:, 0] + 0.8 * rng.normal(size=n) + 1.0
    z = np.c_[x, y]
    st, c = _linear_stats(z, np.zeros(n, int))
    masks, lp = parent_set_log_posterior(st, c, 2, [0, 1], prior_inclusion=0.5, slab_scale=1.3, spike_scale=0)
    num = np.array([_numeric_log_evidence(y, x[:, m], [1.3] * int(m.sum())) for m in masks])
    num -= np.logaddexp.reduce(num)
    np.testing.assert_allclose(lp, num, atol=1e-6)
    # a spike of width 0.2: every candidate stays in, with the spike's or the slab's variance
    masks, lp = parent_set_log_posterior(st, c, 2, [0, 1], prior_inclusion=0.5, slab_scale=1.3, spike_scale=0.2)
    num = np.array([_numeric_log_evidence(y, x, np.where(m, 1.3, 0.2)) for m in masks])
    num -= np.logaddexp.reduce(num)
    np.testing.assert_allclose(lp, num, atol=1e-6)


def test_prior_term_and_environments_add_up():
    """Two environments: the log evidence is the sum of the per-environment terms; the prior enters as
    |S| log pi + (k - |S|) log(1 - pi)."""
    d = simulate_spike_slab_latents(3, 2, 25, random_state=4)
    st, c = _linear_stats(d.z, d.env)
    _, lp_half = parent_set_log_posterior(st, c, 2, [0, 1], prior_inclusion=0.5)
    _, lp_03 = parent_set_log_posterior(st, c, 2, [0, 1], prior_inclusion=0.3)
    size = subset_masks(2).sum(1)
    shifted = lp_half + size * np.log(0.3 / 0.5) + (2 - size) * np.log(0.7 / 0.5)
    np.testing.assert_allclose(lp_03, shifted - np.logaddexp.reduce(shifted), atol=1e-10)
    parts = []
    for u in range(2):
        su, cu = _linear_stats(d.z[d.env == u], np.zeros((d.env == u).sum(), int))
        parts.append(parent_set_log_posterior(su, cu, 2, [0, 1], prior_inclusion=0.5)[1])
    total = parts[0] + parts[1] + np.log(0.25)  # the prior counted once (each part carries log 0.25 per set)
    np.testing.assert_allclose(lp_half, total - np.logaddexp.reduce(total), atol=1e-8)


def test_invariant_to_scale_and_shift_of_each_latent_per_environment():
    d = simulate_spike_slab_latents(4, 3, 40, random_state=2)
    st, c = _linear_stats(d.z, d.env)
    p = edge_marginals(st, c, np.arange(4))
    rng = np.random.default_rng(0)
    z2 = d.z * rng.uniform(0.1, 10, size=(3, 1, 4))[d.env, 0] + rng.normal(size=(3, 4))[d.env] * 5
    st2, c2 = _linear_stats(z2, d.env)
    np.testing.assert_allclose(edge_marginals(st2, c2, np.arange(4)), p, atol=1e-9)


def test_calibrated_on_graphs_drawn_from_the_prior():
    """120 graphs l = 4 (720 candidate edges) with 4 x 15 rows: weak data, so probabilities spread over (0, 1).
    For exact posteriors the expected ECE with ~720 edges in 10 bins is about 0.02-0.03; the mean probability
    equals the prior inclusion in expectation (sd about 0.46 / sqrt(720) = 0.017)."""
    probs, truth = [], []
    iu = np.triu_indices(4, 1)
    for g in range(120):
        d = simulate_spike_slab_latents(4, 4, 15, prior_inclusion=0.3, slab_scale=0.5, spike_scale=0.1,
                                        random_state=g)
        st, c = _linear_stats(d.z, d.env)
        probs.append(edge_marginals(st, c, np.arange(4), prior_inclusion=0.3, slab_scale=0.5, spike_scale=0.1)[iu])
        truth.append(d.adjacency[iu])
    p, t = np.concatenate(probs), np.concatenate(truth)
    assert 0.1 < np.mean((p > 0.1) & (p < 0.9))  # the data leave real uncertainty
    bins = np.clip((p * 10).astype(int), 0, 9)
    ece = sum(abs(p[bins == b].mean() - t[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins)) / len(p)
    assert ece < 0.07
    assert np.mean((p - t) ** 2) < 0.3 * 0.7 * 0.8  # well below the prior's own Brier pi (1 - pi)
    assert abs(p.mean() - t.mean()) < 0.05


def test_null_latents_get_small_probabilities_and_strong_edges_probability_one():
    d = simulate_spike_slab_latents(4, 10, 200, null=True, random_state=0)
    st, c = _linear_stats(d.z, d.env)
    assert edge_marginals(st, c, np.arange(4)).max() < 0.05
    d = simulate_spike_slab_latents(4, 10, 200, prior_inclusion=0.5, effect=0.5, random_state=1)
    st, c = _linear_stats(d.z, d.env)
    p = edge_marginals(st, c, np.arange(4))
    iu = np.triu_indices(4, 1)
    np.testing.assert_array_less(0.99, p[iu][d.adjacency[iu] == 1])
    np.testing.assert_array_less(p[iu][d.adjacency[iu] == 0], 0.05)


def test_orders_average_and_edges_against_the_order_get_zero():
    d = simulate_spike_slab_latents(3, 5, 60, prior_inclusion=0.9, random_state=3)
    st, c = _linear_stats(d.z, d.env)
    fwd = edge_marginals(st, c, [0, 1, 2])
    rev = edge_marginals(st, c, [2, 1, 0])
    assert np.all(np.tril(fwd) == 0) and np.all(np.triu(rev) == 0)
    np.testing.assert_allclose(edge_marginals(st, c, [[0, 1, 2], [2, 1, 0]]), (fwd + rev) / 2)


def test_sampled_graphs_match_the_marginals():
    d = simulate_spike_slab_latents(4, 4, 12, slab_scale=0.5, random_state=5)
    st, c = _linear_stats(d.z, d.env)
    orders = np.array([[0, 1, 2, 3], [1, 0, 3, 2]])
    draws = sample_parent_sets(st, c, orders, 4000, slab_scale=0.5, rng=np.random.default_rng(0))
    assert draws.shape == (4000, 4, 4) and draws.dtype == bool
    # 4000 draws: Monte Carlo sd of a frequency at most 0.5 / sqrt(4000) = 0.008
    np.testing.assert_allclose(draws.mean(0), edge_marginals(st, c, orders, slab_scale=0.5), atol=0.04)


def test_bad_arguments_are_named():
    d = simulate_spike_slab_latents(3, 2, 10, random_state=0)
    st, c = _linear_stats(d.z, d.env)
    with pytest.raises(BayesCRLValueError, match="'prior_inclusion'.*Got 1.5"):
        edge_marginals(st, c, [0, 1, 2], prior_inclusion=1.5)
    with pytest.raises(BayesCRLValueError, match="'slab_scale'.*Got -1"):
        edge_marginals(st, c, [0, 1, 2], slab_scale=-1)
    with pytest.raises(BayesCRLValueError, match=r"'spike_scale'.*\[0, 1.0\).*Got 2"):
        edge_marginals(st, c, [0, 1, 2], spike_scale=2)
    with pytest.raises(BayesCRLValueError, match="'orders'.*permutation"):
        edge_marginals(st, c, [0, 0, 2])
    big = np.zeros((1, MAX_CANDIDATES + 2, MAX_CANDIDATES + 3, MAX_CANDIDATES + 3))
    with pytest.raises(BayesCRLValueError, match=f"limited to {MAX_CANDIDATES} candidate parents.*Got 13"):
        parent_set_log_posterior(big, np.ones(1) * 5, MAX_CANDIDATES + 1, range(MAX_CANDIDATES + 1))
    with pytest.raises(BayesCRLValueError, match="'method' argument must be one of.*Got 'mcmc'"):
        edge_marginals(st, c, [0, 1, 2], method="mcmc")


@pytest.mark.parametrize("spike", [0.0, 0.1])
def test_variational_posterior_of_one_candidate_is_exact(spike):
    """With one candidate the indicator's update is the exact log Bayes factor (noise scale integrated out)."""
    d = simulate_spike_slab_latents(2, 5, 15, slab_scale=0.5, prior_inclusion=0.9, random_state=4)
    st, c = _linear_stats(d.z, d.env)
    masks, lp = parent_set_log_posterior(st, c, 1, [0], slab_scale=0.5, spike_scale=spike)
    exact = float(np.exp(lp) @ masks[:, 0])
    assert 0.1 < exact < 0.9  # an uncertain edge, where an approximation would show
    np.testing.assert_allclose(variational_inclusion(st, c, 1, [0], slab_scale=0.5, spike_scale=spike), [exact],
                               atol=1e-9)


@pytest.mark.parametrize("n_envs, rows", [(10, 100), (30, 1000)])
def test_variational_matches_exact_at_fit_sized_samples(n_envs, rows):
    """l = 4 from the prior, every edge's variational and exact marginals: the benchmark's largest difference
    over 200 graphs per setting was 0.009 (BENCHMARKS.md, "Spike-and-slab beyond 12 candidate parents")."""
    for g in range(8):
        d = simulate_spike_slab_latents(4, n_envs, rows, random_state=100 + g)
        st, c = _linear_stats(d.z, d.env)
        np.testing.assert_allclose(edge_marginals(st, c, np.arange(4), method="variational"),
                                   edge_marginals(st, c, np.arange(4), method="exact"), atol=0.05)


def test_more_candidates_than_enumeration_allows_get_the_variational_posterior():
    l = MAX_CANDIDATES + 3
    d = simulate_spike_slab_latents(l, 10, 200, random_state=7)
    st, c = _linear_stats(d.z, d.env)
    with pytest.raises(BayesCRLValueError, match=f"limited to {MAX_CANDIDATES} candidate parents"):
        edge_marginals(st, c, np.arange(l), method="exact")
    p = edge_marginals(st, c, np.arange(l))
    iu = np.triu_indices(l, 1)
    truth = d.adjacency[iu].astype(bool)
    assert truth.sum() >= 10
    # slab 1 with 200 rows in each of 10 environments: clear edges (Brier 0.000 in the benchmark at l = 20)
    assert np.mean((p[iu] - truth) ** 2) < 0.02
    np.testing.assert_array_equal(np.tril(p), 0)
    # the children with at most 12 candidates keep their exact posterior: the first 13 latents alone
    keep = list(range(MAX_CANDIDATES + 1)) + [-1]
    sub = st[:, :MAX_CANDIDATES + 1][:, :, keep][:, :, :, keep]
    np.testing.assert_allclose(p[:MAX_CANDIDATES + 1, :MAX_CANDIDATES + 1],
                               edge_marginals(sub, c, np.arange(MAX_CANDIDATES + 1), method="exact"), atol=1e-12)
    draws = sample_parent_sets(st, c, np.arange(l), 2000, rng=np.random.default_rng(1))
    # 2000 draws of independent edges: Monte Carlo sd at most 0.011
    np.testing.assert_allclose(draws.mean(0), p, atol=0.05)


@pytest.mark.parametrize("n_envs, rows", [(5, 20), (10, 100)])
def test_refined_variational_posterior_is_exact_when_every_uncertain_candidate_is_refined(n_envs, rows):
    """l = 6 (at most 5 candidates, all within the refined 10): the clear candidates are held (integrated out by
    a Schur complement), the others enumerated, so the marginals equal the exact ones up to what the held
    candidates' own 1e-3 of doubt can move; mean field alone is further off at 20 rows per environment."""
    worst_mf = 0.0
    for g in range(6):
        d = simulate_spike_slab_latents(6, n_envs, rows, slab_scale=0.5, spike_scale=0.1, random_state=300 + g)
        st, c = _linear_stats(d.z, d.env)
        exact = edge_marginals(st, c, np.arange(6), slab_scale=0.5, method="exact")
        for child in range(1, 6):
            refined = variational_inclusion(st, c, child, range(child), slab_scale=0.5)
            np.testing.assert_allclose(refined, exact[:child, child], atol=0.01)
            mf = variational_inclusion(st, c, child, range(child), slab_scale=0.5, refine=0)
            worst_mf = max(worst_mf, float(np.abs(mf - exact[:child, child]).max()))
    if rows == 20:
        assert worst_mf > 0.02  # the refinement is doing work here


def test_variational_draws_keep_alternative_parents_apart():
    """Beyond 12 candidates: z1 is z0 plus a little noise and the child depends on z0, so the posterior has the
    child's edge on z0 or on z1 but rarely on both or neither. Mean field gives one of them the edge with
    certainty; the refinement finds the swap, enumerates the pair and matches the exact posterior of the same
    child with the other candidates left out (they are independent noise). The refined candidates are drawn
    jointly: the two are alternatives in the draws (independent draws at these marginals would take both or
    neither in about half of them), and the draws' marginals are the variational inclusion probabilities."""
    rng = np.random.default_rng(3)
    l, n_envs, rows = 15, 5, 50
    env = np.repeat(np.arange(n_envs), rows)
    z = rng.normal(size=(n_envs * rows, l))
    z[:, 1] = z[:, 0] + 0.1 * rng.normal(size=len(z))
    z[:, -1] = 0.6 * z[:, 0] + rng.normal(size=len(z))
    st, c = _linear_stats(z, env)
    child, cand = l - 1, np.arange(l - 1)
    alpha, (refined, block, probs) = variational_inclusion(st, c, child, cand, return_block=True)
    np.testing.assert_allclose(alpha, variational_inclusion(st, c, child, cand), atol=0)
    assert {0, 1} <= set(refined.tolist()) and block.shape == (2 ** len(refined), len(refined))
    assert probs.sum() == pytest.approx(1.0)
    assert 0.1 < alpha[0] < 0.9 and 0.1 < alpha[1] < 0.9  # an uncertain pair
    mf = variational_inclusion(st, c, child, cand, refine=0)
    assert min(mf[0], 1 - mf[0]) < 0.01 and min(mf[1], 1 - mf[1]) < 0.01  # mean field alone is sure of it
    keep = [0, 1, 2, child]
    exact = edge_marginals(st[:, keep][:, :, keep + [-1]][:, :, :, keep + [-1]], c, np.arange(4), method="exact")
    np.testing.assert_allclose(alpha[:3], exact[:3, 3], atol=0.05)
    draws = sample_parent_sets(st, c, np.arange(l), 4000, rng=np.random.default_rng(0))
    pair = draws[:, [0, 1], child].sum(1)
    assert np.mean(pair == 1) > 0.9
    independent = alpha[0] * (1 - alpha[1]) + alpha[1] * (1 - alpha[0])
    assert independent < 0.75
    # marginals: 4000 draws, Monte Carlo sd at most 0.008
    np.testing.assert_allclose(draws[:, :child, child].mean(0), alpha, atol=0.03)
