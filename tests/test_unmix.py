"""The linear identification step (bayes_crl.unmix) and its folding into the networks."""
import numpy as np
import pytest
import torch

from bayes_crl import metrics, simulate_latent_anm
from bayes_crl.models import LatentCausalNet
from bayes_crl.unmix import centring_map, env_covariances, partial_correlation_loss, sparse_unmixing


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


def _chain_with_strengths(w: np.ndarray, n: int = 400, seed: int = 0):
    """Linear two-latent chain z1 = w[u] z0 + n1 over len(w) environments (varied noise scales)."""
    rng = np.random.default_rng(seed)
    e = len(w)
    env = np.repeat(np.arange(e), n)
    z0 = rng.normal(0, rng.uniform(0.5, 2, e)[env])
    z1 = w[env] * z0 + rng.normal(0, rng.uniform(0.5, 2, e)[env])
    return np.c_[z0, z1], env


def test_centring_map_removes_the_mean_strength_and_keeps_the_first_latent():
    rng = np.random.default_rng(0)
    w = rng.choice([-1.0, 1.0], 30) * rng.uniform(0.5, 2.0, 30)
    w[4] = 0.0
    z, env = _chain_with_strengths(w)
    shifted = z.copy()
    shifted[:, 1] += 0.8 * z[:, 0]  # a parent's share moved into the child: the flat direction
    a = centring_map(shifted, env, pooled=False)
    assert a.shape == (2, 2) and a[0, 0] == 1.0 and a[1, 0] == 0.0 and a[1, 1] == 1.0
    # z1 <- z1 - c z0 with c = the mean of the per-environment strengths (0.8 + mean(w), up to sampling error)
    assert abs(-a[0, 1] - (0.8 + w.mean())) < 0.05
    centred = shifted @ a
    assert abs(np.corrcoef(centred[:, 1], z[:, 1] - w.mean() * z[:, 0])[0, 1]) > 0.999
    # applying it again changes nothing (the strengths are already centred)
    np.testing.assert_allclose(centring_map(centred, env, pooled=False), np.eye(2), atol=1e-8)
    # pooled (default): the mean weighted by each environment's variance of the parent
    v = np.array([z[env == u, 0].var() for u in range(30)])
    a_p = centring_map(shifted, env)
    assert abs(-a_p[0, 1] - (0.8 + (v * w).sum() / v.sum())) < 0.05
    np.testing.assert_allclose(centring_map(shifted @ a_p, env), np.eye(2), atol=1e-8)


def test_centring_map_pooled_is_not_moved_by_a_low_variance_environment():
    # independent latents estimated with a constant leak z1 += 0.2 z0, plus one environment where z0 has almost
    # no variance and the estimation error sets the slope (-8), as measured on fitted null-benchmark latents
    rng = np.random.default_rng(1)
    e, n = 30, 500
    env = np.repeat(np.arange(e), n)
    sd0 = rng.uniform(0.5, 2.5, e)
    sd0[3] = 0.05
    z0 = rng.normal(0, sd0[env])
    z1 = rng.normal(0, rng.uniform(0.5, 2.5, e)[env]) + 0.2 * z0
    s3 = env == 3
    z1[s3] += -8.2 * z0[s3]
    z = np.c_[z0, z1]
    assert abs(-centring_map(z, env)[0, 1] - 0.2) < 0.03  # the leak is taken out
    assert abs(-centring_map(z, env, pooled=False)[0, 1] - 0.2) > 0.2  # the plain mean is dragged to ~-0.07


def test_residual_scale_is_the_geometric_mean_noise_scale():
    from bayes_crl.unmix import residual_scale

    rng = np.random.default_rng(2)
    e, n = 20, 2000
    env = np.repeat(np.arange(e), n)
    s0, s1 = rng.uniform(0.2, 3, e), rng.uniform(0.2, 3, e)
    z0 = rng.normal(0, s0[env])
    z1 = rng.normal(1.0, 1.0, e)[env] * z0 + rng.normal(0, s1[env])
    s = residual_scale(3.0 * np.c_[z0, z1], env)
    np.testing.assert_allclose(s, 3.0 * np.exp([np.log(s0).mean(), np.log(s1).mean()]), rtol=0.03)


def test_centring_map_leaves_a_non_parent_alone(chain):
    # z0 -> z1 -> z2 with z0 not a parent of z2: its coefficient is near zero in every environment
    a = centring_map(chain.z, chain.env)
    assert np.allclose(np.diag(a), 1.0) and np.allclose(np.tril(a, -1), 0.0)
    # z2 moves only along its parent z1' = z1 + a01 z0 (z2' = z2 + a12 z1'), not along z0 itself
    assert abs(a[0, 2] - a[1, 2] * a[0, 1]) < 0.06
