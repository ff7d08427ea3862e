"""The estimator's contract: validation at the boundary, warnings, non-finite guards, labels."""
import re
import warnings

import numpy as np
import pyro
import pytest
import torch

from bayes_crl import BayesCRLValueError, IdentifiabilityWarning, LatentCausalModel, NotFittedError, simulate_latent_anm
from bayes_crl.infer import NonFiniteLossError, fit_svi
from bayes_crl.noise import get_noise_family
from bayes_crl.priors import get_prior

FAST = dict(num_steps=3, batch_size=32, num_posterior_samples=10, n_restarts=1)


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=30, n_obs_dims=4, random_state=0)


def test_init_stores_params_unchanged():
    m = LatentCausalModel(n_latents=4, edge_prior="spike_slab", noise="laplace", num_steps=7, random_state=3)
    assert (m.n_latents, m.edge_prior, m.noise, m.num_steps, m.random_state) == (4, "spike_slab", "laplace", 7, 3)
    assert not hasattr(m, "edge_inclusion_")


@pytest.mark.parametrize("kw, match", [
    ({"noise": "gausian"}, "'noise' parameter of LatentCausalModel must be one of"),
    ({"edge_prior": "ridge"}, "'edge_prior' parameter of LatentCausalModel must be one of"),
    ({"n_latents": 0}, "'n_latents' parameter of LatentCausalModel"),
    ({"num_steps": 2.5}, "'num_steps' parameter of LatentCausalModel"),
    ({"learning_rate": -1.0}, "'learning_rate' parameter of LatentCausalModel"),
    ({"n_restarts": 0}, "'n_restarts' parameter of LatentCausalModel"),
])
def test_bad_hyper_parameters(data, kw, match):
    with pytest.raises(BayesCRLValueError, match=re.escape(match)):
        LatentCausalModel(**{"n_latents": 2, **FAST, **kw}).fit(data.x, env=data.env)


def test_bad_inputs_name_the_argument(data):
    m = LatentCausalModel(n_latents=2, **FAST)
    x = data.x.copy()
    x[3, 1] = np.nan
    with pytest.raises(BayesCRLValueError, match=r"'x'.*NaN"):
        m.fit(x, env=data.env)
    with pytest.raises(BayesCRLValueError, match="'env'"):
        m.fit(data.x, env=data.env[:-1])
    with pytest.raises(BayesCRLValueError, match="at least 2 environments"):
        m.fit(data.x, env=np.zeros(len(data.x)))
    with pytest.raises(BayesCRLValueError, match="'n_latents'.*<= the number of columns"):
        LatentCausalModel(n_latents=5, **FAST).fit(data.x, env=data.env)
    with pytest.raises(BayesCRLValueError, match="'x'"):
        m.fit(data.x[:, 0], env=data.env)


def test_not_fitted_message():
    with pytest.raises(NotFittedError, match="not fitted yet. Call 'fit'"):
        LatentCausalModel().transform(np.zeros((2, 3)), env=[0, 1])


def test_too_few_environments_warns_or_raises_when_strict():
    d = simulate_latent_anm(n_latents=2, n_envs=3, n_per_env=30, n_obs_dims=4, random_state=0)
    with pytest.warns(IdentifiabilityWarning, match="2l\\+1 = 5"):
        LatentCausalModel(n_latents=2, **FAST).fit(d.x, env=d.env)
    with pytest.raises(BayesCRLValueError, match="2l\\+1"):
        LatentCausalModel(n_latents=2, strict=True, **FAST).fit(d.x, env=d.env)


def test_string_env_labels_are_kept_and_checked(data):
    labels = np.array([f"day {u}" for u in data.env], dtype=object)
    m = LatentCausalModel(n_latents=2, **FAST).fit(data.x, env=labels)
    assert m.env_labels_ == [f"day {u}" for u in range(6)]
    assert m.transform(data.x[:5], env=labels[:5]).shape == (5, 2)
    with pytest.raises(BayesCRLValueError, match="not seen in fit"):
        m.transform(data.x[:2], env=["day 99", "day 1"])


