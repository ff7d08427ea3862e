"""Tests for bayes_crl.datatree: groups, dims and coords of the DataTree; ArviZ summary and LOO run on it."""

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel, simulate_latent_anm
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.datatree import edge_summary, env_coords, to_datatree

pytest.importorskip("arviz_base")
arviz_stats = pytest.importorskip("arviz_stats")

L, E, N_PER_ENV, D, S = 3, 8, 50, 5, 60
LABELS = np.array([f"day {k}" for k in range(E)])


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=L, n_envs=E, n_per_env=N_PER_ENV, n_obs_dims=D, random_state=0)


@pytest.fixture(scope="module")
def model(data):
    torch.set_num_threads(1)
    return LatentCausalModel(n_latents=L, edge_prior="horseshoe", num_steps=30, random_state=0, num_posterior_samples=100).fit(
        data.x, env=LABELS[data.env])


@pytest.fixture(scope="module")
def dt(model, data):
    return to_datatree(model, data.x, LABELS[data.env], num_samples=S, num_log_lik_draws=40, num_encoder_samples=4)


def test_groups(dt):
    assert {"posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood", "fit"} <= set(dt.children)


def test_posterior_dims_and_coords(dt, model):
    post = dt["posterior"]
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == S
    assert post["edge_weight"].dims == ("chain", "draw", "env", "parent", "child")
    assert "edge_nu" not in post  # the default horseshoe has no per-environment scales
    assert post["edge_lambda"].dims == ("chain", "draw", "parent", "child")
    assert post["edge_tau"].dims == ("chain", "draw")
    assert post["weight"].dims == ("chain", "draw", "env", "parent", "child")
    assert post["edge_indicator"].dims == ("chain", "draw", "parent", "child")
    assert post["noise_loc"].dims == ("chain", "draw", "env", "latent")
    assert post["noise_scale"].dims == ("chain", "draw", "env", "latent")
    names = list(model.latent_names_)
    for dim in ("parent", "child", "latent"):
        assert list(post[dim].values) == names
    # string labels are kept as they are, not turned into codes
    assert list(post["env"].values) == [f"day {k}" for k in range(E)]
    assert "day 3" in post["env"].values


def test_posterior_values(dt, model):
    post = dt["posterior"]
    mask = model.result_.net.mask.numpy().astype(bool)
    incl = post["edge_indicator"].values[0]
    # per-draw indicator: 0/1 off the diagonal (each draw has its own bootstrap order), nan on it
    off = ~np.eye(mask.shape[0], dtype=bool)
    assert np.isin(incl[:, off], [0.0, 1.0]).all()
    assert np.isnan(incl[:, ~off]).all()
    # every draw is a DAG, and the draws average to the model's inclusion probabilities (same seed and count)
    import networkx as nx

    assert all(nx.is_directed_acyclic_graph(nx.DiGraph(np.nan_to_num(a))) for a in incl)
    from bayes_crl.posterior import edge_inclusion

    expected = edge_inclusion(model.result_, model._inclusion_context, S, seed=0)
    np.testing.assert_allclose(incl[:, off].mean(0), expected[off], atol=1e-12)
    w = post["weight"].values[0]
    assert np.isfinite(w[:, :, mask]).all() and np.isnan(w[:, :, ~mask]).all()
    # the noise parameters are point estimates: constant over draws and equal to the fitted ones
    loc = post["noise_loc"].values[0]
    np.testing.assert_allclose(loc[0], model.result_.net.noise_loc.detach().numpy(), rtol=1e-6)
    assert np.ptp(loc, axis=0).max() == 0
    np.testing.assert_allclose(post["noise_scale"].values[0, 0],
                               model.result_.net.noise_scale().detach().numpy(), rtol=1e-6)


def test_observed_data_log_likelihood_and_fit(dt, data, model):
    obs = dt["observed_data"]["x"]
    assert obs.dims == ("obs", "obs_dim") and obs.shape == data.x.shape
    np.testing.assert_allclose(obs.values, data.x)
    assert list(dt["constant_data"]["env_label"].values[:2]) == ["day 0", "day 0"]
    ll = dt["log_likelihood"]["x"]
    assert ll.dims == ("chain", "draw", "obs") and ll.shape == (1, 40, data.x.shape[0])
    assert np.isfinite(ll.values).all()
    # the log-likelihood draws are the first posterior draws
    assert list(ll["draw"].values) == list(dt["posterior"]["draw"].values[:40])
    loss = dt["fit"]["loss"]
    assert loss.dims == ("step",)
    np.testing.assert_array_equal(loss.values, model.loss_)
    assert np.isfinite(dt["sample_stats"]["log_q"].values).all()
    assert np.isfinite(dt["sample_stats"]["log_prior"].values).all()


