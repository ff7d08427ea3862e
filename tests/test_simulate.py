"""Tests for bayes_crl.simulate: shapes, determinism, graphs, condition (iv), supports, I/O."""

import csv

import networkx as nx
import numpy as np
import pytest

from bayes_crl._validation import BayesCRLValueError, topological_order
from bayes_crl.simulate import (
    LatentANMData,
    chain_dag,
    condition_iv_holds,
    load_observations,
    random_dag,
    simulate_latent_anm,
)
from bayes_crl.simulate.latent_anm import NOISE_FAMILIES, _post_nonlinear
from bayes_crl.simulate.mixing import apply_mixing, invert_mixing, random_mixing

SMALL = dict(n_latents=3, n_envs=7, n_per_env=20, n_obs_dims=5)


def sim(**kw):
    return simulate_latent_anm(**{**SMALL, "random_state": 0, **kw})


# -- graphs -------------------------------------------------------------------------------------------
def test_chain_dag():
    a = chain_dag(4)
    assert a.dtype == np.int64 and a.sum() == 3
    assert a[0, 1] == a[1, 2] == a[2, 3] == 1


def test_random_dag_acyclic_many_seeds():
    for seed in range(200):
        a = random_dag(6, 2.5, random_state=seed)
        assert topological_order(a) is not None
        assert a.dtype == np.int64 and set(np.unique(a)) <= {0, 1} and np.trace(a) == 0


def test_random_dag_expected_degree_and_permutation():
    degs, upper = [], []
    for seed in range(300):
        a = random_dag(8, 2.0, random_state=seed)
        degs.append(2 * a.sum() / 8)
        upper.append(np.array_equal(a, np.triu(a)))
    assert abs(np.mean(degs) - 2.0) < 0.15
    assert np.mean(upper) < 0.5  # index order is not the causal order
    assert np.array_equal(random_dag(5, 2.0, permute=False, random_state=1),
                          np.triu(random_dag(5, 2.0, permute=False, random_state=1), 1))


# -- shapes and determinism ----------------------------------------------------------------------
def test_shapes_and_types():
    d = sim()
    n = 7 * 20
    assert isinstance(d, LatentANMData)
    assert d.x.shape == (n, 5) and d.z.shape == (n, 3) and d.noise.shape == (n, 3)
    assert d.env.shape == (n,) and d.env.dtype == np.int64
    assert d.adjacency.shape == (3, 3) and d.weights.shape == (7, 3, 3)
    assert set(d.noise_params) == {"loc", "scale"}
    assert all(v.shape == (7, 3) for v in d.noise_params.values())
    assert d.latent_names == ("z0", "z1", "z2") and d.env_labels == tuple(range(7))
    assert d.condition_iv.dtype == bool and d.condition_iv.shape == (3,)
    assert np.isfinite(d.x).all() and np.isfinite(d.z).all()
    assert "n_latents=3" in repr(d)


