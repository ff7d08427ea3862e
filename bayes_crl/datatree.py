"""A fitted :class:`~bayes_crl.LatentCausalModel` as an ArviZ ``DataTree`` (named dims and coords).

ArviZ has no converter for Pyro's SVI, so :func:`to_datatree` builds the tree with
:func:`arviz_base.from_dict` from draws of the variational posterior of the global edge variables
(one chain). ArviZ is imported lazily (about a second of imports) and only the DataTree API shared by
arviz-base 0.8 and 1.x is used.

Groups, variables and dims
--------------------------
``posterior`` (dims ``chain`` = 1, ``draw`` = ``num_samples``)
    - the prior's global sites, e.g. for the horseshoe ``edge_tau ()``, ``edge_lambda (parent, child)``,
      ``edge_weight (env, parent, child)`` (and ``edge_nu (env, parent, child)`` with ``env_scales=True``); for
      the spike-and-slab ``edge_weight``. Entries the learned causal order rules out (``parent`` not before
      ``child``) do not enter the model and are ``nan``.
    - ``weight (env, parent, child)``: effective strengths ``W[u, j, i]`` (``nan`` where the order rules
      the edge out; the model's strength there is 0 by construction);
    - ``edge_indicator (parent, child)``: per-draw edge indicator, 1.0 where the draw's graph holds the edge,
      else 0.0 (``nan`` on the diagonal; for a model fitted with ``n_order_draws=0``, ``nan`` where the fitted
      order rules the edge out); :func:`bayes_crl.posterior.edge_indicator_draws`. For the spike-and-slab each
      draw is a graph drawn from the exact posterior over parent sets (the discrete indicators themselves); for
      the horseshoe, Laplace and flat priors it is the prior's threshold rule (effect >= ``min_effect``) applied
      to one draw of the strengths, oriented by the environment-bootstrap order paired with the draw. Its mean
      over draws is the posterior inclusion probability (``edge_inclusion_``, up to Monte Carlo error for the
      spike-and-slab, whose ``edge_inclusion_`` is exact). The rule needs statistics of the latents; see
      :func:`to_datatree` for where they come from.
    - ``noise_loc``, ``noise_scale (env, latent)``: per-environment noise parameters. They are point
      estimates (empirical Bayes), stored constant over draws.
``sample_stats`` (``chain``, ``draw``)
    ``log_q``: log density of each draw under the variational posterior; ``log_prior``: log prior
    density of the draw. With the log-likelihood they give the inputs of
    :func:`arviz_stats.loo_approximate_posterior` (see :func:`to_datatree`).
``observed_data`` (only with ``x``)
    ``x (obs, obs_dim)``, in the user's units.
``constant_data`` (only with ``x``)
    ``env_label (obs)``: the environment label of each row (as in the ``env`` coordinate).
``log_likelihood`` (only with ``x``; ``chain`` = 1, ``draw`` = the first ``num_log_lik_draws`` draws)
    ``x (obs)``: importance-weighted estimate of ``log p(x_n | globals_s, u_n)``, see :func:`to_datatree`.
``fit``
    ``loss (step)``: negative ELBO per row along the fit (``nan`` for rejected steps); attributes hold
    fit metadata (prior, noise family, causal order, rejected steps).

Coordinates: ``parent``, ``child``, ``latent`` = ``model.latent_names_``; ``env`` = ``model.env_labels_``
(kept numeric when every label is a number, otherwise converted to strings such as ``"day 3"``);
``obs`` = ``0..N-1``; ``obs_dim`` = column names of a DataFrame ``x``, else ``0..d-1``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
import xarray as xr

from bayes_crl._validation import BayesCRLValueError, check_scalar
from bayes_crl.posterior import edge_indicator_draws, inclusion_context, posterior_draws

if TYPE_CHECKING:  # pragma: no cover
    from bayes_crl.estimator import LatentCausalModel

__all__ = ["to_datatree", "edge_summary", "env_coords"]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _check_fitted(model: Any, owner: str) -> None:
    if not hasattr(model, "result_"):
        raise BayesCRLValueError(
            f"The 'model' argument of {owner} must be a fitted LatentCausalModel. Call 'fit' with appropriate "
            "arguments first.")


def env_coords(labels: Sequence[Hashable]) -> np.ndarray:
    """Coordinate values for the ``env`` dim from the user's environment labels.

    Parameters
    ----------
    labels : sequence of hashable, length E

    Returns
    -------
    ndarray (E,)
        The labels themselves when every one is a real number (bools excluded), otherwise their ``str``
        (``repr`` if two labels share a ``str``, e.g. ``1`` and ``"1"``).
    """
    labels = list(labels)
    if labels and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in labels):
        return np.asarray(labels)
    out = [str(v) for v in labels]
    if len(set(out)) < len(out):
        out = [repr(v) for v in labels]
    return np.asarray(out, dtype=object).astype(str)


def _site_dims(shape: tuple, n_envs: int, n_latents: int) -> list[str] | None:
    """Dims of a global site from its shape (without the sample axis); ``None`` to let ArviZ name them."""
    if shape == (n_envs, n_latents, n_latents):
        return ["env", "parent", "child"]
    if shape == (n_latents, n_latents):
        return ["parent", "child"]
    if shape == ():
        return []
    if shape == (n_latents,):
        return ["latent"]
    if shape == (n_envs, n_latents):
        return ["env", "latent"]
    return None


@torch.no_grad()
def _simulated_context(model: Any, num_per_env: int, seed: int) -> dict:
    """The priors' signal-to-noise context computed from latents simulated from the fitted model.

    ``z`` is drawn per environment from the latent ANM with the posterior-mean strengths
    ``edge_weight_`` and the fitted noise parameters, instead of encoding observed data.
    """
    from bayes_crl.models import LatentANM

    net, noise = model.result_.net, model.result_.noise
    e, l = net.n_envs, net.n_latents
    w = torch.as_tensor(model.edge_weight_, dtype=torch.float32)
    shape = net.noise_shape() if noise.name == "gamma" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        env = torch.arange(e).repeat_interleave(num_per_env)
        z = LatentANM(w[env], net.noise_loc[env], net.noise_scale()[env], net.features, noise, shape).sample()
    feats = net.features(z).reshape(e, num_per_env, l, l)
    scale2 = net.noise_scale() ** 2
    snr_env = feats.var(1, unbiased=False) / scale2[:, None, :]
    ctx = {"n_per_env": float(num_per_env), "snr": snr_env.mean(0), "snr_env": snr_env,
           "env_weight": scale2 / scale2.sum(0, keepdim=True)}
    if getattr(model.result_.prior, "exact_inclusion", False):
        from bayes_crl.parent_sets import child_statistics

        st, cnt = child_statistics(feats.reshape(e * num_per_env, l, l).double().numpy(), z.double().numpy(),
                                   env.numpy(), e)
        ctx["parent_stats"], ctx["parent_counts"] = torch.as_tensor(st)[None], torch.as_tensor(cnt)[None]
    return ctx


@torch.no_grad()
def _log_prior_and_q(result, draws: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Log prior and log variational density (S,) of each draw of the global sites."""
    prior, gg, mask, e = result.prior, result.global_guide, result.net.mask, result.net.n_envs
    s = next(iter(draws.values())).shape[0]
    # the guide's sites are independent and fully event-shaped: one vectorised trace under a plate of draws
    with pyro.plate("draws", s, dim=-1):
        tr_q = pyro.poutine.trace(pyro.poutine.condition(gg, data=draws)).get_trace(mask)
    tr_q.compute_log_prob()
    lq = sum(site["log_prob"] for site in tr_q.nodes.values() if site["type"] == "sample")
    lq = np.broadcast_to(torch.as_tensor(lq).numpy(), (s,)).astype(np.float64)
    # the priors' hierarchies do not broadcast over a draw axis: one trace per draw
    lp = np.empty(s)
    for t in range(s):
        one = {k: v[t] for k, v in draws.items()}
        lp[t] = float(pyro.poutine.trace(pyro.poutine.condition(prior.sample, data=one)).get_trace(e, mask)
                      .log_prob_sum())
    return lp, lq


