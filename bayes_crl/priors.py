"""Sparsity priors on the latent edge strengths ``W[u, parent, child]``.

Granularity
-----------
The theory is about influences that vanish in *some* environments, so every prior here acts at two
levels: an **edge level** (is there an edge ``parent -> child`` at all, shared by all environments) and an
**environment level** (per-environment strengths ``W[u, j, i]``, free to be zero in some environments).

Each prior is a frozen dataclass that
- declares the global sample sites it adds to the model (:meth:`sites`, with shapes and supports),
- draws them inside the Pyro model and returns ``W`` of shape ``(E, l, l)`` (:meth:`sample`),
- turns posterior draws of its sites into edge inclusion probabilities (:meth:`inclusion`), by the
  definition stated in its docstring.

Site names (part of the API): ``edge_tau``, ``edge_lambda``, ``edge_nu`` (horseshoe with ``env_scales=True``),
``edge_weight``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bayes_crl._errors import BayesCRLValueError

__all__ = [
    "EdgePrior", "Horseshoe", "SpikeAndSlab", "LaplacePrior", "FlatPrior", "get_prior", "PRIORS",
    "SiteSpec", "MIN_EFFECT",
]


@dataclass(frozen=True)
class SiteSpec:
    """A global sample site: ``name``, ``shape`` given (E, l), ``support`` in {"real", "positive"},
    whether its entries are edge-masked, and whether the guide is a point mass."""

    name: str
    shape: tuple
    support: str
    masked: bool
    point: bool = False


MIN_EFFECT = 0.03
"""Default share of a child's within-environment variance below which an edge counts as absent (horseshoe,
Laplace and flat priors; see :class:`Horseshoe`)."""


def edge_effect(w: torch.Tensor, snr_env: torch.Tensor, env_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the child's within-environment variance that the edge explains, pooled over environments.

    ``effect[j, i] = R / (1 + R)`` with ``R = sum_u p[u, i] W[u, j, i]^2 snr[u, j, i]``: the edge's explained
    variance summed over environments relative to the child's noise variance summed over environments, when
    ``env_weight`` ``p[u, i]`` is proportional to ``n_u scale_i(u)^2`` (rows times the child's noise variance,
    normalised over ``u``; :func:`bayes_crl.posterior.inclusion_context` provides it). Without ``env_weight``
    the environments weigh equally.

    Why pooled rather than a mean of per-environment shares: the noise scales differ by a factor of 30 or more
    across environments in the paper's setting, and in an environment where the child's noise is tiny a leak
    of a few per cent of a parent into the estimated child (latents are recovered up to correlations of
    0.95-0.99, not exactly) explains most of that environment's variance. A per-environment share let such
    environments create edges between independent latents (measured on the null benchmark, BENCHMARKS.md);
    pooling weighs each environment by the variance it actually contributes.
    ``w`` (..., E, l, l), ``snr_env`` (E, l, l), ``env_weight`` (E, l) or one per draw (S, E, l) ->
    (..., l, l).
    """
    r = w**2 * snr_env
    if env_weight is None:
        big_r = r.mean(-3)
    else:
        big_r = (r * env_weight.unsqueeze(-2)).sum(-3)
    return big_r / (1.0 + big_r)


