"""Held-out predictive density of a fitted model: the importance-weighted bound :func:`heldout_elbo`, used by
``LatentCausalModel.score`` and by :func:`bayes_crl.compare.compare_priors`."""
from __future__ import annotations

import math
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bayes_crl._validation import check_scalar

if TYPE_CHECKING:  # pragma: no cover
    from bayes_crl.estimator import LatentCausalModel

__all__ = ["heldout_elbo"]


@torch.no_grad()
def heldout_elbo(model: "LatentCausalModel", x: Any, env: Any, *, num_particles: int = 16,
                 seed: int = 0) -> np.ndarray:
    """Importance-weighted lower bound on the predictive log density of each row of ``x``.

    With ``K = num_particles`` joint draws ``(W_k, z_k) ~ q(W) q(z | x_n, u_n)`` from the fitted guide
    (globals from the variational posterior, latents from the amortized encoder)::

        log p_q(x_n | u_n) >= E[ logsumexp_k (log p(x_n | z_k) + log p(z_k | W_k, u_n) - log q(z_k | x_n, u_n))
                              - log K ],

    a bound on ``log E_{q(W)} p(x_n | W, u_n)``, the density of a new row under the fitted posterior of the
    edge variables. It tightens as ``K`` grows; ``K = 1`` is the per-row ELBO without the global KL term
    (which belongs to the training data, not to new rows). The terms are computed from Pyro traces of
    :func:`~bayes_crl.guides.latent_causal_guide` replayed through
    :func:`~bayes_crl.models.latent_causal_model`, reading each site's log density without the minibatch
    scaling. Values are log densities of ``x`` in the user's units (the standardisation's log-Jacobian is
    included).

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    x : array_like (N, d)
    env : array_like (N,)
        Labels seen in ``fit``.
    num_particles : int, default 16
    seed : int, default 0
        Seeds the draws (the caller's global torch RNG is left as it was).

    Returns
    -------
    ndarray (N,)
    """
    import pyro.poutine as poutine

    from bayes_crl.guides import latent_causal_guide
    from bayes_crl.models import SITE_X, SITE_Z, latent_causal_model

    model._check_fitted()
    k = check_scalar(num_particles, "num_particles", Integral, "heldout_elbo", min_val=1)
    x_arr, codes, _ = model._prepare(x, env, fitting=False)
    xt, et = model._scale(x_arr), torch.as_tensor(codes)
    res = model.result_
    kw = {"net": res.net, "prior": res.prior, "noise": res.noise, "global_guide": res.global_guide}
    terms = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for _ in range(int(k)):
            g = poutine.trace(latent_causal_guide).get_trace(xt, et, **kw)
            m = poutine.trace(poutine.replay(latent_causal_model, trace=g)).get_trace(xt, et, **kw)
            z = g.nodes[SITE_Z]["value"]
            lw = (m.nodes[SITE_X]["fn"].log_prob(m.nodes[SITE_X]["value"])
                  + m.nodes[SITE_Z]["fn"].log_prob(z) - g.nodes[SITE_Z]["fn"].log_prob(z))
            terms.append(lw.reshape(-1))
    lw = torch.stack(terms).double()  # (K, N)
    bound = torch.logsumexp(lw, 0) - math.log(k)
    return bound.numpy() - float(np.log(model.x_scale_).sum())
