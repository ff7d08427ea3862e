"""Guides: mean-field variational distributions for the global edge sites and the amortized encoder
for the per-observation latents.

Global sites (declared by the prior's :meth:`~bayes_crl.priors.EdgePrior.sites`):
- ``real``     -> ``Normal(loc, scale)``;
- ``positive`` -> ``LogNormal(loc, scale)`` (a Gamma/InverseGamma guide is avoided: NaN-prone);
- point sites  -> ``Delta(value)`` (MAP).
Local site ``z``: ``Normal(loc(x, u), scale(x, u))`` from the encoder, inside the minibatched ``obs`` plate.
"""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints

from bayes_crl.models import OBS_PLATE, SITE_Z, LatentCausalNet
from bayes_crl.priors import EdgePrior

__all__ = ["GlobalGuide", "latent_causal_guide"]

_INIT_POSITIVE = {"edge_tau": -2.3, "edge_lambda": 0.0, "edge_nu": 0.0}


class ShiftedNormal(TorchDistribution):
    """``z = r M`` with ``r = loc + (scale * eps) U`` (B, l), ``eps ~ Normal(0, I)``, ``U`` (B, l, l) unit upper
    triangular per row (``None``: the identity, a mean-field ``r``) and ``M`` (l, l) unit upper triangular
    (|det U| = |det M| = 1, so ``log q(z) = log Normal(eps; 0, I) - sum log scale``)."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, m, u=None, validate_args=None):
        self.base = dist.Normal(loc, scale)
        self.m = m
        self.u = u
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def rsample(self, sample_shape=torch.Size()):
        if self.u is None:
            return self.base.rsample(sample_shape) @ self.m
        w = self.base.rsample(sample_shape) - self.base.loc  # scale * eps
        r = self.base.loc + (w.unsqueeze(-2) @ self.u).squeeze(-2)
        z = r @ self.m
        self._cache = (z, w)  # log_prob of this draw needs no triangular solves
        return z

    def log_prob(self, z):
        cache = getattr(self, "_cache", None)
        if cache is not None and cache[0] is z:
            return self.base.log_prob(self.base.loc + cache[1]).sum(-1)
        flat = z.reshape(-1, z.shape[-1])
        r = torch.linalg.solve_triangular(self.m, flat, upper=True, left=False).reshape(z.shape)
        if self.u is None:
            return self.base.log_prob(r).sum(-1)
        d = (r - self.base.loc).unsqueeze(-2)
        w = torch.linalg.solve_triangular(self.u, d, upper=True, left=False, unitriangular=True).squeeze(-2)
        return self.base.log_prob(self.base.loc + w).sum(-1)


class GlobalGuide(nn.Module):
    """Variational parameters of the prior's global sites, for ``n_envs`` environments and ``n_latents``."""

    def __init__(self, prior: EdgePrior, n_envs: int, n_latents: int):
        super().__init__()
        self.prior = prior
        self.specs = prior.sites(n_envs, n_latents)
        self.n_envs = n_envs
        for s in self.specs:
            if s.point:
                self.register_parameter(f"{s.name}__value", nn.Parameter(torch.zeros(s.shape)))
            else:
                init = _INIT_POSITIVE.get(s.name, 0.0)
                self.register_parameter(f"{s.name}__loc", nn.Parameter(torch.full(s.shape, init)))
                self.register_parameter(f"{s.name}__log_scale", nn.Parameter(torch.full(s.shape, -3.0)))

    def _dist(self, s, mask: torch.Tensor | None = None):
        if s.point:
            d = dist.Delta(getattr(self, f"{s.name}__value"))
        else:
            loc, ls = getattr(self, f"{s.name}__loc"), getattr(self, f"{s.name}__log_scale")
            base = dist.LogNormal if s.support == "positive" else dist.Normal
            d = base(loc, ls.exp())
        if mask is not None and s.masked:
            d = d.mask(mask.expand(s.shape).bool())
        return d.to_event(len(s.shape))

    def forward(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sample every global site (inside the caller's Pyro context); returns the draws."""
        return {s.name: pyro.sample(s.name, self._dist(s, mask)) for s in self.specs}

    @torch.no_grad()
    def reset(self) -> None:
        """Return all variational parameters to their initial values (after a change of slot order)."""
        for s in self.specs:
            if s.point:
                getattr(self, f"{s.name}__value").zero_()
            else:
                getattr(self, f"{s.name}__loc").fill_(_INIT_POSITIVE.get(s.name, 0.0))
                getattr(self, f"{s.name}__log_scale").fill_(-3.0)

    @torch.no_grad()
    def init_from_weights(self, w: torch.Tensor) -> None:
        """Start the variational posterior at strengths ``w`` (E, l, l) (e.g. least squares on warm-up latents):
        ``edge_weight`` centred on ``w``; horseshoe edge scales set so that ``tau * lambda`` matches the
        root-mean-square strength of each edge."""
        self.reset()
        for s in self.specs:
            if s.name == "edge_weight":
                getattr(self, "edge_weight__value" if s.point else "edge_weight__loc").copy_(w)
            elif s.name == "edge_lambda":
                tau = math.exp(_INIT_POSITIVE["edge_tau"])
                rms = w.pow(2).mean(0).sqrt().clamp(min=1e-3)
                getattr(self, "edge_lambda__loc").copy_(torch.log(rms / tau))

    @torch.no_grad()
    def draws(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draws from the variational posterior outside Pyro: dict of (S, *shape) tensors."""
        out = {}
        for s in self.specs:
            d = self._dist(s)
            if s.point:
                out[s.name] = d.base_dist.v.expand(num_samples, *s.shape).clone()
            else:
                out[s.name] = d.sample((num_samples,))
        return out


def latent_causal_guide(x: torch.Tensor, env: torch.Tensor, *, net: LatentCausalNet, global_guide: GlobalGuide,
                        n_total: int | None = None, subsample: torch.Tensor | None = None, **_) -> torch.Tensor:
    """Guide matching :func:`~bayes_crl.models.latent_causal_model` (same arguments plus ``global_guide``)."""
    global_guide(net.mask)
    b = env.shape[0]
    n_total = b if n_total is None else n_total
    rows = subsample if subsample is not None else torch.arange(b, device=env.device)
    with pyro.plate(OBS_PLATE, n_total, subsample=rows):
        loc, scale, u = net.encoder.forward_full(x, env)
        return pyro.sample(SITE_Z, ShiftedNormal(loc, scale, net.shift_matrix(), u))