def test_same_seed_same_tree(model, data):
    a = to_datatree(model, num_samples=10, seed=3)
    b = to_datatree(model, num_samples=10, seed=3)
    np.testing.assert_array_equal(a["posterior"]["edge_weight"].values, b["posterior"]["edge_weight"].values)


def test_without_x_has_no_data_groups(model):
    t = to_datatree(model, num_samples=20)
    assert {"posterior", "sample_stats", "fit"} == set(t.children)
    assert t["posterior"]["edge_indicator"].shape == (1, 20, L, L)


def test_inclusion_mean_tracks_model(model, data):
    t = to_datatree(model, data.x, LABELS[data.env], num_samples=400, num_log_lik_draws=2, num_encoder_samples=1)
    mean = np.nan_to_num(t["posterior"]["edge_indicator"].mean(("chain", "draw")).values)
    np.testing.assert_allclose(mean, model.edge_inclusion_, atol=0.15)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # constant draws: NaN diagnostics
def test_arviz_summary_runs(dt):
    s = arviz_stats.summary(dt)
    assert "edge_tau" in s.index
    assert any(str(i).startswith("edge_weight[day 3") for i in s.index)


def test_arviz_summary_clean_on_random_sites(dt):
    s = arviz_stats.summary(dt, var_names=["edge_tau", "edge_lambda", "edge_weight", "weight"])
    assert np.isfinite(s.loc["edge_tau", "mean"])


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_loo_returns_finite_elpd(dt, data):
    from arviz_stats import loo, loo_approximate_posterior

    res = loo(dt)
    assert np.isfinite(res.elpd) and res.n_data_points == data.x.shape[0]
    ll = dt["log_likelihood"]["x"]
    log_p = dt["sample_stats"]["log_prior"].sel(draw=ll["draw"]) + ll.sum("obs")
    res2 = loo_approximate_posterior(dt, log_p=log_p, log_q=dt["sample_stats"]["log_q"].sel(draw=ll["draw"]))
    assert np.isfinite(res2.elpd)


def test_edge_summary(model):
    tab = edge_summary(model)
    assert tab["inclusion"].dims == ("parent", "child")
    np.testing.assert_allclose(tab["inclusion"].values, model.edge_inclusion_)
    assert list(tab["parent"].values) == list(model.latent_names_)
    assert tab["allowed"].values.sum() == L * (L - 1) // 2
    o = tab["orientation"].values
    np.testing.assert_allclose(o, model.edge_orientation_)
    np.testing.assert_allclose(o + o.T, 1 - np.eye(L))  # each pair is ordered one way or the other
    assert (model.edge_inclusion_ <= o + 1e-12).all()  # an edge needs its parent first
    assert len(tab.to_dataframe()) == L * L


def test_env_coords():
    assert env_coords([0, 1, 2]).dtype.kind == "i"
    assert list(env_coords(["day 3", "day 10"])) == ["day 3", "day 10"]
    assert list(env_coords([1, "a", ("b", 2)])) == ["1", "a", "('b', 2)"]
    assert list(env_coords([1, "1"])) == ["1", "'1'"]  # str() would collide


def test_input_errors(model, data):
    with pytest.raises(BayesCRLValueError, match="together"):
        to_datatree(model, data.x)
    with pytest.raises(BayesCRLValueError, match="num_samples"):
        to_datatree(model, num_samples=0)
    with pytest.raises(BayesCRLValueError, match="fitted"):
        to_datatree(LatentCausalModel())


def test_to_netcdf_opens_with_xarray_and_refuses_to_overwrite(model, data, tmp_path):
    import xarray as xr

    path = tmp_path / "posterior.nc"
    assert model.to_netcdf(path, data.x[:50], LABELS[data.env[:50]], num_samples=20) == str(path)
    with xr.open_datatree(path) as back:
        assert {"posterior", "log_likelihood", "observed_data", "constant_data"} <= set(back.children)
        assert back["log_likelihood"]["x"].sizes["obs"] == 50
        assert back["posterior"]["edge_weight"].sizes["draw"] == 20
    with pytest.raises(FileExistsError, match="'path' argument of to_netcdf"):
        model.to_netcdf(path)
    model.to_netcdf(path, overwrite=True, num_samples=10)
    with xr.open_datatree(path) as back:
        assert back["posterior"]["edge_weight"].sizes["draw"] == 10
