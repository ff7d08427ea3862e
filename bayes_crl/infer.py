"""The SVI fit loop: minibatch stochastic variational inference -> an immutable :class:`FitResult`.

The loop uses Pyro's ``Trace_ELBO`` for the loss and a torch optimizer for the update, so that a
non-finite loss or gradient is never applied (the step is rejected and the parameters keep their last
good values; after ``max_bad_steps`` consecutive rejections the fit stops with an error naming the step).

Fitting runs in two phases: a warm-up in the initial slot order, an exact order search on the latent
means (:mod:`bayes_crl.order`) that permutes the slots, then the main phase.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO

from bayes_crl.guides import GlobalGuide, latent_causal_guide
from bayes_crl.models import LatentCausalNet, latent_causal_model
from bayes_crl.noise import NoiseFamily
from bayes_crl.order import best_order
from bayes_crl.priors import EdgePrior

__all__ = ["FitResult", "fit_svi", "NonFiniteLossError", "encode"]


class NonFiniteLossError(FloatingPointError):
    """Too many consecutive SVI steps gave a non-finite loss or gradient."""


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_svi`.

    Attributes
    ----------
    net : LatentCausalNet
        Fitted networks and point parameters.
    global_guide : GlobalGuide
        Variational posterior of the global edge sites.
    losses : ndarray (num_steps,)
        Negative ELBO per row at each step (``nan`` for rejected steps).
    order : tuple[int, ...]
        Slot permutation applied by the order search (new slot k = warm-up slot ``order[k]``).
    n_rejected : int
        Number of rejected (non-finite) steps.
    """

    net: LatentCausalNet
    global_guide: GlobalGuide
    prior: EdgePrior
    noise: NoiseFamily
    losses: np.ndarray
    order: tuple
    n_rejected: int = 0
    history: dict = field(default_factory=dict)