def test_nonfinite_batches_are_rejected_and_parameters_stay_finite(data):
    x = torch.tensor(data.x, dtype=torch.float32)
    env = torch.tensor(data.env)
    x_bad = x.clone()
    x_bad[::7] = float("nan")  # most minibatches of 16 hold a bad row
    kw = dict(n_latents=2, n_envs=6, prior=get_prior("laplace"), noise=get_noise_family("gaussian"), batch_size=4,
              num_steps=30, seed=0, order_search=False)
    res = fit_svi(x_bad, env, **kw)
    assert res.n_rejected > 0
    assert np.isnan(res.losses).sum() == res.n_rejected
    assert all(torch.isfinite(p).all() for p in res.net.parameters())


def test_persistent_nonfinite_loss_stops_with_a_clear_error(data):
    x = torch.full((len(data.x), 4), float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"SVI stopped at step 4: 5 consecutive steps"):
        fit_svi(x, torch.tensor(data.env), n_latents=2, n_envs=6, prior=get_prior("laplace"),
                noise=get_noise_family("gaussian"), num_steps=20, max_bad_steps=5, order_search=False)


@pytest.mark.parametrize("validate", [True, False])
def test_validation_runs_after_a_bad_step_and_the_global_setting_is_restored(data, validate):
    # Pyro's checks are off between good steps (speed) but on after a rejected step, so the error names the check
    from pyro.infer.util import is_validation_enabled

    x = torch.full((len(data.x), 4), float("nan"))
    with pyro.validation_enabled(validate):
        with pytest.raises(NonFiniteLossError, match=r"Last error: Expected parameter loc .* Real\(\)"):
            fit_svi(x, torch.tensor(data.env), n_latents=2, n_envs=6, prior=get_prior("laplace"),
                    noise=get_noise_family("gaussian"), num_steps=20, max_bad_steps=3, order_search=False)
        assert is_validation_enabled() is validate
        assert torch.distributions.Distribution._validate_args is validate


def test_small_environments_and_constant_columns_warn(data):
    from bayes_crl import DataWarning

    x = data.x.copy()
    x[:, 3] = 1.5
    with pytest.warns(DataWarning, match=r"Columns \[3\] of x are constant"):
        LatentCausalModel(n_latents=2, **FAST).fit(x, env=data.env)
    env = data.env.copy()
    env[:5] = 99  # a 5-row environment
    with pytest.warns(DataWarning, match=r"\[99\] have fewer than 20 rows \(smallest: 5\)"):
        LatentCausalModel(n_latents=2, **FAST).fit(data.x, env=env)
    with pytest.raises(BayesCRLValueError, match="only constant columns"):
        LatentCausalModel(n_latents=2, **FAST).fit(np.ones_like(data.x), env=data.env)


def test_sklearn_clone_and_params():
    from sklearn.base import clone

    m = LatentCausalModel(n_latents=4, edge_prior="spike_slab")
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    assert not hasattr(c, "edge_inclusion_")
    assert repr(m) == "LatentCausalModel(edge_prior='spike_slab', n_latents=4)"  # non-default parameters only
    c.set_params(num_steps=11, noise="laplace")
    assert (c.num_steps, c.noise) == (11, "laplace")
    with pytest.raises(ValueError, match="Invalid parameter 'nosie'"):
        c.set_params(nosie="laplace")


