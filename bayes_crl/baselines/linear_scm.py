"""``LinearLatentSCM``: the latent linear weight-variant causal model (Liu et al. 2022), a point-estimate baseline.

Generative model, in a fixed slot order (slot ``j`` may cause slot ``i`` only when ``j < i``)::

    n_i | u ~ N(mu_i(u), s_i(u)^2)                      per-environment noise mean and scale
    z = W(u)^T z + n,  W(u) strictly upper triangular   per-environment linear causal strengths
    x ~ N(f(z), diag(sigma^2))                           decoder f (three-layer leaky-ReLU MLP)

Because ``I - W(u)^T`` is unit lower triangular, ``log p(z | u) = sum_i log N(z_i - (W(u)^T z)_i; mu_i(u),
s_i(u)^2)`` exactly. The objective per row is the negative single-sample ELBO with the encoder
``q(z | x, u)`` of :class:`bayes_crl.nn.Encoder`, plus ``l1 * mean_u ||W(u)||_1`` (the paper's
``gamma * sum ||.||_1`` averaged over environments so that it does not grow with their number).

Simplifications relative to the paper: no search over the slot order (the slots are ordered as
initialised; the true latents' order is recovered only through the learned matching), and the graph is a
point estimate: ``edge_inclusion_ = 1`` where ``max_u |W[u, j, i]| > threshold``, else 0.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from bayes_crl._validation import check_scalar
from bayes_crl.baselines._base import BaselineEstimator, gaussian_nll
from bayes_crl.nn import Decoder, Encoder

__all__ = ["LinearLatentSCM"]

_LOG_2PI = math.log(2.0 * math.pi)


class _LinearSCMNet(nn.Module):
    def __init__(self, n_obs_dims: int, n_envs: int, n_latents: int, hidden: int):
        super().__init__()
        self.encoder = Encoder(n_obs_dims, n_envs, n_latents, hidden)
        self.decoder = Decoder(n_latents, n_obs_dims, hidden)
        self.weight = nn.Parameter(torch.zeros(n_envs, n_latents, n_latents))
        self.noise_loc = nn.Parameter(torch.zeros(n_envs, n_latents))
        self.noise_log_scale = nn.Parameter(torch.zeros(n_envs, n_latents))
        self.register_buffer("mask", torch.ones(n_latents, n_latents).triu(1))

    def strengths(self) -> torch.Tensor:
        """``W[u, parent, child]`` (E, l, l), strictly upper triangular."""
        return self.weight * self.mask


class LinearLatentSCM(BaselineEstimator):
    """Latent linear weight-variant causal model fitted by maximising the ELBO with an L1 penalty.

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
    l1 : float, default 0.01
        Weight of ``mean_u ||W(u)||_1`` in the loss per row.
    threshold : float, default 0.1
        An edge ``j -> i`` is kept when ``max_u |W[u, j, i]| > threshold``.
    standardize : bool, default True
        Standardise the columns of ``x`` before fitting.
    random_state : int, numpy Generator or None, default None

    Attributes
    ----------
    edge_inclusion_ : ndarray (l, l)
        0/1 point-estimate graph as floats, ``[parent, child]``.
    adjacency_ : ndarray (l, l) int
        The same graph as integers.
    edge_weight_ : ndarray (E, l, l)
        Learned strengths ``W[u, parent, child]``.
    noise_loc_, noise_scale_ : ndarray (E, l)
        Learned noise means and standard deviations per environment.
    loss_ : ndarray (num_steps,)
        Negative ELBO per row plus the penalty, at each step.
    fit_seconds_ : float
    env_labels_ : list
    latent_names_ : tuple[str, ...]
    net_ : torch.nn.Module
    """

    _min_envs = 2

    def __init__(self, n_latents: int = 3, *, num_steps: int = 6000, batch_size: int = 512,
                 learning_rate: float = 5e-3, hidden: int = 64, l1: float = 0.01, threshold: float = 0.1,
                 standardize: bool = True, random_state: Any = None):
        super().__init__(n_latents, num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate,
                         hidden=hidden, standardize=standardize, random_state=random_state)
        self.l1 = l1
        self.threshold = threshold

    def _validate_extra(self) -> None:
        check_scalar(self.l1, "l1", Real, self._name, min_val=0)
        check_scalar(self.threshold, "threshold", Real, self._name, min_val=0)

    def _build(self, n_obs_dims: int, n_envs: int) -> nn.Module:
        return _LinearSCMNet(n_obs_dims, n_envs, self.n_latents, self.hidden)

    def _loss(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor, step: int,
              gen: torch.Generator) -> torch.Tensor:
        loc, scale = net.encoder(x, env)
        z = loc + scale * torch.randn(loc.shape, generator=gen)
        w = net.strengths()
        resid = z - torch.einsum("bj,bji->bi", z, w[env])
        nll_x = gaussian_nll(x, net.decoder(z), net.decoder.log_scale)
        nll_z = gaussian_nll(resid, net.noise_loc[env], net.noise_log_scale[env])
        entropy = (torch.log(scale) + 0.5 * (1.0 + _LOG_2PI)).sum(-1)
        penalty = self.l1 * w.abs().sum((1, 2)).mean()
        return (nll_x + nll_z - entropy).mean() + penalty

    def _encode(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        return net.encoder(x, env)[0]

    def _finalise(self, net: nn.Module, x: torch.Tensor, env: torch.Tensor) -> None:
        w = net.strengths().detach().numpy().astype(np.float64)
        self.edge_weight_ = w
        self.adjacency_ = (np.abs(w).max(0) > self.threshold).astype(np.int64)
        self.edge_inclusion_ = self.adjacency_.astype(np.float64)
        self.noise_loc_ = net.noise_loc.detach().numpy().astype(np.float64)
        self.noise_scale_ = net.noise_log_scale.detach().exp().numpy().astype(np.float64)
