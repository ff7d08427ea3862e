"""Causal-order search: exact DP agrees with enumeration, recovers the order of true latents, aligns runs."""
import numpy as np
import pytest

from bayes_crl import simulate_latent_anm
from bayes_crl.order import align_scores, best_order, best_order_from_scores, local_scores, order_scores


@pytest.fixture(scope="module")
def chain():
    return simulate_latent_anm(n_latents=3, n_envs=12, n_per_env=300, mechanism="nonlinear", random_state=0)


def test_dp_matches_enumeration(chain):
    order, score, _ = best_order(chain.z, chain.env)
    scores = order_scores(chain.z, chain.env)
    assert np.isclose(score, max(scores.values()))
    assert scores[tuple(order)] == pytest.approx(score)


def test_recovers_order_and_parents_of_true_latents(chain):
    perm = np.array([2, 0, 1])  # shuffle columns: column k holds true latent perm[k]
    order, _, parents = best_order(chain.z[:, perm], chain.env)
    assert [int(perm[k]) for k in order] == [0, 1, 2]
    back = np.argsort(perm)
    assert np.array_equal(parents[np.ix_(back, back)], chain.adjacency)


def test_laplace_score_orients_linear_non_gaussian_chain():
    d = simulate_latent_anm(n_latents=3, n_envs=12, n_per_env=400, mechanism="linear", noise="laplace", random_state=1)
    assert best_order(d.z, d.env, noise="laplace")[0] == [0, 1, 2]


def test_aligned_tables_sum(chain):
    perm = np.array([1, 2, 0])
    ls_ref = local_scores(chain.z, chain.env)
    ls_other = align_scores(local_scores(chain.z[:, perm], chain.env), np.argsort(perm))
    np.testing.assert_allclose(ls_other, ls_ref)
    assert best_order_from_scores(ls_ref + ls_other)[0] == best_order(chain.z, chain.env)[0]


def test_shared_score_fits_the_true_mechanism_class(chain):
    """For the true parent set the shared-function fit (ALS) loses almost nothing against free per-environment
    coefficients: the simulator's mechanism is a shared function times a strength per environment."""
    free = local_scores(chain.z, chain.env, shared=False, penalty=0.0)
    shared = local_scores(chain.z, chain.env, shared=True, penalty=0.0)
    n = len(chain.z)
    for child, pa in [(1, 0b001), (2, 0b010)]:
        assert shared[child, pa] <= free[child, pa] + 1e-6
        assert free[child, pa] - shared[child, pa] < 0.01 * n
    np.testing.assert_allclose(shared[:, 0], free[:, 0], rtol=1e-9)  # no parents: the same model


def test_shared_score_orients_a_chain_the_free_score_reverses():
    # true latents of a benchmark-sized chain: free per-environment coefficients put z1 first here
    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, mechanism="nonlinear", random_state=5)
    order, _, parents = best_order(d.z, d.env, shared=True)
    assert order == [0, 1, 2] and np.array_equal(parents, d.adjacency)
    assert best_order(d.z, d.env, shared=False)[0] != [0, 1, 2]


def test_bootstrap_orders_shapes_weights_and_determinism(chain):
    from bayes_crl.order import bootstrap_orders

    orders, w = bootstrap_orders(chain.z, chain.env, n_draws=20, seed=3)
    assert orders.shape == (20, 3) and w.shape == (20, 12)
    assert all(sorted(o) == [0, 1, 2] for o in orders.tolist())
    np.testing.assert_allclose(w.mean(1), 1.0)  # E * Dirichlet(1): mean weight 1
    assert (w > 0).all()
    o2, w2 = bootstrap_orders(chain.z, chain.env, n_draws=20, seed=3)
    np.testing.assert_array_equal(orders, o2)
    np.testing.assert_array_equal(w, w2)
    # an environment code without rows gets weight 0
    _, w3 = bootstrap_orders(chain.z, chain.env, n_draws=5, n_envs=13, seed=3)
    assert w3.shape == (5, 13) and (w3[:, 12] == 0).all()


def test_bootstrap_orders_are_sure_of_a_clear_chain_and_unsure_of_independent_latents():
    from bayes_crl.order import bootstrap_orders, precedence

    d = simulate_latent_anm(n_latents=3, n_envs=30, n_per_env=1000, mechanism="nonlinear", random_state=5)
    p = precedence(bootstrap_orders(d.z, d.env, n_draws=30, seed=0)[0])
    assert p[0, 1] >= 0.9 and p[1, 2] >= 0.9  # the true order, nearly every draw
    np.testing.assert_allclose(p + p.T, 1 - np.eye(3))
    # independent latents: every order scores the same; ties are broken at random, so no order is preferred
    rng = np.random.default_rng(0)
    env = np.repeat(np.arange(30), 300)
    z = rng.normal(size=(9000, 3)) * rng.uniform(0.3, 2, size=(30, 3))[env]
    p0 = precedence(bootstrap_orders(z, env, n_draws=30, seed=0)[0])
    assert (np.abs(p0 - 0.5)[~np.eye(3, dtype=bool)] < 0.3).all()


def test_precedence_counts_pairs():
    from bayes_crl.order import precedence

    p = precedence(np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]]))
    assert p[0, 1] == 0.5 and p[0, 2] == 0.75 and p[2, 0] == 0.25 and p[1, 2] == 0.5
    assert np.all(np.diag(p) == 0)


def test_weighted_scores_equal_duplicated_environments(chain):
    """Integer environment weights score as if the environments had been observed that many times."""
    from bayes_crl.order import env_grams, scores_from_grams

    g, n, phis = env_grams(chain.z, chain.env)
    w = np.array([2.0] + [1.0] * 11)
    for shared in (False, True):
        weighted = scores_from_grams(g, n, phis, 3, shared=shared, env_weights=w, penalty=0.0)
        dup = scores_from_grams(np.concatenate([g, g[:1]]), np.concatenate([n, n[:1]]), phis + phis[:1], 3,
                                shared=shared, penalty=0.0)
        np.testing.assert_allclose(weighted, dup, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_order_reaches_the_exact_optimum_on_small_graphs(seed):
    """Five latents of a random DAG in shuffled columns: the hill climb over orders ends at an order whose score
    equals the exact optimum's (parent sets of at most 4 cover every set of a 5-latent graph)."""
    from bayes_crl.order import greedy_order

    d = simulate_latent_anm(n_latents=5, graph="random", expected_degree=1.5, n_envs=8, n_per_env=200,
                            n_obs_dims=5, random_state=seed)
    z = d.z[:, np.random.default_rng(seed).permutation(5)]
    _, exact, _ = best_order(z, d.env)
    order, score, parents = greedy_order(z, d.env)
    assert sorted(order) == list(range(5))
    assert score == pytest.approx(exact, rel=1e-9, abs=1e-6)
    pos = {v: k for k, v in enumerate(order)}
    assert all(pos[j] < pos[i] for j, i in np.argwhere(parents))  # parents come first


def test_greedy_order_respects_max_parents_and_start():
    from bayes_crl.order import greedy_order

    d = simulate_latent_anm(n_latents=6, graph="random", expected_degree=2.5, n_envs=6, n_per_env=100,
                            n_obs_dims=6, random_state=4)
    _, _, parents = greedy_order(d.z, d.env, max_parents=1)
    assert parents.sum(0).max() <= 1
    order, _, _ = greedy_order(d.z, d.env, n_starts=1, start=[5, 4, 3, 2, 1, 0])
    assert sorted(order) == list(range(6))
