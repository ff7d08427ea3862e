"""Baselines: the estimator contract (shapes, fit returns self, messages, determinism) and a short-run loss check."""
import re

import numpy as np
import pytest
import torch

from bayes_crl import BayesCRLValueError, NotFittedError, simulate_latent_anm
from bayes_crl.baselines import IVAE, LANCA, VAE, BetaVAE, LinearLatentSCM
from bayes_crl.baselines.lanca import hard_permutation, mmd_imq, sinkhorn

ALL = [VAE, BetaVAE, IVAE, LinearLatentSCM, LANCA]
GRAPH = [LinearLatentSCM, LANCA]
FAST = dict(num_steps=3, batch_size=32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=30, n_obs_dims=4, mechanism="nonlinear",
                               random_state=0)


@pytest.mark.parametrize("cls", ALL)
def test_fit_returns_self_and_shapes(cls, data):
    m = cls(n_latents=2, random_state=0, **FAST)
    assert m.fit(data.x, data.env) is m
    assert m.transform(data.x, data.env).shape == (len(data.x), 2)
    assert m.transform(data.x[:5], data.env[:5]).dtype == np.float64
    assert m.loss_.shape == (3,) and np.isfinite(m.loss_).all()
    assert m.fit_seconds_ >= 0 and m.env_labels_ == list(range(6))
    if cls in GRAPH:
        a = m.edge_inclusion_
        assert a.shape == (2, 2) and set(np.unique(a)) <= {0.0, 1.0}
        assert np.all(np.diag(a) == 0) and not (a * a.T).any()  # a DAG on two nodes
        assert m.adjacency_.dtype == np.int64
    else:
        assert not hasattr(m, "edge_inclusion_")


def test_init_stores_params_unchanged():
    m = LANCA(n_latents=4, num_steps=7, prior="env", tau_end=0.1, random_state=3)
    assert (m.n_latents, m.num_steps, m.prior, m.tau_end, m.random_state) == (4, 7, "env", 0.1, 3)
    assert BetaVAE().beta == 4.0 and VAE().beta == 1.0
    assert not hasattr(m, "net_")


@pytest.mark.parametrize("cls, kw, match", [
    (VAE, {"n_latents": 0}, "The 'n_latents' parameter of VAE must be in the range [1, inf). Got 0 instead."),
    (BetaVAE, {"beta": -1.0}, "The 'beta' parameter of BetaVAE must be in the range [0, inf)"),
    (IVAE, {"num_steps": 2.5}, "The 'num_steps' parameter of IVAE must be an instance of 'int'"),
    (LinearLatentSCM, {"learning_rate": 0.0}, "The 'learning_rate' parameter of LinearLatentSCM"),
    (LANCA, {"prior": "gausian"}, "The 'prior' parameter of LANCA must be one of"),
])
def test_bad_hyper_parameters(cls, kw, match, data):
    with pytest.raises(BayesCRLValueError, match=re.escape(match)):
        cls(**{"n_latents": 2, **FAST, **kw}).fit(data.x, data.env)


def test_bad_inputs_name_the_argument(data):
    x = data.x.copy()
    x[3, 1] = np.nan
    with pytest.raises(BayesCRLValueError, match=r"'x'.*NaN"):
        VAE(n_latents=2, **FAST).fit(x, data.env)
    with pytest.raises(BayesCRLValueError, match="'env'"):
        IVAE(n_latents=2, **FAST).fit(data.x, data.env[:-1])
    with pytest.raises(BayesCRLValueError, match="at least 2 environments for IVAE"):
        IVAE(n_latents=2, **FAST).fit(data.x, np.zeros(len(data.x)))
    with pytest.raises(BayesCRLValueError, match="'n_latents' parameter of LANCA must be <= the number of columns"):
        LANCA(n_latents=5, **FAST).fit(data.x, data.env)
    m = LinearLatentSCM(n_latents=2, **FAST).fit(data.x, data.env)
    with pytest.raises(BayesCRLValueError, match="not seen in fit"):
        m.transform(data.x[:2], [0, 99])
    with pytest.raises(NotFittedError, match="This LANCA instance is not fitted yet. Call 'fit'"):
        LANCA().transform(data.x, data.env)


@pytest.mark.parametrize("cls", ALL)
def test_deterministic_under_random_state(cls, data):
    state = torch.random.get_rng_state()
    a = cls(n_latents=2, random_state=1, **FAST).fit(data.x, data.env)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    b = cls(n_latents=2, random_state=1, **FAST).fit(data.x, data.env)
    c = cls(n_latents=2, random_state=2, **FAST).fit(data.x, data.env)
    za = a.transform(data.x, data.env)
    assert np.array_equal(za, b.transform(data.x, data.env)) and np.array_equal(a.loss_, b.loss_)
    assert not np.array_equal(za, c.transform(data.x, data.env))


def test_ivae_loss_decreases(data):
    m = IVAE(n_latents=2, num_steps=40, batch_size=60, random_state=0).fit(data.x, data.env)
    assert m.loss_[-5:].mean() < 0.8 * m.loss_[:5].mean()
    assert m.prior_loc_.shape == (6, 2) and (m.prior_scale_ > 0).all()


def test_lanca_building_blocks():
    g = torch.Generator().manual_seed(0)
    p = sinkhorn(torch.randn(4, 4, generator=g) / 0.1)
    assert torch.allclose(p.sum(0), torch.ones(4), atol=1e-4) and torch.allclose(p.sum(1), torch.ones(4), atol=1e-4)
    h = hard_permutation(torch.tensor([[0.0, 5.0], [3.0, 0.0]]))
    assert torch.equal(h, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    a, b = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    assert abs(float(mmd_imq(a, b))) < 0.05 < float(mmd_imq(a, b + 3.0))