@torch.no_grad()
def _log_likelihood(net, noise, weights: torch.Tensor, x: torch.Tensor, env: torch.Tensor,
                    num_encoder_samples: int, generator: torch.Generator, draw_chunk: int = 25) -> torch.Tensor:
    """Importance-weighted (IWAE) estimate of ``log p(x_n | W_s, u_n)`` for standardised ``x``.

    Parameters
    ----------
    net : LatentCausalNet
    noise : NoiseFamily
    weights : Tensor (S, E, l, l)
    x : Tensor (N, d), standardised
    env : Tensor (N,) int64
    num_encoder_samples : int
        ``K`` draws ``z_k ~ q(z | x_n, u_n)`` per row, shared by all ``S`` draws (common random numbers).

    Returns
    -------
    Tensor (S, N)
        ``logsumexp_k [log p(x_n | z_k) + log p(z_k | W_s, u_n) - log q(z_k | x_n, u_n)] - log K``.
    """
    if getattr(net, "likelihood", "normal") != "normal":
        raise NotImplementedError(f"log-likelihood for the '{net.likelihood}' observation model")
    k = num_encoder_samples
    n = x.shape[0]
    loc, scale, u = net.encoder.forward_full(x, env)  # (N, l), (N, l), (N, l, l) or None
    eps = torch.randn((k, *loc.shape), generator=generator, dtype=loc.dtype)
    w = scale * eps
    log_q = torch.distributions.Normal(loc, scale).log_prob(loc + w).sum(-1)  # (K, N); |det U| = |det M| = 1
    if u is not None:
        w = (w.unsqueeze(-2) @ u).squeeze(-2)
    r = loc + w  # (K, N, l) encoder coordinates
    z = r @ net.shift_matrix()
    f = net.decode(z)
    log_px = torch.distributions.Normal(f, net.obs_scale()).log_prob(x).sum(-1)  # (K, N)
    feats = net.features(z)  # (K, N, l, l)
    nloc, nscale = net.noise_loc[env], net.noise_scale()[env]
    shape = net.noise_shape() if noise.name == "gamma" else None
    base = log_px - log_q
    s = weights.shape[0]
    out = torch.full((s, n), float("nan"))
    for u in range(weights.shape[1]):
        rows = (env == u).nonzero().squeeze(-1)
        if rows.numel() == 0:
            continue
        fu, zu = feats[:, rows], z[:, rows]
        for s0 in range(0, s, draw_chunk):
            w = weights[s0:s0 + draw_chunk, u]  # (c, l, l)
            mech = torch.einsum("cji,knji->ckni", w, fu)
            lpz = noise.log_prob(zu - mech, nloc[rows], nscale[rows], shape).sum(-1)  # (c, K, n)
            out[s0:s0 + draw_chunk, rows] = torch.logsumexp(lpz + base[:, rows], dim=1) - math.log(k)
    return out