class EdgePrior:
    """Base class of edge priors."""

    name: ClassVar[str] = "base"
    point_estimate: ClassVar[bool] = False
    exact_inclusion: ClassVar[bool] = False
    """True where :meth:`inclusion` is an exact posterior computed from the latents' statistics (the inclusion
    context's ``parent_stats``) rather than a mean over draws of the global sites."""

    def sites(self, n_envs: int, n_latents: int) -> list[SiteSpec]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n_envs: int, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def indicators(self, draws: dict[str, torch.Tensor], context: dict) -> torch.Tensor:  # pragma: no cover
        """Per-draw edge indicators (S, l, l) bool, by the prior's definition of an included edge."""
        raise NotImplementedError

    def inclusion(self, draws: dict[str, torch.Tensor], context: dict) -> torch.Tensor:
        """Edge inclusion probabilities (l, l): the mean over draws of :meth:`indicators`."""
        return self.indicators(draws, context).to(torch.get_default_dtype()).mean(0)

    def weights(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Effective strengths ``W`` (S, E, l, l) from draws of the prior's sites."""
        return draws["edge_weight"]


@dataclass(frozen=True)
class Horseshoe(EdgePrior):
    """Regularised horseshoe (Piironen & Vehtari 2017) at edge level: one local scale per edge, shared by the
    per-environment strengths (a *group* horseshoe over environments); optionally a half-Cauchy scale per
    environment as well.

    ``edge_tau ~ HalfCauchy(global_scale)``, ``edge_lambda[j, i] ~ HalfCauchy(1)``,
    ``edge_weight[u, j, i] ~ Normal(0, tau * lam_reg[j, i])`` with ``lam_reg^2 = c^2 lam^2 / (c^2 + tau^2 lam^2)``
    and slab scale ``c = slab_scale``. With ``env_scales=True`` there is also
    ``edge_nu[u, j, i] ~ HalfCauchy(1)`` and the scale of ``edge_weight[u, j, i]`` is ``tau * lam_reg * nu``.

    Which representative of the flat direction ``z_i -> z_i - c phi_ji(z_j)`` this prior picks
    ---------------------------------------------------------------------------------------------
    The likelihood cannot tell ``z_i`` from ``z_i - c phi_ji(z_j)`` (the strengths become ``W[u, j, i] - c``,
    and they still vanish in some environment when ``c`` is one of the strengths), so the prior decides ``c``.
    Given the edge scale, the default prior is Gaussian in the strengths across environments, so it picks the
    ``c`` that minimises ``sum_u (W[u, j, i] - c)^2``: the representative whose strengths are centred on zero.
    Per-environment scales (``env_scales=True``, like an L1 penalty, which picks the median) reward single
    strengths at zero instead and leave ``c`` nearly free between the central strengths. With strengths that
    take both signs across environments the centred choice is within a few per cent of the truth; measured on
    the simulator with the true latents (``benchmarks/identification.py --oracle``): correlation of the
    sink with the truth at least 0.978 (centred) against 0.880 (median) over 20 chains. Where the strengths
    keep one sign in every environment no convention finds ``c``: the data do not determine it (the child is
    then recovered with a correlation of about 0.92 whichever convention is used, same benchmark).

    Inclusion probability: the posterior probability that the edge carries a non-negligible effect,
    ``P_q(effect[j, i] >= min_effect)`` with ``effect`` the share of the child's within-environment variance the
    edge explains, pooled over environments (:func:`edge_effect`; ``snr[u, j, i] = Var(phi_ji(z_j) | u) / scale_i(u)^2``).
    ``min_effect`` (default :data:`MIN_EFFECT` = 0.03) sets what "negligible" means: latents estimated with a
    correlation of 0.95-0.98 to the truth leave spurious effects of a few per cent (measured, see
    BENCHMARKS.md). On 35 saved benchmark fits, 0.03 separated true from false edges better than 0.05 (pooled
    edge AUROC 0.960 against 0.948 on the identifiable settings, 0.913 against 0.854 on the violated node, 0.826
    against 0.763 on other generators) and kept the null fits at 0; 0.02 was worse on the identifiable settings
    and 0.01 put an edge into a null fit. The
    horseshoe's shrinkage factors themselves are returned by :meth:`shrinkage`.
    """

    global_scale: float = 0.1
    slab_scale: float = 3.0
    env_scales: bool = False
    name: ClassVar[str] = "horseshoe"

    def sites(self, n_envs, n_latents):
        l, e = n_latents, n_envs
        nu = [SiteSpec("edge_nu", (e, l, l), "positive", True)] if self.env_scales else []
        return [SiteSpec("edge_tau", (), "positive", False), SiteSpec("edge_lambda", (l, l), "positive", True),
                *nu, SiteSpec("edge_weight", (e, l, l), "real", True)]

    def _lam_reg(self, tau, lam):
        c2 = self.slab_scale**2
        return torch.sqrt(c2 * lam**2 / (c2 + tau.unsqueeze(-1).unsqueeze(-1) ** 2 * lam**2))

    def sample(self, n_envs, mask):
        l = mask.shape[0]
        tau = pyro.sample("edge_tau", dist.HalfCauchy(torch.tensor(self.global_scale, device=mask.device)))
        m2, m3 = mask.bool(), mask.expand(n_envs, l, l).bool()
        lam = pyro.sample("edge_lambda", dist.HalfCauchy(torch.ones(l, l, device=mask.device)).mask(m2).to_event(2))
        scale = (tau * self._lam_reg(tau, lam)).expand(n_envs, l, l)
        if self.env_scales:
            nu = dist.HalfCauchy(torch.ones(n_envs, l, l, device=mask.device)).mask(m3).to_event(3)
            scale = scale * pyro.sample("edge_nu", nu)
        w = pyro.sample("edge_weight", dist.Normal(torch.zeros_like(scale), scale).mask(m3).to_event(3))
        return w * mask

    min_effect: float = MIN_EFFECT

    def indicators(self, draws, context):
        return edge_effect(self.weights(draws), context["snr_env"], context.get("env_weight")) >= self.min_effect

    def shrinkage(self, draws, context):
        """Posterior mean edge-level shrinkage factor ``kappa = 1 / (1 + n_u tau^2 lam_reg^2 snr)`` (l, l)."""
        tau, lam = draws["edge_tau"], draws["edge_lambda"]
        lam_reg = self._lam_reg(tau, lam)
        return (1.0 / (1.0 + context["n_per_env"] * (tau[..., None, None] * lam_reg) ** 2 * context["snr"])).mean(0)


@dataclass(frozen=True)
class SpikeAndSlab(EdgePrior):
    """Spike-and-slab: a discrete indicator per edge, shared by all environments, with per-environment
    strengths that exist only when the edge is on.

    ``gamma[j, i] ~ Bernoulli(prior_inclusion)``; the standardised strengths
    ``W[u, j, i] sd_u(phi_ji) / scale_i(u)`` are ``Normal(0, slab_scale^2)`` where ``gamma[j, i] = 1`` and
    ``Normal(0, spike_scale^2)`` where it is 0, independently per environment (:mod:`bayes_crl.parent_sets` states
    the full conjugate model). ``spike_scale`` is how large a standardised strength still counts as no edge: an
    effect of a tenth of the child's noise standard deviation per standard deviation of the parent (default)
    is what recovered latents leak into their neighbours (on a chain fit with latents at correlations
    0.987-0.995 a point-mass spike, ``spike_scale=0``, gave a false edge probability 1; BENCHMARKS.md,
    "Edge posterior").

    The indicators are integrated out exactly. During the fit the model carries the slab,
    ``edge_weight[u, j, i] ~ Normal(0, slab_scale)`` on the (standardised) latents, with a Gaussian guide; the
    reported inclusion probability is the *exact* posterior ``P(gamma[j, i] = 1 | z)``: Bayesian model averaging
    over every parent set of every child (:func:`bayes_crl.parent_sets.edge_marginals`; for a child with more
    than 12 candidate parents, the variational posterior of
    :func:`bayes_crl.parent_sets.variational_inclusion`), from the
    within-environment statistics of latents drawn from ``q(z | x, u)``, averaged over those draws and over the
    causal-order draws of the inclusion context. Each draw of the edge indicators is a graph drawn from that
    posterior (:func:`bayes_crl.parent_sets.sample_parent_sets`). The probabilities are calibrated for data
    drawn from the prior (BENCHMARKS.md, "Edge posterior: calibration").
    """

    prior_inclusion: float = 0.3
    slab_scale: float = 1.0
    spike_scale: float = 0.1
    name: ClassVar[str] = "spike_slab"
    exact_inclusion: ClassVar[bool] = True

    def __post_init__(self):
        if not (isinstance(self.prior_inclusion, (int, float)) and 0.0 < self.prior_inclusion < 1.0):
            raise BayesCRLValueError("The 'prior_inclusion' parameter of SpikeAndSlab must be a float in (0, 1). "
                                     f"Got {self.prior_inclusion!r} instead.")
        if not (isinstance(self.slab_scale, (int, float)) and 0.0 < self.slab_scale < float("inf")):
            raise BayesCRLValueError("The 'slab_scale' parameter of SpikeAndSlab must be a positive finite float. "
                                     f"Got {self.slab_scale!r} instead.")
        if not (isinstance(self.spike_scale, (int, float)) and 0.0 <= self.spike_scale < self.slab_scale):
            raise BayesCRLValueError("The 'spike_scale' parameter of SpikeAndSlab must be a float in [0, slab_scale) "
                                     f"= [0, {self.slab_scale}). Got {self.spike_scale!r} instead.")

    def sites(self, n_envs, n_latents):
        return [SiteSpec("edge_weight", (n_envs, n_latents, n_latents), "real", True)]

    def sample(self, n_envs, mask):
        l = mask.shape[0]
        m3 = mask.expand(n_envs, l, l).bool()
        slab = dist.Normal(torch.zeros(n_envs, l, l, device=mask.device), self.slab_scale)
        w = pyro.sample("edge_weight", slab.mask(m3).to_event(3))
        return w * mask

    def indicators(self, draws, context):
        """Edge indicators drawn from the exact posterior over parent sets (S, l, l); needs the inclusion
        context's ``parent_stats`` (:func:`bayes_crl.posterior.inclusion_context`)."""
        from bayes_crl.parent_sets import sample_parent_sets

        n = next(iter(draws.values())).shape[0]
        return torch.as_tensor(_exact_draws(self, context, n, sample_parent_sets))

    def inclusion(self, draws, context):
        """Exact edge marginals (l, l), averaged over the latent draws and orders of ``context``."""
        from bayes_crl.parent_sets import edge_marginals

        stats, counts = context["parent_stats"], context["parent_counts"]
        orders = _context_orders(context, stats.shape[-3])
        p = [edge_marginals(stats[k].numpy(), counts[k].numpy(), orders, prior_inclusion=self.prior_inclusion,
                            slab_scale=self.slab_scale, spike_scale=self.spike_scale) for k in range(stats.shape[0])]
        return torch.as_tensor(np.mean(p, 0), dtype=torch.get_default_dtype())


def _context_orders(context: dict, l: int) -> np.ndarray:
    if "order_draws" in context:
        return np.asarray(context["order_draws"])
    return np.arange(l)[None]


def _exact_draws(prior: "SpikeAndSlab", context: dict, num_samples: int, sampler) -> np.ndarray:
    """``num_samples`` graphs: draw ``s`` uses latent draw ``s mod K`` and order ``s mod B`` of ``context``."""
    stats, counts = context["parent_stats"], context["parent_counts"]
    k = stats.shape[0]
    orders = _context_orders(context, stats.shape[-3])
    out = np.zeros((num_samples, stats.shape[-3], stats.shape[-3]), dtype=bool)
    rng = np.random.default_rng(int(context.get("seed", 0)))
    for r in range(k):
        idx = np.arange(r, num_samples, k)
        if len(idx):
            out[idx] = sampler(stats[r].numpy(), counts[r].numpy(), orders, len(idx),
                               prior_inclusion=prior.prior_inclusion, slab_scale=prior.slab_scale,
                               spike_scale=prior.spike_scale, rng=rng,
                               order_index=lambda s, idx=idx: int(idx[s] % len(orders)))
    return out


@dataclass(frozen=True)
class LaplacePrior(EdgePrior):
    """The paper's L1 penalty as a prior: ``edge_weight[u, j, i] ~ Laplace(0, scale)``, fitted with a
    point-mass (MAP) guide, which is exactly the point-estimate method of Liu et al. (ELBO - gamma ||m||_1,
    gamma = 1/scale).

    Inclusion "probability": 1 if the point estimate's :func:`edge_effect` reaches ``min_effect`` (as for the
    horseshoe), else 0. A point estimate carries no uncertainty.
    """

    scale: float = 0.5
    min_effect: float = MIN_EFFECT
    name: ClassVar[str] = "laplace"
    point_estimate: ClassVar[bool] = True

    def sites(self, n_envs, n_latents):
        return [SiteSpec("edge_weight", (n_envs, n_latents, n_latents), "real", True, point=True)]

    def _dist(self, n_envs, l, device=None):
        return dist.Laplace(torch.zeros(n_envs, l, l, device=device), self.scale)

    def sample(self, n_envs, mask):
        l = mask.shape[0]
        m3 = mask.expand(n_envs, l, l).bool()
        w = pyro.sample("edge_weight", self._dist(n_envs, l, mask.device).mask(m3).to_event(3))
        return w * mask

    def indicators(self, draws, context):
        return edge_effect(draws["edge_weight"], context["snr_env"], context.get("env_weight")) >= self.min_effect


@dataclass(frozen=True)
class FlatPrior(LaplacePrior):
    """No sparsity: ``edge_weight ~ Normal(0, 10)`` with a point-mass guide (maximum likelihood, in
    effect). Inclusion as for :class:`LaplacePrior` (thresholded point estimate)."""

    scale: float = 10.0
    name: ClassVar[str] = "none"

    def _dist(self, n_envs, l, device=None):
        return dist.Normal(torch.zeros(n_envs, l, l, device=device), self.scale)


PRIORS = {"horseshoe": Horseshoe, "spike_slab": SpikeAndSlab, "laplace": LaplacePrior, "none": FlatPrior}


def get_prior(prior: str | EdgePrior) -> EdgePrior:
    """Resolve a string shorthand (``"horseshoe"``, ``"spike_slab"``, ``"laplace"``, ``"none"``) to a prior."""
    if isinstance(prior, EdgePrior):
        return prior
    if not isinstance(prior, str) or prior not in PRIORS:
        raise BayesCRLValueError(
            f"The 'edge_prior' parameter must be one of {sorted(PRIORS)} or an EdgePrior instance. "
            f"Got {prior!r} instead."
        )
    return PRIORS[prior]()
