"""Tests for bayes_crl.compare: one row per prior, finite held-out bounds, aligned tables and a figure."""

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel, simulate_latent_anm
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.compare import PriorComparison, compare_priors, heldout_elbo

L, E, N_PER_ENV, D = 3, 8, 40, 5
TINY = dict(num_steps=20, n_restarts=1, num_posterior_samples=60)


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=L, n_envs=E, n_per_env=N_PER_ENV, n_obs_dims=D, random_state=0)


@pytest.fixture(scope="module")
def cmp(data):
    torch.set_num_threads(1)
    return compare_priors(data.x, data.env, n_latents=L, random_state=0, z_true=data.z, adjacency=data.adjacency,
                          num_particles=4, loo_rows=40, loo_draws=30, **TINY)


def test_one_row_per_prior_with_finite_heldout_elbo(cmp):
    assert isinstance(cmp, PriorComparison)
    assert cmp.priors == ("horseshoe", "spike_slab", "laplace", "none")
    assert [r["prior"] for r in cmp.rows] == list(cmp.priors)
    for r in cmp.rows:
        assert np.isfinite(r["heldout_elbo"]) and np.isfinite(r["heldout_elbo_se"])
        assert 0 <= r["expected_edges"] <= L * (L - 1) / 2 + 1e-9  # only edges the learned order allows
        assert r["fit_seconds"] > 0 and np.isfinite(r["final_loss"])
        assert r["n_train"] + r["n_heldout"] == E * N_PER_ENV and r["n_heldout"] == E * round(0.2 * N_PER_ENV)
        assert 0 <= r["mpc"] <= 1 and r["shd"] >= 0
        assert 0 <= r["brier"] <= 1 and 0 <= r["expected_shd"] <= L * (L - 1)
        # LOO runs (variational draws) or is the in-sample value of a point-estimate prior; never silently NaN
        assert np.isfinite(r["loo_elpd"]) or r["loo_note"].startswith("failed")
    notes = {r["prior"]: r["loo_note"] for r in cmp.rows}
    assert notes["laplace"].startswith("point-estimate") and notes["horseshoe"] == ""


def test_expected_edges_is_sum_of_inclusion(cmp):
    for r, name in zip(cmp.rows, cmp.priors):
        assert r["expected_edges"] == pytest.approx(float(cmp.models[name].edge_inclusion_.sum()))


def test_pairwise_and_table(cmp):
    p = len(cmp.priors)
    assert cmp.edge_inclusion.shape == (p, L, L)
    assert np.all((cmp.edge_inclusion >= 0) & (cmp.edge_inclusion <= 1))
    d = cmp.pairwise_difference
    assert d.shape == (p, p) and np.allclose(np.diag(d), 0)
    # the spike-and-slab's indicator probability is not compared with the threshold probabilities of the others
    exact = np.array([name == "spike_slab" for name in cmp.priors])
    different = exact[:, None] != exact[None, :]
    assert different.any() and np.all(np.isnan(d[different]))
    assert np.all((d[~different] >= 0) & (d[~different] <= 1))
    assert np.allclose(np.diag(cmp.latent_agreement), 1)
    ds = cmp.table
    assert ds.sizes["prior"] == p and list(ds["prior"].values) == list(cmp.priors)
    assert ds["edge_inclusion"].dims == ("prior", "parent", "child")
    assert ds["pairwise_difference"].dims == ("prior", "other_prior")
    np.testing.assert_allclose(ds["heldout_elbo"].values, [r["heldout_elbo"] for r in cmp.rows])
    assert cmp.reference == "truth"


def test_markdown(cmp):
    md = cmp.to_markdown()
    for name in cmp.priors:
        assert f"| {name} |" in md
    assert "| z0 -> z1 |" in md and "held-out ELBO" in md


def test_plot_has_heatmaps_and_bars(cmp):
    from matplotlib.figure import Figure

    fig = cmp.plot()
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 4 + 1
    heat = fig.axes[:4]
    assert all(len(ax.images) == 1 for ax in heat)
    bars = fig.axes[4]
    assert bars.get_label() == "heldout_elbo" and len(bars.patches) == 4


def test_heldout_elbo_bound_tightens_with_particles(data):
    torch.set_num_threads(1)
    m = LatentCausalModel(n_latents=L, random_state=0, **TINY).fit(data.x, data.env)
    one = heldout_elbo(m, data.x[:80], data.env[:80], num_particles=1, seed=0)
    many = heldout_elbo(m, data.x[:80], data.env[:80], num_particles=32, seed=0)
    assert one.shape == (80,) and np.all(np.isfinite(many))
    assert many.mean() >= one.mean() - 0.05  # the importance-weighted bound is tighter on average
    np.testing.assert_array_equal(many, heldout_elbo(m, data.x[:80], data.env[:80], num_particles=32, seed=0))


def test_string_labels_without_truth(data):
    torch.set_num_threads(1)
    labels = np.asarray([f"day {k}" for k in data.env])
    c = compare_priors(data.x, labels, priors=("horseshoe", "laplace"), n_latents=L, loo_rows=0, num_particles=2,
                       **TINY)
    assert c.reference == "horseshoe" and c.latent_names == ("z0", "z1", "z2")
    assert all(np.isnan(r["loo_elpd"]) and "mpc" not in r for r in c.rows)
    np.testing.assert_allclose(c.edge_inclusion[0], c.models["horseshoe"].edge_inclusion_)


@pytest.mark.parametrize("kw, match", [
    (dict(edge_prior="laplace"), "sets"),
    (dict(holdout=1.0), "holdout"),
    (dict(priors=("laplace", "laplace")), "distinct"),
    (dict(priors="laplace"), "priors"),
    (dict(adjacency=np.eye(3)), "z_true"),
])
def test_bad_arguments(data, kw, match):
    with pytest.raises(BayesCRLValueError, match=match):
        compare_priors(data.x, data.env, **kw)


def test_compare_table_ranks_priors_by_heldout_elpd(cmp):
    df = cmp.compare()
    assert list(df.columns) == ["rank", "elpd", "se", "elpd_diff", "dse"]
    assert set(df.index) == set(cmp.priors) and list(df["rank"]) == list(range(len(cmp.priors)))
    assert np.all(np.diff(df["elpd"].values) <= 0) and df["elpd_diff"].iloc[0] == 0 and df["dse"].iloc[0] == 0
    assert np.all(df["elpd_diff"] >= 0) and np.all(df["se"] > 0)
    n = cmp.rows[0]["n_heldout"]
    for name in cmp.priors:  # elpd is the sum of the per-row held-out ELBOs whose mean the rows report
        row = next(r for r in cmp.rows if r["prior"] == name)
        assert df.loc[name, "elpd"] == pytest.approx(row["heldout_elbo"] * n)