# ----------------------------------------------------------------------------------------------------
# public
# ----------------------------------------------------------------------------------------------------
def to_datatree(model: "LatentCausalModel", x: Any = None, env: Any = None, *, num_samples: int = 1000,
                seed: int = 0, num_log_lik_draws: int = 100, num_encoder_samples: int = 8):
    """Posterior of a fitted model as an ArviZ ``xarray.DataTree``.

    Groups, variables, dims and coords are listed in the module docstring (:mod:`bayes_crl.datatree`).

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    x : array_like (N, d), optional
        Observations. With them the tree gets ``observed_data``, ``constant_data`` and
        ``log_likelihood`` groups.
    env : array_like (N,), optional
        Environment label of each row of ``x`` (labels seen in ``fit``). Required with ``x``.
    num_samples : int, default 1000
        Draws of the global edge variables (the ``draw`` dim of ``posterior`` and ``sample_stats``).
    seed : int, default 0
        Seeds the draws and the encoder samples; same seed, same tree.
    num_log_lik_draws : int, default 100
        Number of posterior draws (the first ones; draws are i.i.d.) at which the log-likelihood is
        evaluated. The ``draw`` coordinate of ``log_likelihood`` refers to the same draws in ``posterior``.
    num_encoder_samples : int, default 8
        ``K``, encoder samples per row for the log-likelihood estimate.

    Returns
    -------
    xarray.DataTree

    Notes
    -----
    **Log-likelihood.** The latents are integrated out by importance sampling with the amortized encoder
    as proposal: ``log p(x_n | W_s, u_n) ~ logsumexp_k [log p(x_n | z_k) + log p(z_k | W_s, u_n) -
    log q(z_k | x_n, u_n)] - log K`` with ``z_k ~ q(z | x_n, u_n)``, ``k = 1..K``. The same ``z_k`` are
    used for every draw ``s`` (common random numbers: differences between draws are not blurred by
    encoder noise). The estimate is biased low by at most the KL gap of the encoder, shrinking with ``K``.
    Values are log densities of ``x`` in the user's units (the standardisation's log-Jacobian,
    ``-sum(log x_scale_)``, is included). Cost: ``K * N`` decoder passes and ``num_log_lik_draws * K * N``
    latent-density evaluations.

    **LOO.** ``arviz_stats.loo(dt)`` runs PSIS-LOO on these values. The draws come from the variational
    posterior ``q``, not the posterior, so Pareto-k diagnostics are often high (expect warnings from a
    mean-field guide); the correction for an approximate posterior is::

        ll = dt.log_likelihood["x"]
        log_p = dt.sample_stats["log_prior"].sel(draw=ll.draw) + ll.sum("obs")
        arviz_stats.loo_approximate_posterior(dt, log_p=log_p, log_q=dt.sample_stats["log_q"].sel(draw=ll.draw))

    (``log_p`` is the unnormalised log posterior of the global variables only when ``x`` is the full
    training data.)

    **Constant variables.** ``noise_loc``, ``noise_scale`` and the ``inclusion`` of an edge whose indicator
    is the same in every draw are constant over draws, so ``arviz_stats.summary(dt)`` reports ``nan``
    diagnostics (ESS, R-hat, MCSE) for them and numpy emits ``RuntimeWarning: invalid value encountered``;
    ``summary(dt, var_names=["edge_weight", "weight", ...])`` restricts it to the random sites.

    **Inclusion context.** For priors whose inclusion rule depends on the data (horseshoe, Laplace, flat:
    an edge counts when it explains at least ``min_effect`` of the child's within-environment variance, pooled
    over environments; :func:`bayes_crl.priors.edge_effect`),
    the signal-to-noise context is taken from, in order: the context stored on the model by ``fit``
    (attribute ``_inclusion_context``, when present); ``x``/``env`` when given; latents simulated from the
    fitted model (256 per environment).
    """
    _check_fitted(model, "to_datatree")
    check_scalar(num_samples, "num_samples", numbers.Integral, "to_datatree", min_val=1)
    check_scalar(seed, "seed", numbers.Integral, "to_datatree", min_val=0)
    check_scalar(num_log_lik_draws, "num_log_lik_draws", numbers.Integral, "to_datatree", min_val=1)
    check_scalar(num_encoder_samples, "num_encoder_samples", numbers.Integral, "to_datatree", min_val=1)
    if (x is None) != (env is None):
        raise BayesCRLValueError("The 'x' and 'env' arguments of to_datatree must be given together (the "
                                 "log-likelihood of a row depends on its environment). Got only one of them.")
    from arviz_base import from_dict  # lazy: about a second of imports

    result = model.result_
    net, prior = result.net, result.prior
    e, l = net.n_envs, net.n_latents
    names = list(model.latent_names_)
    draws_np = posterior_draws(result, num_samples, seed)
    draws_t = {k: torch.as_tensor(v) for k, v in draws_np.items() if k != "weight"}
    mask = net.mask.numpy().astype(bool)

    xt = codes = None
    if x is not None:
        x_arr, codes_np, _ = model._prepare(x, env, fitting=False)
        xt, codes = model._scale(x_arr), torch.as_tensor(codes_np)

    context = getattr(model, "_inclusion_context", None)
    if context is None:
        context = inclusion_context(result, xt, codes) if xt is not None else _simulated_context(model, 256, seed)
    # the same draws as posterior_draws (same seed); with orientation draws each is paired with an order and an
    # edge may point either way, otherwise only the fitted order's edges exist
    incl = edge_indicator_draws(result, context, num_samples, seed).numpy()
    incl_mask = ~np.eye(l, dtype=bool) if "order_draws" in context else mask

    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    for spec in prior.sites(e, l):
        v = draws_np[spec.name].astype(np.float64)
        d = _site_dims(tuple(spec.shape), e, l)
        if spec.masked and d is not None and d[-2:] == ["parent", "child"]:
            v = np.where(mask, v, np.nan)
        posterior[spec.name] = v[None]
        if d is not None:
            dims[spec.name] = d
    posterior["weight"] = np.where(mask, draws_np["weight"].astype(np.float64), np.nan)[None]
    posterior["edge_indicator"] = np.where(incl_mask, incl.astype(np.float64), np.nan)[None]
    s = num_samples
    posterior["noise_loc"] = np.broadcast_to(net.noise_loc.detach().numpy().astype(np.float64), (1, s, e, l)).copy()
    posterior["noise_scale"] = np.broadcast_to(net.noise_scale().detach().numpy().astype(np.float64),
                                               (1, s, e, l)).copy()
    dims.update(weight=["env", "parent", "child"], edge_indicator=["parent", "child"], noise_loc=["env", "latent"],
                noise_scale=["env", "latent"])

    log_prior, log_q = _log_prior_and_q(result, draws_t)
    groups: dict[str, dict[str, np.ndarray]] = {
        "posterior": posterior,
        "sample_stats": {"log_prior": log_prior[None], "log_q": log_q[None]},
    }
    coords: dict[str, Any] = {"parent": names, "child": names, "latent": names,
                              "env": env_coords(model.env_labels_)}
    attrs: dict[str, dict] = {
        "posterior": {"inference_library": "pyro", "inference_method": "svi (variational posterior draws)",
                      "edge_indicator": "per-draw 0/1 edge indicator by the prior's inclusion rule"},
    }

    if xt is not None:
        x_arr = np.asarray(x_arr, dtype=np.float64)
        n, dd = x_arr.shape
        n_ll = min(num_log_lik_draws, s)
        gen = torch.Generator().manual_seed(int(seed) + 1)
        w = torch.as_tensor(draws_np["weight"][:n_ll])
        ll = _log_likelihood(net, result.noise, w, xt, codes, num_encoder_samples, gen).numpy().astype(np.float64)
        ll -= float(np.log(model.x_scale_).sum())
        groups["observed_data"] = {"x": x_arr}
        groups["constant_data"] = {"env_label": env_coords(model.env_labels_)[codes.numpy()]}
        groups["log_likelihood"] = {"x": ll[None]}
        dims.update(x=["obs", "obs_dim"], env_label=["obs"])
        coords["obs"] = np.arange(n)
        cols = getattr(x, "columns", None)
        coords["obs_dim"] = np.asarray([str(c) for c in cols]) if cols is not None and len(cols) == dd \
            else np.arange(dd)
        attrs["log_likelihood"] = {"estimator": f"importance-weighted, K={num_encoder_samples} encoder samples",
                                   "units": "log density of x in the user's units"}

    dt = from_dict(groups, dims=dims, coords=coords)
    for group, extra in attrs.items():  # set afterwards: from_dict's attrs argument differs across versions
        dt[group].attrs.update(extra)
    fit = xr.Dataset({"loss": ("step", np.asarray(model.loss_, dtype=np.float64))},
                     coords={"step": np.arange(len(model.loss_))},
                     attrs={"prior": getattr(prior, "name", type(prior).__name__), "noise": result.noise.name,
                            "order": list(map(int, result.order)), "n_rejected": int(result.n_rejected),
                            "fit_seconds": float(getattr(model, "fit_seconds_", float("nan")))})
    dt["fit"] = fit
    return dt