def test_deterministic_under_seed():
    a, b = sim(mechanism="mlp", graph="random"), sim(mechanism="mlp", graph="random")
    for name in ("x", "env", "z", "noise", "adjacency", "weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = sim(random_state=1)
    assert not np.array_equal(a.x, c.x)


def test_per_env_sizes():
    d = sim(n_per_env=[3, 1, 4, 1, 5, 9, 2])
    np.testing.assert_array_equal(np.bincount(d.env), [3, 1, 4, 1, 5, 9, 2])
    with pytest.raises(BayesCRLValueError, match="'n_per_env'.*length 2"):
        sim(n_per_env=[3, 4])
    with pytest.raises(BayesCRLValueError, match=r"'n_per_env\[1\]'"):
        sim(n_per_env=[3, 0, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("mechanism", ["linear", "nonlinear", "mlp"])
@pytest.mark.parametrize("pnl", [False, True])
def test_generative_equation_is_exact(mechanism, pnl):
    d = sim(mechanism=mechanism, post_nonlinear=pnl, graph="random", expected_degree=2.0)
    y = d.parent_contribution() + d.noise
    if pnl:
        p = d.mechanism_params
        y = _post_nonlinear(y, p["pnl_slope"], p["pnl_sharpness"])
    np.testing.assert_allclose(y, d.z, rtol=1e-12, atol=1e-12)
    x_clean = apply_mixing(d.mixing_params, d.z)
    assert (d.x - x_clean).std() == pytest.approx(0.01, rel=0.2)


def test_user_graph_and_networkx():
    a = np.array([[0, 0, 0], [1, 0, 1], [0, 0, 0]])
    d = sim(graph=a)
    np.testing.assert_array_equal(d.adjacency, a)
    assert np.all(d.weights[:, a == 0] == 0)
    g = d.to_networkx()
    assert set(g.edges) == {("z1", "z0"), ("z1", "z2")}
    e = g.edges["z1", "z0"]
    assert e["weights"].shape == (7,) and e["weight"] == pytest.approx(d.weights[:, 1, 0].mean())
    assert len(e["vanishing_envs"]) == 1
    d2 = sim(graph=nx.DiGraph([("a", "b"), ("b", "c")]))
    np.testing.assert_array_equal(d2.adjacency, chain_dag(3))


# -- condition (iv) and weights -------------------------------------------------------------------
def test_condition_iv_holds_by_default():
    for seed in range(5):
        d = simulate_latent_anm(**{**SMALL, "n_latents": 4}, graph="random", expected_degree=2.0,
                                vanish_envs=2, random_state=seed)
        for j, i in zip(*np.nonzero(d.adjacency)):
            w = d.weights[:, j, i]
            assert (w == 0).sum() == 2
            nz = np.abs(w[w != 0])
            assert nz.min() >= 0.5 and nz.max() <= 2.0
        assert d.condition_iv.all()
        assert condition_iv_holds(d.weights, d.adjacency).all()


def test_condition_iv_violated_exactly_for_requested_nodes():
    d = sim(n_latents=4, violate=[2])
    np.testing.assert_array_equal(d.condition_iv, [True, True, False, True])
    assert np.all(np.abs(d.weights[:, 1, 2]) >= 0.5)
    assert (d.weights[:, 2, 3] == 0).any()
    d_named = sim(n_latents=4, violate=["z2", "z3"])
    np.testing.assert_array_equal(d_named.condition_iv, [True, True, False, False])


def test_vanishing_envs_distinct_across_edges():
    d = sim(n_latents=4, n_envs=10)
    envs = [np.flatnonzero(d.weights[:, j, i] == 0)[0] for j, i in zip(*np.nonzero(d.adjacency))]
    assert len(set(envs)) == len(envs)


def test_signs():
    d = sim(n_envs=40, random_sign=False)
    assert (d.weights >= 0).all()
    d = sim(n_envs=40)
    assert (d.weights < 0).any() and (d.weights > 0).any()


def test_condition_iv_holds_function():
    a = chain_dag(3)
    w = np.ones((4, 3, 3)) * a
    np.testing.assert_array_equal(condition_iv_holds(w, a), [True, False, False])
    w[2, 0, 1] = 0.0
    np.testing.assert_array_equal(condition_iv_holds(w, a), [True, True, False])
    w[1, 1, 2] = 1e-9
    np.testing.assert_array_equal(condition_iv_holds(w, a, atol=1e-8), [True, True, True])
    with pytest.raises(BayesCRLValueError, match="'weights' must have shape"):
        condition_iv_holds(w[:, :2], a)


# -- noise families ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(NOISE_FAMILIES))
def test_noise_support_and_params(family):
    d = sim(noise=family, n_per_env=50)
    names = [p[0] for p in NOISE_FAMILIES[family]]
    assert d.noise_family == family and list(d.noise_params) == names
    for (name, lo, hi) in NOISE_FAMILIES[family]:
        v = d.noise_params[name]
        assert v.shape == (7, 3) and v.min() >= lo and v.max() <= hi
    n = d.noise
    if family in ("gamma", "inverse_gamma"):
        assert (n > 0).all()
    elif family == "beta":
        assert ((n > 0) & (n < 1)).all()
    else:
        assert (n < 0).any() and (n > 0).any()


def test_gaussian_noise_follows_env_params():
    d = sim(n_latents=1, n_envs=3, n_per_env=4000)
    for u in range(3):
        nu = d.noise[d.env == u, 0]
        assert nu.mean() == pytest.approx(d.noise_params["loc"][u, 0], abs=0.15)
        assert nu.std() == pytest.approx(d.noise_params["scale"][u, 0], rel=0.06)


# -- mixing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_mixing_injective_and_well_conditioned(kind):
    p = random_mixing(kind, 3, 6, n_layers=3, random_state=0)
    assert len([k for k in p if k.startswith("weight_")]) == (3 if kind == "mlp" else 1)
    for k, w in p.items():
        if k.startswith("weight_"):
            assert np.linalg.cond(w) <= 2.0 + 1e-9
    z = np.random.default_rng(0).normal(size=(200, 3))
    np.testing.assert_allclose(invert_mixing(p, apply_mixing(p, z)), z, atol=1e-10)


def test_linear_mixing_and_noise_free():
    d = sim(mixing="linear", obs_noise_std=0.0)
    np.testing.assert_allclose(d.x, d.z @ d.mixing_params["weight_0"].T)


# -- argument errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        ({"noise": "gausian"}, r"The 'noise' parameter of simulate_latent_anm must be one of \{.*\}\. Got 'gausian' instead\. Did you mean 'gaussian'"),
        ({"mechanism": "mlps"}, "'mechanism' parameter"),
        ({"mixing": "conv"}, "'mixing' parameter"),
        ({"graph": "tree"}, "'graph' parameter"),
        ({"graph": np.ones((3, 3))}, "'graph' parameter.*acyclic"),
        ({"graph": np.zeros((2, 2))}, r"'graph' parameter.*shape \(3, 3\)"),
        ({"n_obs_dims": 2}, "'n_obs_dims'.*>= n_latents=3"),
        ({"n_latents": 0}, "'n_latents'"),
        ({"n_envs": 2.0}, "'n_envs'.*int"),
        ({"weight_range": (0.0, 1.0)}, "'weight_range'"),
        ({"weight_range": (2.0, 1.0)}, "'weight_range'"),
        ({"vanish_envs": 0}, "'vanish_envs'"),
        ({"vanish_envs": 7}, "'vanish_envs'.*< n_envs=7"),
        ({"violate": [5]}, "'violate'.*z5|'violate'.*Got 5"),
        ({"random_sign": 1}, "'random_sign'.*bool"),
        ({"post_nonlinear": "yes"}, "'post_nonlinear'"),
        ({"obs_noise_std": -1.0}, "'obs_noise_std'"),
        ({"mixing_layers": 0}, "'mixing_layers'"),
        ({"expected_degree": -1}, "'expected_degree'"),
        ({"random_state": "seed"}, "'random_state'"),
    ],
)
def test_argument_errors_name_the_argument(kw, match):
    with pytest.raises(BayesCRLValueError, match=match):
        sim(**kw)


def test_vanish_envs_not_needed_when_all_violated():
    d = sim(n_envs=1, violate=[1, 2])
    assert d.weights.shape == (1, 3, 3)
    np.testing.assert_array_equal(d.condition_iv, [True, False, False])


# -- save / load ------------------------------------------------------------------------------------
def test_npz_roundtrip_and_no_overwrite(tmp_path):
    d = sim(mechanism="mlp", noise="beta", post_nonlinear=True)
    path = d.save(tmp_path / "data")
    assert path.endswith(".npz")
    e = LatentANMData.load(path)
    for name in ("x", "env", "z", "noise", "adjacency", "weights", "condition_iv"):
        np.testing.assert_array_equal(getattr(e, name), getattr(d, name))
        assert getattr(e, name).dtype == getattr(d, name).dtype
    for name in ("noise_params", "mechanism_params", "mixing_params"):
        a, b = getattr(d, name), getattr(e, name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for name in ("noise_family", "mechanism", "latent_names", "env_labels", "mixing",
                 "post_nonlinear", "obs_noise_std"):
        assert getattr(e, name) == getattr(d, name)
    np.testing.assert_allclose(e.parent_contribution(), d.parent_contribution())
    with pytest.raises(FileExistsError, match="overwrite=True"):
        d.save(path)
    sim(random_state=5).save(path, overwrite=True)
    assert not np.array_equal(LatentANMData.load(path).x, d.x)


def test_load_rejects_foreign_npz(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.zeros((2, 2)), env=np.zeros(2))
    with pytest.raises(BayesCRLValueError, match="load_observations"):
        LatentANMData.load(p)


# -- load_observations ------------------------------------------------------------------------------
def test_load_observations_npz(tmp_path):
    p = tmp_path / "obs.npz"
    np.savez(p, x=np.arange(6.0).reshape(3, 2), batch=np.array(["a", "b", "a"]))
    x, env = load_observations(p, env_column="batch")
    assert x.shape == (3, 2) and list(env) == ["a", "b", "a"]
    with pytest.raises(BayesCRLValueError, match=r"lacks the key\(s\) \['env'\].*keys found"):
        load_observations(p)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_load_observations_csv_string_env(tmp_path):
    p = tmp_path / "obs.csv"
    _write_csv(p, ["x1", "env", "x2"], [[0.5, "day 3", 1], [1.5, "day 1", 2], [2.5, "day 3", 3]])
    x, env = load_observations(p)
    np.testing.assert_array_equal(x, [[0.5, 1], [1.5, 2], [2.5, 3]])
    assert list(env) == ["day 3", "day 1", "day 3"]


def test_load_observations_csv_int_env(tmp_path):
    p = tmp_path / "obs.csv"
    _write_csv(p, ["a", "b", "segment"], [[1, 2, 0], [3, 4, 1]])
    x, env = load_observations(p, env_column="segment")
    assert env.dtype == np.int64 and x.shape == (2, 2)


def test_load_observations_csv_errors(tmp_path):
    p = tmp_path / "obs.csv"
    _write_csv(p, ["a", "env"], [[1, "u"], ["oops", "v"]])
    with pytest.raises(BayesCRLValueError, match="Column 'a'.*line 3 holds 'oops'"):
        load_observations(p)
    with pytest.raises(BayesCRLValueError, match=r"'env_column' 'batch'.*Columns found: \['a', 'env'\]"):
        load_observations(p, env_column="batch")
    _write_csv(p, ["a", "env"], [[1, "u"], ["nan", "v"]])
    with pytest.raises(BayesCRLValueError, match=r"'x'.*index \(1, 0\)"):
        load_observations(p)
    with pytest.raises(BayesCRLValueError, match=r"\.npz or \.csv"):
        load_observations(tmp_path / "obs.parquet")


def test_violate_one_sign_makes_only_the_violated_edges_positive_and_draws_nothing_extra():
    kw = dict(n_latents=3, n_envs=12, n_per_env=40, violate=[2], random_state=4)
    a = simulate_latent_anm(**kw)
    b = simulate_latent_anm(**kw, violate_one_sign=True)
    np.testing.assert_array_equal(b.weights[:, 1, 2], np.abs(a.weights[:, 1, 2]))
    assert (b.weights[:, 1, 2] >= 0.5).all()  # never vanishes, one sign
    np.testing.assert_array_equal(b.weights[:, 0, 1], a.weights[:, 0, 1])  # (iv) edge untouched
    np.testing.assert_array_equal(b.noise, a.noise)
    assert b.condition_iv.tolist() == [True, True, False]
    with pytest.raises(BayesCRLValueError, match="violate_one_sign"):
        simulate_latent_anm(**kw, violate_one_sign="yes")
