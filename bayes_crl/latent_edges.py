"""Edge posterior of any prior given the latents: the latent causal model alone, with ``z`` observed.

What a full fit reports depends on the latents it recovers; this module isolates the edge machinery, so that
priors can be compared on the same latents (known ones, or latents a fit returned) and checked against the
truth. For the spike-and-slab the answer is exact and needs no fit (:mod:`bayes_crl.parent_sets`); for the
horseshoe, Laplace and flat priors the strengths' variational posterior is fitted by SVI on the latent-only
model of :func:`bayes_crl.models.latent_causal_model` with ``z`` conditioned on, and the inclusion
probabilities follow each prior's own definition (:mod:`bayes_crl.priors`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import torch

from bayes_crl._validation import BayesCRLValueError, check_option, check_scalar
from bayes_crl.guides import GlobalGuide
from bayes_crl.models import SITE_Z, LatentCausalNet, latent_causal_model
from bayes_crl.noise import get_noise_family
from bayes_crl.parent_sets import child_statistics, edge_marginals
from bayes_crl.priors import EdgePrior, get_prior

__all__ = ["LatentEdges", "fit_latent_edges"]


@dataclass
class LatentEdges:
    """Edge posterior given latents.

    Attributes
    ----------
    inclusion : ndarray (l, l)
        Posterior edge inclusion probabilities ``[parent, child]`` by the prior's definition (0 for pairs the
        order rules out).
    weight : ndarray (E, l, l) or None
        Posterior-mean strengths (``None`` for the spike-and-slab, whose strengths are integrated out).
    order : ndarray (l,)
        The causal order used, root first.
    losses : ndarray (num_steps,)
        Negative ELBO per row of each SVI step (empty for the spike-and-slab).
    """

    inclusion: np.ndarray
    weight: np.ndarray | None
    order: np.ndarray
    losses: np.ndarray


def fit_latent_edges(z, env, prior: str | EdgePrior = "horseshoe", *, order=None, noise: str = "gaussian",
                     num_steps: int = 1500, lr: float = 0.05, num_samples: int = 1000, seed: int = 0) -> LatentEdges:
    """Edge inclusion probabilities of ``prior`` given latents ``z`` in a causal order.

    Parameters
    ----------
    z : array_like (N, l)
        Latents (linear mechanisms ``z_i = sum_j W[u, j, i] z_j + n_i``).
    env : array_like (N,) int codes in ``0..E-1``
    prior : str or EdgePrior
    order : array_like (l,), optional
        Causal order, root first (default ``0, ..., l - 1``).
    noise : {"gaussian", "laplace", "gamma"}
        Noise family of the SVI fit (the spike-and-slab's exact posterior is Gaussian).
    num_steps, lr : SVI steps (full batch, Adam, cosine decay to 10 %) and learning rate.
    num_samples : int
        Draws of the strengths' posterior the probabilities are averaged over.
    seed : int

    Returns
    -------
    LatentEdges
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise BayesCRLValueError(f"The 'z' argument must be a finite 2-D array (N, l). Got shape {z.shape}.")
    env = np.asarray(env)
    if env.shape != (len(z),) or not np.issubdtype(env.dtype, np.integer) or env.min() < 0:
        raise BayesCRLValueError(f"The 'env' argument must hold {len(z)} non-negative integer codes. "
                                 f"Got shape {env.shape}, dtype {env.dtype}.")
    check_option(noise, "noise", ("gaussian", "laplace", "gamma"), "fit_latent_edges")
    check_scalar(num_steps, "num_steps", int, "fit_latent_edges", min_val=1)
    prior = get_prior(prior)
    n, l = z.shape
    e = int(env.max()) + 1
    order = np.arange(l) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(l)):
        raise BayesCRLValueError(f"The 'order' argument must be a permutation of 0..{l - 1}. Got {order.tolist()}.")
    if getattr(prior, "exact_inclusion", False):
        st, c = child_statistics(np.broadcast_to(z[:, :, None], (n, l, l)), z, env, e)
        p = edge_marginals(st, c, order, prior_inclusion=prior.prior_inclusion, slab_scale=prior.slab_scale,
                           spike_scale=prior.spike_scale)
        return LatentEdges(p, None, order, np.zeros(0))

    zo = torch.as_tensor(z[:, order], dtype=torch.float32)  # slot k holds latent order[k]
    et = torch.as_tensor(env, dtype=torch.int64)
    fam = get_noise_family(noise)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LatentCausalNet(1, e, l, nonlinear=False)
        gg = GlobalGuide(prior, e, l)
        counts = torch.bincount(et, minlength=e).clamp(min=1).float()
        with torch.no_grad():
            w0 = torch.zeros(e, l, l)
            mean = torch.zeros(e, l)
            for u in range(e):
                zu = zo[et == u].double()
                if len(zu) < 2:
                    continue
                mean[u] = zu.mean(0).float()
                c = zu - zu.mean(0)
                for i in range(1, l):  # least squares per environment: a start near the posterior mode
                    sol = torch.linalg.lstsq(c[:, :i], c[:, i:i + 1]).solution[:, 0]
                    w0[u, :i, i] = sol.float()
            net.noise_loc.copy_(mean - (mean.unsqueeze(-1) * w0).sum(-2))
            resid = zo - (zo.unsqueeze(-1) * w0[et]).sum(-2)
            var = torch.zeros(e, l).index_add_(0, et, (resid - net.noise_loc[et]) ** 2) / counts[:, None]
            net.noise_log_scale.copy_(0.5 * torch.log(var.clamp(min=1e-6)))
            gg.init_from_weights(w0)
        params = [net.noise_loc, net.noise_log_scale, net.noise_log_shape] + list(gg.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        model = pyro.poutine.condition(latent_causal_model, data={SITE_Z: zo})
        elbo = pyro.infer.Trace_ELBO()

        def guide(*_, **__):
            gg(net.mask)

        losses = np.zeros(num_steps)
        for step in range(num_steps):
            for g in opt.param_groups:
                g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / num_steps)))
            opt.zero_grad()
            loss = elbo.differentiable_loss(model, guide, None, et, net=net, prior=prior, noise=fam, latent_only=True)
            loss.backward()
            opt.step()
            losses[step] = loss.item() / n
        with torch.no_grad():
            draws = gg.draws(num_samples)
            feats = net.features(zo)  # (N, l, l), the identity broadcast
            fsum = torch.zeros(e, l, l).index_add_(0, et, feats)
            fsq = torch.zeros(e, l, l).index_add_(0, et, feats**2)
            fvar = (fsq / counts[:, None, None] - (fsum / counts[:, None, None]) ** 2).clamp(min=0)
            scale2 = net.noise_scale() ** 2
            snr_env = fvar / scale2[:, None, :]
            wgt = counts[:, None] * scale2
            ctx = {"n_per_env": float(counts.mean()), "snr_env": snr_env, "snr": snr_env.mean(0),
                   "env_weight": wgt / wgt.sum(0, keepdim=True)}
            slot_p = (prior.indicators(draws, ctx) & net.mask.bool()).double().mean(0).numpy()
            slot_w = (prior.weights(draws) * net.mask).mean(0).numpy()
    p = np.zeros((l, l))
    w = np.zeros((e, l, l))
    p[np.ix_(order, order)] = slot_p
    w[:, order[:, None], order[None, :]] = slot_w
    return LatentEdges(p, w, order, losses)