def edge_summary(model: "LatentCausalModel", *, prob: float = 0.9) -> xr.Dataset:
    """Per-edge summary table of a fitted model.

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    prob : float, default 0.9
        Mass of the equal-tailed credible interval of the strengths.

    Returns
    -------
    xarray.Dataset
        Dims ``(parent, child)`` with coords ``model.latent_names_``; variables ``inclusion`` (posterior
        inclusion probability), ``orientation`` (probability that ``parent`` precedes ``child`` in the causal
        order, ``edge_orientation_``), ``allowed`` (bool: the fitted causal order holds strengths for the edge),
        ``strength_mean`` (posterior mean strength averaged over environments), ``strength_abs_mean``
        (mean over environments of ``|posterior mean|``) and ``n_envs_ci_contains_zero`` (number of
        environments whose ``prob`` credible interval of the strength contains 0). Use
        ``.to_dataframe()`` for one row per ordered pair.
    """
    _check_fitted(model, "edge_summary")
    check_scalar(prob, "prob", float, "edge_summary", min_val=0, max_val=1, include_min=False,
                 include_max=False)
    names = list(model.latent_names_)
    w = np.asarray(model.edge_weight_)
    draws = np.asarray(model._weight_draws)
    a = (1 - prob) / 2
    lo, hi = np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)
    allowed = model.result_.net.mask.numpy().astype(bool)
    zero_in = ((lo <= 0) & (hi >= 0)).sum(0)
    pc = ("parent", "child")
    return xr.Dataset(
        {"inclusion": (pc, np.asarray(model.edge_inclusion_, dtype=np.float64)),
         "orientation": (pc, np.asarray(getattr(model, "edge_orientation_", allowed),
                                        dtype=np.float64)),
         "allowed": (pc, allowed),
         "strength_mean": (pc, w.mean(0)),
         "strength_abs_mean": (pc, np.abs(w).mean(0)),
         "n_envs_ci_contains_zero": (pc, np.where(allowed, zero_in, 0).astype(np.int64))},
        coords={"parent": names, "child": names}, attrs={"credible_interval_prob": prob})
