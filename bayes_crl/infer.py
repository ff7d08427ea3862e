"""The SVI fit: minibatch stochastic variational inference -> an immutable :class:`FitResult`.

:func:`fit_svi` is a pipeline of the stages in :mod:`bayes_crl.stages`: warm-ups in the initial slot order,
identification of each warm-up's latents (sparse unmixing), the choice of one warm-up, an exact order search on
its latents (:mod:`bayes_crl.order`) that permutes the slots, the main phase with the requested prior (with a
second identification and order search at ``recheck_frac``), a final identification and a refit of the latent
causal model in the final coordinates.

The loop uses Pyro's ``Trace_ELBO`` for the loss and a torch optimizer for the update, so that a non-finite
loss or gradient is never applied (the step is rejected and the parameters keep their last good values; after
``max_bad_steps`` consecutive rejections the fit stops with an error naming the step).
"""
from __future__ import annotations

import dataclasses
import random


import numpy as np
import pyro
import torch

from bayes_crl.device import CPU, resolve_device
from bayes_crl.fit_config import FitConfig
from bayes_crl.fit_result import FitResult
from bayes_crl.noise import NoiseFamily
from bayes_crl.priors import EdgePrior
from bayes_crl.stages import (FitContext, NonFiniteLossError, centre, encode, final_identification, identify_warm_ups,
                              recheck, refit_latent_model, restart_edge_posterior, resume_from_checkpoint, run_once,
                              run_steps, search_order, select_restart, warm_up)

__all__ = ["FitResult", "FitConfig", "fit_svi", "NonFiniteLossError", "encode"]


class _RNGGuard:
    """Seed torch/numpy/random for the fit and restore the caller's global RNG state afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        pyro.set_rng_seed(self.seed)

    def __exit__(self, *a):
        torch.random.set_rng_state(self.states[0])
        np.random.set_state(self.states[1])
        random.setstate(self.states[2])
        return False


def fit_svi(x: torch.Tensor, env: torch.Tensor, *, n_latents: int, n_envs: int, prior: EdgePrior,
            noise: NoiseFamily, num_steps: int = 3000, batch_size: int = 256, lr: float = 3e-3,
            warmup_frac: float = 0.3, recheck_frac: float = 0.6, order_search=True, nonlinear: bool = True,
            hidden: int = 64, n_restarts: int = 1, min_obs_scale: float = 0.0, unmix: bool = True,
            final_order_check: bool = True, refit_frac: float = 0.15, seed: int = 0, max_bad_steps: int = 50,
            config: FitConfig | None = None, progress: bool = False, callback=None,
            checkpoint_dir: str | None = None, checkpoint_every: int = 500, resume: bool = False,
            main_phase=None, device: str | torch.device = "cpu") -> FitResult:
    """Fit the model by minibatch SVI.

    Parameters
    ----------
    x : Tensor (N, d) float, or :class:`bayes_crl.rows.ArrayRows` (rows read on demand, standardised)
    env : Tensor (N,) int64, codes in ``0..n_envs-1``
    n_latents, n_envs : int
    prior : EdgePrior
        The edge prior of the main phase (the warm-ups use the L1 point-estimate prior).
    noise : NoiseFamily
    num_steps, batch_size, lr, warmup_frac, recheck_frac, order_search, nonlinear, hidden, n_restarts, \
