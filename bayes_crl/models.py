"""Pyro model functions of the Bayesian latent causal model.

Generative model (for each observation ``n`` with environment ``u = env[n]``):

- global edge variables from an :class:`~bayes_crl.priors.EdgePrior` -> strengths ``W (E, l, l)``,
  ``W[u, j, i]`` the influence of ``z_j`` on ``z_i`` in environment ``u`` (only ``j < i`` in slot order);
- ``z ~ LatentANM``: ``z_i = sum_j W[u, j, i] phi_ji(z_j) + n_i``, ``n_i ~ Noise(loc[u, i], scale[u, i])``;
- ``x ~ Normal(f(z), sigma_x)`` (or ``Bernoulli(logits=f(z))``).

Site names (part of the API)
----------------------------
``edge_*`` : global edge sites of the prior (see :mod:`bayes_crl.priors`);
``z``      : per-observation latent causal variables, event shape ``(l,)``, inside plate ``obs``;
``x``      : observations, event shape ``(d,)``, inside plate ``obs``.
Noise locations/scales, mechanism features and the decoder are parameters (empirical Bayes point
estimates) held by a :class:`LatentCausalNet`.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints

from bayes_crl.nn import Decoder, EdgeFeatures, Encoder
from bayes_crl.noise import NoiseFamily
from bayes_crl.priors import EdgePrior

__all__ = ["LatentANM", "LatentCausalNet", "latent_causal_model", "SITE_Z", "SITE_X", "OBS_PLATE"]

SITE_Z = "z"
SITE_X = "x"
OBS_PLATE = "obs"


class LatentANM(TorchDistribution):
    """Density of the latent additive noise model given the environment of each row.

    Parameters
    ----------
    weight : Tensor (B, l, l)
        Strengths ``W[u_n]`` for each row (strictly upper triangular in ``[parent, child]``).
    loc, scale : Tensor (B, l)
        Noise parameters ``loc[u_n]``, ``scale[u_n]``.
    features : callable
        ``z (..., l) -> (..., l, l)`` per-edge features ``phi_ji(z_j)``.
    noise : NoiseFamily
    shape : Tensor (l,), optional
        Shape parameter for the gamma family.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, weight, loc, scale, features, noise: NoiseFamily, shape=None, validate_args=None):
        self.weight, self.loc_, self.scale_ = weight, loc, scale
        self.features, self.noise, self.shape_ = features, noise, shape
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def mechanism(self, z: torch.Tensor) -> torch.Tensor:
        """``g(z) (..., l)``: ``g_i = sum_j W[j, i] phi_ji(z_j)``."""
        return (self.weight * self.features(z)).sum(-2)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.mechanism(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.noise.log_prob(self.residual(z), self.loc_, self.scale_, self.shape_).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            n = self.noise.sample(self.loc_, self.scale_, self.shape_, sample_shape)
            z = torch.zeros_like(n)
            for i in range(n.shape[-1]):  # ancestral: slot order is a topological order
                z = z.clone()
                z[..., i] = self.mechanism(z)[..., i] + n[..., i]
            return z


class LatentCausalNet(nn.Module):
    """All parameters of the model and of the amortized guide's local part.

    Holds the encoder, decoder, edge features, the per-environment noise parameters, the edge mask
    (slot order) and, for the guide, the variational parameters of the global edge sites.
    """

    def __init__(self, n_obs_dims: int, n_envs: int, n_latents: int, *, hidden: int = 64, n_layers: int = 3,
                 nonlinear: bool = True, likelihood: str = "normal", encoder_env: bool = True,
                 min_obs_scale: float = 0.0, full_cov: bool = False):
        super().__init__()
        self.min_obs_scale = min_obs_scale
        self.n_obs_dims, self.n_envs, self.n_latents = n_obs_dims, n_envs, n_latents
        self.likelihood = likelihood
        self.encoder = Encoder(n_obs_dims, n_envs, n_latents, hidden, n_layers, use_env=encoder_env, full_cov=full_cov)
        self.decoder = Decoder(n_latents, n_obs_dims, hidden, n_layers)
        self.features = EdgeFeatures(n_latents, nonlinear=nonlinear)
        self.noise_loc = nn.Parameter(torch.zeros(n_envs, n_latents))
        self.noise_log_scale = nn.Parameter(torch.zeros(n_envs, n_latents))
        self.noise_log_shape = nn.Parameter(torch.zeros(n_latents))
        self.register_buffer("mask", torch.triu(torch.ones(n_latents, n_latents), diagonal=1))
        # Unit-triangular linear "shift" between the encoder/decoder coordinates r and the latents z = r (I + C).
        # It spans the directions z_i -> z_i - c z_j that leave the likelihood unchanged (only the edge prior
        # decides them), so the optimiser can follow the prior along them directly.
        self.shift = nn.Parameter(torch.zeros(n_latents, n_latents))

    def shift_matrix(self) -> torch.Tensor:
        """``M = I + C`` (l, l), unit upper triangular: ``z = r M``."""
        return torch.eye(self.n_latents, dtype=self.shift.dtype, device=self.shift.device) + self.shift * self.mask

    def to_coords(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder coordinates ``r = z M^{-1}`` of latents ``z`` (..., l)."""
        m = self.shift_matrix()
        return torch.linalg.solve_triangular(m, z.reshape(-1, z.shape[-1]), upper=True, left=False).reshape(z.shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mixing ``f(z)`` (..., d)."""
        return self.decoder(self.to_coords(z))

    def encode_mean(self, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Posterior mean of ``z`` (B, l)."""
        return self.encoder(x, env)[0] @ self.shift_matrix()

    @torch.no_grad()
    def _fold(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Fold ``z' = z a + b`` into the encoder's last and the decoder's first layer."""
        l = self.n_latents
        last = self.encoder.net[-1]
        last.weight[:l] = a.T @ last.weight[:l]
        last.bias[:l] = last.bias[:l] @ a + b
        first = self.decoder.net[0]
        a_inv = torch.linalg.inv(a)
        w = first.weight.clone()
        first.weight.copy_(w @ a_inv.T)
        first.bias.copy_(first.bias - b @ a_inv @ w.T)

    @torch.no_grad()
    def fold_shift(self) -> None:
        """Absorb the shift into the encoder's last and the decoder's first layer and reset it to zero."""
        self._fold(self.shift_matrix(), torch.zeros_like(self.shift[0]))
        self.shift.zero_()

    @torch.no_grad()
    def apply_linear_map(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Re-express the latents as ``z' = z a + b`` ((l, l) invertible, (l,)) without changing the encoder's
        posterior means or the decoder's function. Mechanism features are reset (the noise and edge parameters
        must be re-initialised by the caller), and so is the guide's full-covariance factor (to mean-field); the
        encoder's posterior scales are left as they were, for training to adapt.
        """
        self.fold_shift()
        self._fold(a, b)
        self.encoder.reset_full_cov()
        self.features.reset()

    def noise_scale(self) -> torch.Tensor:
        """Per-environment noise scales (E, l); the geometric mean over environments is 1 for each latent."""
        s = self.noise_log_scale
        return torch.exp(s - s.mean(0, keepdim=True))

    def obs_scale(self) -> torch.Tensor:
        """Observation noise scale (d,), bounded below by ``min_obs_scale`` (in standardised units)."""
        return self.min_obs_scale + self.decoder.log_scale.exp()

    def noise_shape(self) -> torch.Tensor:
        return torch.exp(self.noise_log_shape) + 0.5

    @torch.no_grad()
    def permute_latents(self, perm: torch.Tensor) -> None:
        """Reorder latent slots (new slot k = old slot ``perm[k]``) without changing the encoder/decoder
        functions; mechanism features are reset (they are re-learned in the new order)."""
        self.fold_shift()
        self.encoder.permute_latents(perm)
        self.decoder.permute_latents(perm)
        self.noise_loc.copy_(self.noise_loc[:, perm])
        self.noise_log_scale.copy_(self.noise_log_scale[:, perm])
        self.noise_log_shape.copy_(self.noise_log_shape[perm])
        self.features.reset()


def latent_causal_model(x: torch.Tensor | None, env: torch.Tensor, *, net: LatentCausalNet, prior: EdgePrior,
                        noise: NoiseFamily, n_total: int | None = None, subsample: torch.Tensor | None = None,
                        latent_only: bool = False, **_guide_only):
    """Pyro model of the Bayesian latent causal model.

    Parameters
    ----------
    x : Tensor (B, d) or None
        Observations of the rows in this minibatch (``None`` to sample from the model).
    env : Tensor (B,) int64
        Environment codes in ``0..E-1``.
    net : LatentCausalNet
        Parameters (decoder, features, noise parameters, mask).
    prior : EdgePrior
    noise : NoiseFamily
    n_total : int, optional
        Size of the full data set (for the minibatch scaling ``N / B`` of the ``obs`` plate).
    subsample : Tensor (B,), optional
        Indices of this minibatch in the full data.
    latent_only : bool
        Leave out the observation site ``x`` (the latent prior alone). With the encoder and decoder held fixed
        the ``x`` term is a constant, so this is the ELBO of the latent causal model's parameters given
        ``q(z | x, u)``; :func:`~bayes_crl.infer.fit_svi` uses it to refit the edge posterior after a late
        change of the causal order.
    **_guide_only
        Ignored (lets model and guide share one argument list, as Pyro's SVI passes both the same).

    Returns
    -------
    z : Tensor (B, l)
    """
    w = prior.sample(net.n_envs, net.mask)
    shape = net.noise_shape() if noise.name == "gamma" else None
    b = env.shape[0]
    n_total = b if n_total is None else n_total
    rows = subsample if subsample is not None else torch.arange(b, device=env.device)
    with pyro.plate(OBS_PLATE, n_total, subsample=rows):
        z = pyro.sample(SITE_Z, LatentANM(w[env], net.noise_loc[env], net.noise_scale()[env], net.features, noise,
                                          shape))
        if latent_only:
            return z
        f = net.decode(z)
        if net.likelihood == "bernoulli":
            pyro.sample(SITE_X, dist.Bernoulli(logits=f).to_event(1), obs=x)
        else:
            pyro.sample(SITE_X, dist.Normal(f, net.obs_scale()).to_event(1), obs=x)
    return z