@torch.no_grad()
def encode(net: LatentCausalNet, x: torch.Tensor, env: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Posterior-mean latents ``E_q[z | x, u]`` (N, l)."""
    out = [net.encode_mean(x[i:i + batch_size], env[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _fingerprint(x: torch.Tensor, env: torch.Tensor) -> str:
    import hashlib

    h = hashlib.sha256(x.detach().contiguous().numpy().tobytes())
    h.update(env.contiguous().numpy().tobytes())
    return h.hexdigest()


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
            warmup_frac: float = 0.3, order_search: bool = True, nonlinear: bool = True, hidden: int = 64,
            seed: int = 0, max_bad_steps: int = 50, progress: bool = False,
            callback=None, checkpoint_dir: str | None = None, checkpoint_every: int = 500,
            resume: bool = False) -> FitResult:
    """Fit the model by minibatch SVI.

    Parameters
    ----------
    x : Tensor (N, d) float
    env : Tensor (N,) int64, codes in ``0..n_envs-1``
    n_latents, n_envs : int
    prior : EdgePrior
    noise : NoiseFamily
    num_steps : int
        Total optimisation steps (warm-up included).
    batch_size : int
    lr : float
        Adam learning rate (cosine-decayed to 10 % over the main phase).
    warmup_frac : float
        Fraction of steps before the order search.
    order_search : bool or callable
        Whether to search the causal order after the warm-up; a callable ``(z (N, l), env (N,)) -> order``
        replaces the built-in search (for experiments).
    seed : int
    max_bad_steps : int
        Consecutive non-finite steps tolerated before :class:`NonFiniteLossError`.
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        ``callback(step, net, global_guide, loss)`` called every 100 steps (for monitoring).
    checkpoint_dir : str, optional
        Write a checkpoint (safetensors + JSON manifest with SHA-256, written atomically) every
        ``checkpoint_every`` steps: parameters, optimizer state, RNG states, step.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir``; on CPU the result is bitwise identical to an
        uninterrupted fit. The checkpoint must have been written for the same data and settings.

    Returns
    -------
    FitResult
    """
    n, d = x.shape
    with _RNGGuard(seed):
        net = LatentCausalNet(d, n_envs, n_latents, hidden=hidden, nonlinear=nonlinear)
        gg = GlobalGuide(prior, n_envs, n_latents)
        elbo = Trace_ELBO()
        params = list(net.parameters()) + list(gg.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        warm = int(warmup_frac * num_steps) if order_search else -1
        losses = np.full(num_steps, np.nan)
        order = tuple(range(n_latents))
        gen = torch.Generator().manual_seed(seed)
        perm_rows = torch.randperm(n, generator=gen)
        pos, bad, n_rej = 0, 0, 0
        start = 0
        if checkpoint_dir is not None:
            from bayes_crl.persistence import CheckpointError, restore_training_state, save_training_state
            config = {"n": n, "d": d, "n_latents": n_latents, "n_envs": n_envs, "num_steps": num_steps,
                      "batch_size": batch_size, "lr": lr, "seed": seed, "warm": warm, "prior": repr(prior),
                      "noise": noise.name, "hidden": hidden, "nonlinear": nonlinear,
                      "data_sha256": _fingerprint(x, env)}
            if resume:
                t, st = restore_training_state(checkpoint_dir, modules={"net": net, "global_guide": gg},
                                               optimizer=opt, generators={"rows": gen})
                if st["config"] != config:
                    diff = sorted(k for k in config if st["config"].get(k) != config[k])
                    raise CheckpointError(f"The checkpoint in {checkpoint_dir!r} was written for other data or "
                                          f"settings (differs in {diff}); resume with the same arguments or start "
                                          "a new checkpoint_dir.")
                start, pos, bad, n_rej = st["step"], st["pos"], st["bad"], st["n_rejected"]
                order = tuple(st["order"])
                perm_rows, losses = t["perm_rows"], t["losses"].numpy().copy()
        elif resume:
            raise ValueError("resume=True needs checkpoint_dir")
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=num_steps, initial=start, desc="SVI", leave=False)
        for step in range(start, num_steps):
            if checkpoint_dir is not None and step > start and step % checkpoint_every == 0:
                save_training_state(checkpoint_dir, modules={"net": net, "global_guide": gg}, optimizer=opt,
                                    generators={"rows": gen},
                                    tensors={"perm_rows": perm_rows, "losses": torch.from_numpy(losses)},
                                    meta={"step": step, "pos": pos, "bad": bad, "n_rejected": n_rej,
                                          "order": list(order), "config": config})
            if step == warm and n_latents > 1:
                z = encode(net, x, env).numpy()
                if callable(order_search):
                    new_order = list(order_search(z, env.numpy()))
                elif n_latents <= 12:
                    new_order = best_order(z, env.numpy(), noise=noise.name)[0]
                else:
                    new_order = list(range(n_latents))
                p = torch.as_tensor(new_order)
                net.permute_latents(p)
                gg.reset()
                order = tuple(order[k] for k in new_order)
                opt = torch.optim.Adam(params, lr=lr)
            if pos + batch_size > n:
                perm_rows, pos = torch.randperm(n, generator=gen), 0
            idx = perm_rows[pos:pos + batch_size]
            pos += batch_size
            if step > max(warm, 0):
                frac = (step - max(warm, 0)) / max(1, num_steps - max(warm, 0))
                for g in opt.param_groups:
                    g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            opt.zero_grad()
            loss = elbo.differentiable_loss(latent_causal_model, latent_causal_guide, x[idx], env[idx], net=net,
                                            prior=prior, noise=noise, n_total=n, subsample=idx, global_guide=gg)
            ok = torch.isfinite(loss)
            if ok:
                loss.backward()
                ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if not ok:
                bad += 1
                n_rej += 1
                if bad >= max_bad_steps:
                    raise NonFiniteLossError(
                        f"SVI stopped at step {step}: {bad} consecutive steps gave a non-finite loss or gradient "
                        "(likely causes: a learning rate too high, unscaled inputs with extreme values, or a noise "
                        "family whose support does not fit the data). Parameters are at the last good step.")
                continue
            bad = 0
            torch.nn.utils.clip_grad_norm_(params, 100.0)
            opt.step()
            losses[step] = loss.item() / n
            if bar is not None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{losses[step]:.3f}")
            if callback is not None and step % 100 == 0:
                callback(step, net, gg, losses[step])
        if bar is not None:
            bar.close()
    return FitResult(net=net, global_guide=gg, prior=prior, noise=noise, losses=losses, order=order,
                     n_rejected=n_rej)
