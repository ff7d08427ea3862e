"""The linear identification step (bayes_crl.unmix) and its folding into the networks."""
import numpy as np
import pytest
import torch

from bayes_crl import metrics, simulate_latent_anm
from bayes_crl.models import LatentCausalNet
from bayes_crl.unmix import env_covariances, partial_correlation_loss, sparse_unmixing


@pytest.fixture(scope="module")
def chain():
    # linear chain, each edge vanishing in 3 environments: the sparsest coordinates are the true ones
    return simulate_latent_anm(n_latents=3, n_envs=20, n_per_env=400, mechanism="linear", vanish_envs=3,
                               random_state=0)


def test_loss_is_invariant_to_scale_and_permutation_of_coordinates():
    rng = np.random.default_rng(0)
    cov = torch.as_tensor(np.stack([np.cov(rng.normal(size=(50, 3)).T) for _ in range(4)]))
    b = torch.as_tensor(rng.normal(size=(1, 3, 3)))
    scaled = b * torch.tensor([2.0, -0.5, 3.0])
    permuted = b[..., [2, 0, 1]]
    ref = partial_correlation_loss(b, cov, 0.01)
    assert torch.allclose(partial_correlation_loss(scaled, cov, 0.01), ref)
    assert torch.allclose(partial_correlation_loss(permuted, cov, 0.01), ref)


def test_env_covariances_shape_and_skips_single_row_envs():
    z = np.random.default_rng(1).normal(size=(11, 2))
    env = np.array([0] * 5 + [1] * 5 + [2])
    assert env_covariances(z, env).shape == (2, 2, 2)


def test_sparse_unmixing_undoes_a_linear_mixing_of_the_true_latents(chain):
    rng = np.random.default_rng(3)
    a_true = rng.normal(size=(3, 3)) + 2 * np.eye(3)
    mixed = chain.z @ a_true
    assert metrics.mpc(chain.z, mixed) < 0.9
    a, b, loss = sparse_unmixing(mixed, chain.env, n_starts=32, steps=300, seed=0)
    z_id = mixed @ a + b
    assert metrics.mpc(chain.z, z_id) >= 0.97
    np.testing.assert_allclose(z_id.mean(0), 0.0, atol=1e-8)
    np.testing.assert_allclose(z_id.std(0), 1.0, atol=1e-6)
    # the mixed coordinates themselves score worse than the identified ones
    _, _, loss_identity = sparse_unmixing(mixed, chain.env, n_starts=1, steps=0, seed=0)
    assert loss < loss_identity


def test_apply_linear_map_keeps_encoder_and_decoder_functions():
    torch.manual_seed(0)
    net = LatentCausalNet(6, 4, 3)
    x, env = torch.randn(20, 6), torch.randint(0, 4, (20,))
    z0 = net.encode_mean(x, env)
    f0 = net.decode(z0)
    a, b = torch.randn(3, 3) + 2 * torch.eye(3), torch.randn(3)
    net.apply_linear_map(a, b)
    z1 = net.encode_mean(x, env)
    torch.testing.assert_close(z1, z0 @ a + b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.decode(z1), f0, atol=1e-5, rtol=1e-5)
