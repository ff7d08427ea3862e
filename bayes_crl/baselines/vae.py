"""Variational autoencoder baselines: ``VAE``, ``BetaVAE`` and ``IVAE``.

All three share the networks of :class:`bayes_crl.LatentCausalModel` (three-layer leaky-ReLU MLPs of
width ``hidden`` from :func:`bayes_crl.nn.mlp`; a Gaussian decoder with a learned observation scale,
:class:`bayes_crl.nn.Decoder`) and maximise a single-sample reparameterised ELBO per row,
``E_q[log p(x | z)] - beta * KL(q(z | .) || p(z | .))``, with the KL in closed form.

- :class:`VAE` (Kingma & Welling 2014): ``p(z) = N(0, I)``, encoder ``q(z | x)``; no environment.
- :class:`BetaVAE` (Higgins et al. 2017): the same with ``beta = 4``.
- :class:`IVAE` (Khemakhem et al. 2020): conditionally factorised Gaussian prior
  ``p(z | u) = prod_i N(z_i; m_i(u), exp(v_i(u)))`` whose mean and log-variance per latent are learned
  per environment, encoder ``q(z | x, u)`` (:class:`bayes_crl.nn.Encoder`). With a one-hot ``u`` the
  original's network ``lambda(u)`` is a lookup table, which is what is learned here.

None of them has a latent graph: they have no ``edge_inclusion_``.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import nn

from bayes_crl._validation import check_scalar
from bayes_crl.baselines._base import BaselineEstimator, gaussian_kl, gaussian_nll
from bayes_crl.nn import Decoder, Encoder, mlp

__all__ = ["VAE", "BetaVAE", "IVAE"]


class _PlainEncoder(nn.Module):
    """Gaussian encoder ``q(z | x)`` without the environment (same net and scale map as ``nn.Encoder``)."""

    def __init__(self, n_obs_dims: int, n_latents: int, hidden: int, n_layers: int = 3):
        super().__init__()
        self.net = mlp(n_obs_dims, 2 * n_latents, hidden, n_layers)

    def forward(self, x: torch.Tensor, env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(x).chunk(2, -1)
        return loc, nn.functional.softplus(raw - 2.0) + 1e-4


class _VAENet(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: Decoder, n_envs: int, n_latents: int, learn_prior: bool):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior_loc = nn.Parameter(torch.zeros(n_envs, n_latents), requires_grad=learn_prior)
        self.prior_log_scale = nn.Parameter(torch.zeros(n_envs, n_latents), requires_grad=learn_prior)


class VAE(BaselineEstimator):
    """Variational autoencoder with a standard normal prior (no environment information).

    Parameters
    ----------
    n_latents : int, default 3
        Latent dimension ``l``.
    num_steps : int, default 6000
        Adam steps.
    batch_size : int, default 512
    learning_rate : float, default 5e-3
    hidden : int, default 64
        Width of the encoder/decoder layers (three layers, leaky ReLU).
    beta : float, default 1.0
        Weight of the KL term (1 is the ELBO).
    standardize : bool, default True
        Standardise the columns of ``x`` before fitting.
    random_state : int, numpy Generator or None, default None

    Attributes
    ----------
    loss_ : ndarray (num_steps,)
        Negative (beta-)ELBO per row at each step (``nan`` for rejected steps).
    fit_seconds_ : float
    env_labels_ : list
    latent_names_ : tuple[str, ...]
    net_ : torch.nn.Module
        Fitted encoder and decoder.
    """

    def __init__(self, n_latents: int = 3, *, num_steps: int = 6000, batch_size: int = 512,
                 learning_rate: float = 5e-3, hidden: int = 64, beta: float = 1.0, standardize: bool = True,
                 random_state: Any = None):
        super().__init__(n_latents, num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate,
                         hidden=hidden, standardize=standardize, random_state=random_state)
        self.beta = beta

    _conditional = False

    def _validate_extra(self) -> None:
        check_scalar(self.beta, "beta", Real, self._name, min_val=0)

    def _build(self, n_obs_dims: int, n_envs: int) -> nn.Module:
        l = self.n_latents
        enc = (Encoder(n_obs_dims, n_envs, l, self.hidden) if self._conditional
               else _PlainEncoder(n_obs_dims, l, self.hidden))
        return _VAENet(enc, Decoder(l, n_obs_dims, self.hidden), n_envs, l, learn_prior=self._conditional)

    def _loss(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor, step: int,
              gen: torch.Generator) -> torch.Tensor:
        loc, scale = net.encoder(x, env)
        z = loc + scale * torch.randn(loc.shape, generator=gen)
        nll = gaussian_nll(x, net.decoder(z), net.decoder.log_scale)
        kl = gaussian_kl(loc, scale, net.prior_loc[env], net.prior_log_scale[env])
        return (nll + self.beta * kl).mean()

    def _encode(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        return net.encoder(x, env)[0]

    def __repr__(self) -> str:
        return f"{self._name}(n_latents={self.n_latents!r}, beta={self.beta!r}, random_state={self.random_state!r})"


class BetaVAE(VAE):
    """beta-VAE (Higgins et al. 2017): :class:`VAE` with the KL term weighted by ``beta = 4``.

    Parameters are those of :class:`VAE`; only the default of ``beta`` differs.
    """

    def __init__(self, n_latents: int = 3, *, num_steps: int = 6000, batch_size: int = 512,
                 learning_rate: float = 5e-3, hidden: int = 64, beta: float = 4.0, standardize: bool = True,
                 random_state: Any = None):
        super().__init__(n_latents, num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate,
                         hidden=hidden, beta=beta, standardize=standardize, random_state=random_state)


class IVAE(VAE):
    """identifiable VAE (Khemakhem et al. 2020) with a conditionally factorised Gaussian prior.

    ``p(z | u) = prod_i N(z_i; m_i(u), exp(v_i(u)))`` with ``m(u)``, ``v(u)`` learned per environment and
    an encoder ``q(z | x, u)``. Needs at least two environments (the theory asks for ``2l + 1``).

    Parameters are those of :class:`VAE` (``beta`` defaults to 1).

    Attributes
    ----------
    prior_loc_ : ndarray (E, l)
        Learned prior means per environment.
    prior_scale_ : ndarray (E, l)
        Learned prior standard deviations per environment.
    loss_, fit_seconds_, env_labels_, latent_names_, net_
        As in :class:`VAE`.
    """

    _conditional = True
    _min_envs = 2

    def _finalise(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> None:
        self.prior_loc_ = net.prior_loc.detach().numpy().astype(float)
        self.prior_scale_ = net.prior_log_scale.detach().exp().numpy().astype(float)
