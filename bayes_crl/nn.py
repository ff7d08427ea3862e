"""Neural networks: encoder ``q(z | x, u)``, decoder ``f(z)``, per-edge mechanism features ``phi_ji``.

All are plain ``torch.nn.Module`` s so they can be used outside Pyro.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["mlp", "Encoder", "Decoder", "EdgeFeatures"]


def mlp(n_in: int, n_out: int, hidden: int, n_layers: int, slope: float = 0.2) -> nn.Sequential:
    """Fully connected net with ``n_layers`` linear layers and leaky-ReLU between them."""
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(n_layers - 1):
        layers += [nn.Linear(d, hidden), nn.LeakyReLU(slope)]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Amortized Gaussian encoder ``q(z | x, u)``.

    ``forward(x (B, d), env (B,) int) -> (loc (B, l), scale (B, l))``.
    """

    def __init__(self, n_obs_dims: int, n_envs: int, n_latents: int, hidden: int = 64, n_layers: int = 3,
                 use_env: bool = True, full_cov: bool = False):
        super().__init__()
        self.n_envs = n_envs
        self.use_env = use_env
        self.net = mlp(n_obs_dims + (n_envs if use_env else 0), 2 * n_latents, hidden, n_layers)
        self.full_cov = full_cov
        if full_cov:
            # per-row strictly upper-triangular entries of a unit triangular factor U(x, u); zero = mean-field
            self.tril = nn.Linear(hidden if n_layers > 1 else n_obs_dims + (n_envs if use_env else 0),
                                  n_latents * (n_latents - 1) // 2)
            nn.init.zeros_(self.tril.weight)
            nn.init.zeros_(self.tril.bias)

    def _input(self, x: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        if not self.use_env:
            return x
        return torch.cat([x, nn.functional.one_hot(env, self.n_envs).to(x.dtype)], -1)

    def forward(self, x: torch.Tensor, env: torch.Tensor):
        loc, raw = self.net(self._input(x, env)).chunk(2, -1)
        return loc, nn.functional.softplus(raw - 2.0) + 1e-4

    def forward_full(self, x: torch.Tensor, env: torch.Tensor):
        """``(loc (B, l), scale (B, l), u (B, l, l) or None)``: ``r = loc + (scale * eps) @ u``, ``u`` unit upper
        triangular per row (``None`` for the mean-field encoder)."""
        if not self.full_cov:
            loc, scale = self.forward(x, env)
            return loc, scale, None
        h = self.net[:-1](self._input(x, env))
        loc, raw = self.net[-1](h).chunk(2, -1)
        l = loc.shape[-1]
        scatter, eye = self._triu_scatter(l, loc.dtype, loc.device)
        u = (self.tril(h) @ scatter + eye).unflatten(-1, (l, l))  # one matmul: cheaper than an indexed write
        return loc, nn.functional.softplus(raw - 2.0) + 1e-4, u

    @staticmethod
    @functools.lru_cache(maxsize=8)  # built once per (l, dtype, device), not on every forward pass
    def _triu_scatter(l: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S (l(l-1)/2, l*l), I (l*l,))``: ``t @ S + I`` puts the entries ``t`` above the diagonal of an
        identity, row by row (the order of ``torch.triu_indices``)."""
        iu = torch.triu_indices(l, l, 1)
        scatter = torch.zeros(iu.shape[1], l * l, dtype=dtype, device=device)
        scatter[torch.arange(iu.shape[1]), iu[0] * l + iu[1]] = 1.0
        return scatter, torch.eye(l, dtype=dtype, device=device).flatten()

    @torch.no_grad()
    def reset_full_cov(self) -> None:
        """Back to a mean-field posterior (after a change of latent coordinates the factor no longer fits)."""
        if self.full_cov:
            self.tril.weight.zero_()
            self.tril.bias.zero_()

    @torch.no_grad()
    def permute_latents(self, perm: torch.Tensor) -> None:
        """Reorder latent slots: new slot ``k`` is old slot ``perm[k]``."""
        last = self.net[-1]
        l = last.out_features // 2
        idx = torch.cat([perm, perm + l])
        last.weight.copy_(last.weight[idx])
        last.bias.copy_(last.bias[idx])
        self.reset_full_cov()


class Decoder(nn.Module):
    """Mixing ``f(z)``: ``forward(z (..., l)) -> (..., d)``; ``log_scale`` (d,) is the observation noise."""

    def __init__(self, n_latents: int, n_obs_dims: int, hidden: int = 64, n_layers: int = 3):
        super().__init__()
        self.net = mlp(n_latents, n_obs_dims, hidden, n_layers)
        self.log_scale = nn.Parameter(torch.full((n_obs_dims,), -1.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def permute_latents(self, perm: torch.Tensor) -> None:
        first = self.net[0]
        first.weight.copy_(first.weight[:, perm])


class EdgeFeatures(nn.Module):
    """Per-edge mechanism features ``phi_ji(z_j) = z_j + sum_h v[j,i,h] tanh(a[j,i,h] z_j + b[j,i,h])``.

    Shared by all environments; the environment enters through the scalar strength ``W[u, j, i]``, so
    ``g_i^u(z) = sum_j W[u, j, i] phi_ji(z_j)``. With ``nonlinear=False`` the features are the identity
    (a latent linear, weight-variant model).

    ``forward(z (..., l)) -> (..., l, l)`` with ``out[..., j, i] = phi_ji(z_j)``.
    """

    def __init__(self, n_latents: int, n_hidden: int = 8, nonlinear: bool = True):
        super().__init__()
        self.nonlinear = nonlinear
        l = n_latents
        self.a = nn.Parameter(torch.randn(l, l, n_hidden))
        self.b = nn.Parameter(torch.randn(l, l, n_hidden))
        self.v = nn.Parameter(torch.zeros(l, l, n_hidden))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zj = z.unsqueeze(-1).expand(*z.shape, z.shape[-1])  # (..., l_j, l_i)
        if not self.nonlinear:
            return zj
        h = torch.tanh(zj.unsqueeze(-1) * self.a + self.b)
        return zj + (h * self.v).sum(-1)

    @torch.no_grad()
    def reset(self) -> None:
        self.a.normal_()
        self.b.normal_()
        self.v.zero_()