def test_grid_search_over_priors(data):
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    # the score is the held-out ELBO per row; a predefined split keeps every environment on both sides
    fold = np.arange(len(data.env)) % 2
    gs = GridSearchCV(LatentCausalModel(n_latents=2, random_state=0, **FAST),
                      {"edge_prior": ["horseshoe", "laplace"]}, cv=PredefinedSplit(fold), refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs.fit(data.x, data.env)
    assert list(gs.cv_results_["param_edge_prior"]) == ["horseshoe", "laplace"]
    assert np.all(np.isfinite(gs.cv_results_["mean_test_score"]))


def test_no_import_circle_among_modules():
    """Layers import downwards only: no module of the package reaches itself through imports made at run time
    (imports under ``TYPE_CHECKING`` only name types)."""
    import ast
    import os

    import networkx as nx

    import bayes_crl

    root = os.path.dirname(bayes_crl.__file__)
    g = nx.DiGraph()
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            mod = "bayes_crl." + os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            mod = mod.removesuffix(".__init__")
            with open(path) as fh:
                tree = ast.parse(fh.read())
            typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                           and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
            for node in ast.walk(tree):
                if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                if node.module.startswith("bayes_crl.") and mod != "bayes_crl":
                    g.add_edge(mod, node.module)
    assert "bayes_crl.persistence" in g and "bayes_crl.estimator" not in nx.descendants(g, "bayes_crl.persistence")
    assert list(nx.simple_cycles(g)) == []


def test_dataframe_with_environment_column(data):
    import pandas as pd

    df = pd.DataFrame(data.x, columns=[f"x{k}" for k in range(data.x.shape[1])])
    df.insert(2, "batch", [f"b{u}" for u in data.env])
    m = LatentCausalModel(n_latents=2, random_state=0, **FAST).fit(df, env="batch")
    assert m.n_features_in_ == data.x.shape[1] and m.env_labels_ == [f"b{u}" for u in range(6)]
    z = m.transform(df, env="batch")
    np.testing.assert_allclose(z, m.transform(data.x, np.array([f"b{u}" for u in data.env])))
    with pytest.raises(BayesCRLValueError, match="names a column, 'site', that the DataFrame 'x' does not have"):
        m.transform(df, env="site")


def test_sklearn_estimator_checks_that_apply():
    """scikit-learn's own checks of the estimator contract that apply to an estimator whose ``fit`` needs
    environments: its constructor stores parameters unchanged, ``get_params``/``set_params`` round-trip, ``clone``
    gives an unfitted copy and the estimator has no fitted attributes before ``fit``. The checks that call
    ``fit(X, y)`` with scikit-learn's generic data do not apply: there ``y`` is a regression or class target, and
    here it is the environment (it needs at least 2 environments with 20 rows each and ``n_latents <= d``)."""
    from sklearn.utils.estimator_checks import (check_get_params_invariance, check_no_attributes_set_in_init,
                                                check_parameters_default_constructible,
                                                check_set_params)

    est = LatentCausalModel(n_latents=2, random_state=0, **FAST)
    name = type(est).__name__
    check_no_attributes_set_in_init(name, est)
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    check_parameters_default_constructible(name, LatentCausalModel())


def test_fit_runs_on_the_threads_asked_for_and_restores_the_callers():
    """``n_threads`` fixes torch's (and BLAS's) thread count during the fit, so the caller's setting cannot send a
    fit elsewhere; the caller's setting is back afterwards."""
    import torch

    import bayes_crl.estimator as est

    d = simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=40, n_obs_dims=4, random_state=0)
    seen = []
    real = est.fit_svi

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    before = torch.get_num_threads()
    try:
        est.fit_svi = spy
        torch.set_num_threads(2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LatentCausalModel(n_latents=2, num_steps=3, random_state=0, num_posterior_samples=10).fit(d.x, d.env)
            assert torch.get_num_threads() == 2
            LatentCausalModel(n_latents=2, num_steps=3, n_threads=None, random_state=0,
                              num_posterior_samples=10).fit(d.x, d.env)
    finally:
        est.fit_svi = real
        torch.set_num_threads(before)
    assert seen == [1, 2]
    with pytest.raises(ValueError, match="n_threads"):
        LatentCausalModel(n_threads=0).fit(d.x, d.env)


def test_spike_and_slab_beyond_13_latents_uses_the_variational_posterior():
    """Children with more than 12 candidate parents get the variational edge posterior: any number of latents
    fits, and the probabilities are those of one order (a DAG)."""
    d = simulate_latent_anm(n_latents=14, n_envs=29, n_per_env=20, n_obs_dims=14, random_state=0)
    m = LatentCausalModel(n_latents=14, edge_prior="spike_slab", unmix=False, order_search=False, **FAST).fit(
        d.x, env=d.env)
    p = m.edge_inclusion_
    assert p.shape == (14, 14) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(np.diag(p), 0)
    assert np.all(p * p.T == 0)  # one order: no pair with both directions
