"""The ``device`` argument: its resolution and errors, and a model and guide that compute on the device of their
parameters and data (checked on PyTorch's ``meta`` device: any tensor made on the default device instead
raises there, as it would on a GPU)."""
import re
import types

import numpy as np
import pyro
import pytest
import torch

from bayes_crl import LatentCausalModel, simulate_latent_anm
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.device import on_device, resolve_device
from bayes_crl.guides import GlobalGuide
from bayes_crl.infer import fit_svi
from bayes_crl.models import LatentCausalNet
from bayes_crl.noise import NOISE_FAMILIES
from bayes_crl.priors import PRIORS
from bayes_crl.stages import _NegativeELBO

E, L, D, B = 4, 3, 6, 16


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_and_auto_resolve_to_the_cpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, device):
    with pytest.raises(BayesCRLValueError, match=r"The 'device' parameter of f is .*cuda.*CUDA is not available"):
        resolve_device(device, "device", "f")


def test_cuda_resolution_with_two_gpus(monkeypatch):
    """The resolution logic where CUDA is present (mocked: no GPU is needed to check it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(BayesCRLValueError, match=r"'cuda:3', but this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("device, match", [("gpu0", "must be 'cpu', 'cuda', 'cuda:N', 'auto' or a torch.device. "
                                                   "Got 'gpu0'"),
                                           (0, "Got 0 instead"),
                                           ("meta", "must name a CPU or a CUDA device. Got 'meta'")])
def test_bad_device_names_the_argument(device, match):
    with pytest.raises(BayesCRLValueError, match=re.escape(match)):
        resolve_device(device)


def test_estimator_checks_the_device_before_fitting(no_cuda):
    d = simulate_latent_anm(n_latents=2, n_envs=5, n_per_env=30, n_obs_dims=4, random_state=0)
    m = LatentCausalModel(2, device="cuda", num_steps=5)
    with pytest.raises(BayesCRLValueError, match=r"The 'device' parameter of LatentCausalModel is 'cuda'"):
        m.fit(d.x, d.env)
    assert not hasattr(m, "result_")
    with pytest.raises(BayesCRLValueError, match="'device'"):
        fit_svi(torch.zeros(10, 4), torch.zeros(10, dtype=torch.long), n_latents=2, n_envs=1, prior=PRIORS["laplace"](),
                noise=NOISE_FAMILIES["gaussian"], device="tpu")


def test_a_cpu_fit_keeps_its_modules_on_the_cpu_and_saves_its_device(tmp_path):
    d = simulate_latent_anm(n_latents=2, n_envs=5, n_per_env=40, n_obs_dims=4, random_state=0)
    m = LatentCausalModel(2, device=torch.device("cpu"), num_steps=20, n_restarts=1, num_posterior_samples=10,
                          random_state=0).fit(d.x, d.env)
    assert {p.device.type for p in m.result_.net.parameters()} == {"cpu"}
    assert m.transform(d.x, d.env).shape == (len(d.x), 2)
    back = LatentCausalModel.load(m.save(str(tmp_path / "m")))
    assert back.get_params()["device"] == "cpu"
    np.testing.assert_array_equal(back.transform(d.x, d.env), m.transform(d.x, d.env))


def test_on_device_copies_only_when_the_device_differs():
    net = LatentCausalNet(D, E, L)
    assert on_device(net, torch.device("cpu")) is net
    moved = on_device(net, torch.device("meta"))
    assert moved is not net and next(moved.parameters()).device.type == "meta"
    assert next(net.parameters()).device.type == "cpu"


@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("noise", sorted(NOISE_FAMILIES))
@pytest.mark.parametrize("latent_only", [False, True])
def test_model_and_guide_compute_on_the_device_of_their_inputs(prior, noise, latent_only):
    torch.manual_seed(0)
    net = LatentCausalNet(D, E, L, full_cov=True).to("meta")
    pr = PRIORS[prior]()
    run = types.SimpleNamespace(net=net, gg=GlobalGuide(pr, E, L).to("meta"))
    objective = _NegativeELBO(run, pr, NOISE_FAMILIES[noise], 100)
    x = torch.empty(B, D, device="meta")
    env = torch.zeros(B, dtype=torch.long, device="meta")
    idx = torch.arange(B, device="meta")
    with pyro.validation_enabled(False):  # the argument checks read values, which meta tensors do not have
        if latent_only:
            objective.forward = _latent_only(objective)
        loss = objective(x, env, idx)
        loss.backward()
    assert loss.device.type == "meta" and loss.shape == ()
    grads = [p.grad for p in list(net.parameters()) + list(run.gg.parameters()) if p.grad is not None]
    assert grads and {g.device.type for g in grads} == {"meta"}


def _latent_only(objective):
    """``objective``'s negative ELBO without the observation site (the refit's loss)."""
    from pyro import poutine

    from bayes_crl.guides import latent_causal_guide
    from bayes_crl.models import latent_causal_model

    def forward(x, env, idx):
        kw = dict(net=objective.net, prior=objective.prior, noise=objective.noise, n_total=objective.n_total,
                  subsample=idx, global_guide=objective.gg, latent_only=True)
        guide_tr = poutine.trace(latent_causal_guide).get_trace(x, env, **kw)
        model_tr = poutine.trace(poutine.replay(latent_causal_model, trace=guide_tr)).get_trace(x, env, **kw)
        return guide_tr.log_prob_sum() - model_tr.log_prob_sum()

    return forward
