"""Exponential-family noise families for the latent noise ``n_i | u``.

Each family is a two-parameter exponential family whose two parameters depend on the environment
``u``. In the model they are parameterised by a location ``loc[u, i]`` (real) and a scale
``scale[u, i]`` (positive); :meth:`NoiseFamily.distribution` turns them into a
:class:`torch.distributions.Distribution` over the residual ``n_i = z_i - g_i^u(pa_i)``.

Families
--------
``"gaussian"``  : ``Normal(loc, scale)``; support R. Natural parameters ``(loc/scale^2, -1/(2 scale^2))``.
``"laplace"``   : ``Laplace(loc, scale)``; support R (a location/scale family with ``T = |n - loc|``).
``"gamma"``     : shifted Gamma, ``n = loc + G``, ``G ~ Gamma(k, rate)`` with shape ``k`` learned per latent
                  and mean/scale per environment; support ``(loc, inf)``. The residual is soft-clamped into
                  the support, so an encoder sample outside it costs a large but finite penalty.

The scale of each latent is not identified (the decoder absorbs it); the model pins it by constraining
the mean over environments of ``log scale`` to zero for every latent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributions as td
from torch.nn.functional import softplus

__all__ = ["NoiseFamily", "NOISE_FAMILIES", "get_noise_family"]


@dataclass(frozen=True)
class NoiseFamily:
    """A two-parameter noise family.

    Parameters
    ----------
    name : str
        Short name used by the estimator's ``noise=`` argument.
    support : str
        ``"real"`` or ``"positive"`` (shifted by ``loc``).
    """

    name: str
    support: str

    def distribution(self, loc: torch.Tensor, scale: torch.Tensor) -> td.Distribution:
        """Return the distribution of ``n`` with the given location and scale (same shapes)."""
        if self.name == "gaussian":
            return td.Normal(loc, scale)
        if self.name == "laplace":
            return td.Laplace(loc, scale / 2**0.5)  # same variance as Normal(loc, scale)
        raise NotImplementedError(self.name)

    def log_prob(self, resid: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                 shape: torch.Tensor | None = None) -> torch.Tensor:
        """Log-density of residuals ``resid`` (..., l) given ``loc``/``scale`` broadcastable to it."""
        if self.name == "gamma":
            k = shape if shape is not None else torch.ones_like(scale)
            rate = k.sqrt() / scale  # variance k / rate^2 = scale^2
            y = resid - loc + k.sqrt() * scale  # mean of G is k/rate = sqrt(k) scale
            y_pos = softplus(y * 20.0) / 20.0 + 1e-4
            lp = td.Gamma(k, rate).log_prob(y_pos)
            return lp - 10.0 * softplus(-y * 20.0) / 20.0
        return self.distribution(loc, scale).log_prob(resid)

    def sample(self, loc: torch.Tensor, scale: torch.Tensor, shape: torch.Tensor | None = None,
               sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draw noise with the given parameters."""
        if self.name == "gamma":
            k = shape if shape is not None else torch.ones_like(scale)
            rate = k.sqrt() / scale
            g = td.Gamma(k, rate).sample(sample_shape)
            return g + loc - k.sqrt() * scale
        return self.distribution(loc, scale).sample(sample_shape)


NOISE_FAMILIES = {
    "gaussian": NoiseFamily("gaussian", "real"),
    "laplace": NoiseFamily("laplace", "real"),
    "gamma": NoiseFamily("gamma", "positive"),
}


def get_noise_family(noise: str | NoiseFamily) -> NoiseFamily:
    """Resolve a string shorthand to a :class:`NoiseFamily`."""
    if isinstance(noise, NoiseFamily):
        return noise
    from bayes_crl._errors import BayesCRLValueError

    if noise not in NOISE_FAMILIES:
        raise BayesCRLValueError(
            f"The 'noise' parameter must be one of {set(NOISE_FAMILIES)}. Got {noise!r} instead."
        )
    return NOISE_FAMILIES[noise]