min_obs_scale, unmix, final_order_check, refit_frac, seed, max_bad_steps
        The fit's settings, described in :class:`bayes_crl.fit_config.FitConfig`.
    config : FitConfig, optional
        All of those settings at once; the keywords above must then be left at their defaults.
    progress : bool
        Show progress: tqdm's bar in notebooks and terminals, a plain line every 5 % otherwise
        (:mod:`bayes_crl.progress`).
    callback : callable, optional
        ``callback(step, net, global_guide, loss)`` called every 100 steps of the warm-ups and the main phase.
    checkpoint_dir : str, optional
        Write a checkpoint (safetensors + JSON manifest with SHA-256, written atomically) every
        ``checkpoint_every`` steps of the main phase: parameters, optimizer state, RNG states, step.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir``; on CPU the result is bitwise identical to an
        uninterrupted fit. The checkpoint must have been written for the same data and settings.
    main_phase : callable, optional
        ``main_phase(ctx, run, steps, losses)`` runs the main phase's SVI steps ``steps`` (a ``range``) of ``run``
        in place and writes each step's loss per row to ``losses[step]``; default
        :func:`bayes_crl.stages.run_steps`. :class:`bayes_crl.distributed.LightningSteps` runs them on PyTorch
        Lightning (several processes, GPUs or nodes); a main phase with a ``once(fn)`` method also runs the
        stages between and after its segments in one process and shares their result
        (:func:`bayes_crl.stages.run_once`).
    device : str or torch.device, default "cpu"
        Where the SVI steps and the encoder passes run: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (a GPU
        where CUDA is available); :func:`bayes_crl.device.resolve_device` raises a clear error for a CUDA device
        this machine does not have. ``x`` and ``env`` stay where they are and move to the device one minibatch at
        a time; the result's modules are returned on the CPU (:mod:`bayes_crl.device`).

    Returns
    -------
    FitResult
    """
    dev = resolve_device(device, "device", "fit_svi")
    given = FitConfig(num_steps=num_steps, batch_size=batch_size, lr=lr, warmup_frac=warmup_frac,
                      recheck_frac=recheck_frac, order_search=order_search, nonlinear=nonlinear, hidden=hidden,
                      n_restarts=n_restarts, min_obs_scale=min_obs_scale, unmix=unmix,
                      final_order_check=final_order_check, refit_frac=refit_frac, seed=seed,
                      max_bad_steps=max_bad_steps)
    cfg = given if config is None else _only_config(config, given)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if main_phase is not None and checkpoint_dir is not None:
        raise ValueError("checkpoint_dir is written by the default main phase only; pass one or the other")
    with _RNGGuard(cfg.seed):
        ctx = FitContext(x, env, n_latents=n_latents, n_envs=n_envs, prior=prior, noise=noise, cfg=cfg,
                         progress=progress, callback=callback, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, device=dev)
        run, start = resume_from_checkpoint(ctx) if resume else (None, ctx.warm)
        if run is None:
            runs, stores = warm_up(ctx)
            unmix_loss = identify_warm_ups(ctx, runs)
            best, tables = select_restart(ctx, runs, stores, unmix_loss)
            run, ctx.losses = runs[best], stores[best]
            if ctx.searches_order:
                ctx.order = search_order(ctx, run, tables)
                if cfg.unmix:
                    centre(ctx, run)
            if ctx.warm:  # switch to the requested prior, from least squares in the (new) slot order
                restart_edge_posterior(ctx, run)
        second = int(cfg.recheck_frac * cfg.num_steps) if ctx.searches_order else cfg.num_steps
        steps = run_steps if main_phase is None else main_phase
        if start < second < cfg.num_steps:
            steps(ctx, run, range(start, second), ctx.losses)
            run_once(ctx, run, lambda: recheck(ctx, run, second), "recheck", main_phase)
            start = second
        steps(ctx, run, range(start, cfg.num_steps), ctx.losses)
        if cfg.final_order_check and ctx.searches_order:
            run_once(ctx, run, lambda: _final(ctx, run), "final_identification", main_phase)
        ctx.close()
        run.net.to(CPU)
        run.gg.to(CPU)
    return FitResult(net=run.net, global_guide=run.gg, prior=prior, noise=noise, losses=ctx.losses,
                     order=ctx.order, n_rejected=run.n_rej, history=ctx.history)


def _final(ctx, run) -> None:
    """The final identification and, when it changed the coordinates or the order, the refit."""
    if final_identification(ctx, run):
        refit_latent_model(ctx, run)


def _only_config(config: FitConfig, given: FitConfig) -> FitConfig:
    """``config``, after checking that no setting was also passed as a keyword (with another value than its
    default)."""
    both = [f.name for f in dataclasses.fields(FitConfig) if getattr(given, f.name) != getattr(FitConfig(), f.name)]
    if both:
        raise ValueError(f"fit_svi got config= and the settings {both} as keywords; pass them in the FitConfig.")
    return config
