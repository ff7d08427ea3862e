"""Settings of the SVI fit (:func:`bayes_crl.infer.fit_svi`), gathered in one immutable object."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FitConfig"]


@dataclass(frozen=True)
class FitConfig:
    """Algorithm settings of :func:`bayes_crl.infer.fit_svi`.

    The model's sizes, prior and noise family, and the run-time options (progress, callback, checkpoints) are
    arguments of ``fit_svi`` itself; this object holds how the fit proceeds. Measurements behind the defaults
    are in ``BENCHMARKS.md``.

    Attributes
    ----------
    num_steps : int
        Steps of the kept run, warm-up included. The final latent-only refit adds ``refit_frac * num_steps``.
    batch_size : int
        Rows per SVI step (the rows are visited in a random order that is redrawn after each pass).
    lr : float
        Adam learning rate. Over the main phase (and over the final refit) it follows a cosine decay to 10 %.
    warmup_frac : float
        Fraction of ``num_steps`` each warm-up runs before the restart selection and the first order search.
        Warm-ups use the point-estimate Laplace (L1) prior whatever the requested prior, since with variational
        strengths the early fit collapses towards independent, noise-like latents and loses the graph.
    recheck_frac : float
        A second identification and order search at this fraction of ``num_steps``, when the latents are
        sharper than after the warm-up; the edge posterior then restarts from least squares in the new slots.
    order_search : bool or callable
        Whether to search the causal order of the latents (after the warm-ups, at ``recheck_frac`` and on the
        final latents). A callable ``(z (N, l), env (N,)) -> order`` replaces the built-in exact search of
        :mod:`bayes_crl.order` (for experiments); the order votes of all warm-ups are pooled only with ``True``.
    nonlinear : bool
        Nonlinear edge features ``phi_ji`` (otherwise linear mechanisms).
    hidden : int
        Width of the encoder's and decoder's hidden layers.
    n_restarts : int
        Independent warm-ups from different initialisations. Among the runs whose latents agree with the
        others' no less than :data:`bayes_crl.stages.RESTART_OUTLIER_DROP` below the median run, the one with
        the lowest sum of its rank by training loss over the last tenth of its steps (a minibatch estimate of
        its negative ELBO) and its rank by unmixing loss (with ``unmix``) is kept. Costs ``n_restarts - 1``
        extra warm-ups.
    min_obs_scale : float
        Lower bound of the decoder's observation noise scale (standardised units). Keeps the prior's say in
        the ELBO when the observation noise is tiny.
    unmix : bool
        Re-express the latents in the linear coordinates with the sparsest per-environment partial
        correlations (:func:`bayes_crl.unmix.sparse_unmixing`) after the warm-ups (64 starts), at
        ``recheck_frac`` and on the final latents (one descent from the current coordinates, which corrects them
        without leaving their basin), and centre the strengths after each order search that follows
        (:func:`bayes_crl.unmix.centring_map`). The ELBO is nearly flat along linear maps of the latents; this
        sparsity is what identifies them.
    final_order_check : bool
        Identify the final latents once more (with ``unmix``: unmix, search the order with the model's own
        mechanism class, ``shared=True`` in :func:`bayes_crl.order.best_order`, and centre) and refit the latent
        causal model in those coordinates with the encoder, decoder and shift held fixed.
    refit_frac : float
        Length of that latent-only refit as a fraction of ``num_steps`` (its steps skip the decoder).
    seed : int
        Seed of the fit; the caller's global random state is restored afterwards.
    max_bad_steps : int
        Consecutive non-finite steps tolerated before :class:`bayes_crl.infer.NonFiniteLossError`.
    """

    num_steps: int = 3000
    batch_size: int = 256
    lr: float = 3e-3
    warmup_frac: float = 0.3
    recheck_frac: float = 0.6
    order_search: bool | Callable = True
    nonlinear: bool = True
    hidden: int = 64
    n_restarts: int = 1
    min_obs_scale: float = 0.0
    unmix: bool = True
    final_order_check: bool = True
    refit_frac: float = 0.15
    seed: int = 0
    max_bad_steps: int = 50
