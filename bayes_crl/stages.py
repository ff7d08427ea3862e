"""The stages of the SVI fit, in the order :func:`bayes_crl.infer.fit_svi` calls them.

One fit is a :class:`FitContext` (data, settings, the main loss record, the current slot order, the history and
the checkpoint/progress plumbing) and one or more :class:`Run` objects (a network, its edge posterior, the
optimizer and the minibatch position). Each function below does one step of the pipeline:

1. :func:`warm_up` -- ``n_restarts`` warm-ups with the L1 point-estimate prior (:func:`run_steps`);
2. :func:`identify_warm_ups` -- sparse unmixing of each warm-up's latents (:func:`identify`);
3. :func:`select_restart` -- the warm-up to keep, and the pooled order votes of the others (:func:`order_votes`);
4. :func:`search_order` and :func:`centre` -- the causal order of the slots and centred strengths;
5. :func:`restart_edge_posterior` -- the requested prior, starting from least squares;
6. :func:`recheck` -- at ``recheck_frac``: identify, search the order, centre, restart the edge posterior;
7. :func:`final_identification` -- on the final latents: identify, search with the shared score, centre;
8. :func:`refit_latent_model` -- the latent causal model refitted in those coordinates, encoder and decoder fixed.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import warnings

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from bayes_crl import unmix as unmixing
from bayes_crl.device import CPU, module_device
from bayes_crl.fit_config import FitConfig
from bayes_crl.guides import GlobalGuide, latent_causal_guide
from bayes_crl.metrics import match_latents, mpc
from bayes_crl.models import LatentCausalNet, latent_causal_model
from bayes_crl.noise import NoiseFamily
from bayes_crl.order import align_scores, best_order, best_order_from_scores, greedy_order, local_scores
from bayes_crl.priors import EdgePrior, LaplacePrior
from bayes_crl.rows import CHUNK_ROWS, row_subset

__all__ = ["FitContext", "Run", "NonFiniteLossError", "encode", "run_steps", "warm_up", "identify",
           "run_steps_batched", "identify_warm_ups", "select_restart", "warm_up_loss", "order_votes", "search_order",
           "centre", "restart_edge_posterior", "recheck", "final_identification", "refit_latent_model",
           "resume_from_checkpoint", "checkpoint_config", "run_once", "MAX_SEARCH_ROWS", "RESTART_OUTLIER_DROP"]

# order searches, unmixings and least-squares restarts use at most this many rows (a fixed random subset), so
# their memory does not grow with N
MAX_SEARCH_ROWS = 100_000
# a warm-up agreeing this much less than the median warm-up with the others is not kept (:func:`_select_restart`)
RESTART_OUTLIER_DROP = 0.2
# starts of the sparse unmixing: many random ones after the warm-ups, then one descent from the current
# coordinates (a many-start search on fitted latents often jumps to a wrong basin of the sparsity criterion,
# which nonlinear mechanisms bias; BENCHMARKS.md)
WARMUP_UNMIX_STARTS = 64
LATER_UNMIX_STARTS = 1
# rows whose latents decide which warm-up agrees with the others
AGREEMENT_ROWS = 5000
# the built-in order search is exact (2^l subsets) up to this many latents; beyond, a hill climb over orders
MAX_SEARCH_LATENTS = 12
# the order votes of all warm-ups are pooled up to this many latents
MAX_VOTE_LATENTS = 8


class NonFiniteLossError(FloatingPointError):
    """Too many consecutive SVI steps gave a non-finite loss or gradient."""


@torch.no_grad()
def encode(net: LatentCausalNet, x: torch.Tensor, env: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Posterior-mean latents ``E_q[z | x, u]`` (N, l), on the CPU; computed on ``net``'s device, to which the
    rows move ``batch_size`` at a time."""
    dev = module_device(net)
    out = [net.encode_mean(x[i:i + batch_size].to(dev), env[i:i + batch_size].to(dev)).to(CPU)
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where the parameters' device has one: one update for all the (many, small)
    tensors instead of a Python loop over them (about 3 ms of a 20 ms step on 2 CPU cores, BENCHMARKS.md)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def _row_order(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of the ``n`` rows: int32 below 2^31 rows (the same permutation as int64, half the memory:
    80 MB less per warm-up at 10^7 rows); minibatches take int64 slices of it."""
    return torch.randperm(n, generator=gen, dtype=torch.int32 if n < 2**31 else torch.int64)


def _next_minibatch(run: "Run", n: int, batch_size: int) -> torch.Tensor:
    """The next ``batch_size`` row indices (int64) of ``run``'s row order, drawing a new order after each pass."""
    if run.pos + batch_size > n:
        run.perm_rows, run.pos = _row_order(n, run.gen), 0
    idx = run.perm_rows[run.pos:run.pos + batch_size].long()
    run.pos += batch_size
    return idx


def _non_finite_error(where: str, bad: int, why: str | None) -> NonFiniteLossError:
    """The error raised after ``bad`` consecutive rejected steps (``where``: the step, and which warm-up)."""
    return NonFiniteLossError(
        f"SVI stopped at {where}: {bad} consecutive steps gave a non-finite loss or gradient (likely causes: a "
        "learning rate too high, unscaled inputs with extreme values, or a noise family whose support does not fit "
        "the data). Parameters are at the last good step." + (f" Last error: {why}" if why else ""))


def _fingerprint(x, env: torch.Tensor) -> str:
    """SHA-256 of the data, so a checkpoint is resumed only on the data it was written for (rows read in chunks
    when ``x`` is read on demand, :class:`bayes_crl.rows.ArrayRows`)."""
    if torch.is_tensor(x):
        h = hashlib.sha256(x.detach().contiguous().numpy().tobytes())
    else:
        h = hashlib.sha256()
        for start in range(0, len(x), CHUNK_ROWS):
            h.update(x[start:start + CHUNK_ROWS].numpy().tobytes())
    h.update(env.contiguous().numpy().tobytes())
    return h.hexdigest()


class FitContext:
    """What the stages of one fit share.

    Holds the data (``x``, ``env``) and the rows used for searches (``xs``, ``es``: at most
    ``MAX_SEARCH_ROWS``), the model specification and the :class:`FitConfig`, the warm-up length ``warm``, and
    the state that the stages update: ``losses`` (the kept run's loss per step), ``order`` (the slot
    permutation so far), ``history`` (diagnostics returned in :class:`bayes_crl.infer.FitResult`), plus the
    progress bar, the callback and the checkpoint settings.
    """

    def __init__(self, x: torch.Tensor, env: torch.Tensor, *, n_latents: int, n_envs: int, prior: EdgePrior,
                 noise: NoiseFamily, cfg: FitConfig, progress: bool = False, callback=None,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 500, device: torch.device = CPU):
        self.x, self.env, self.cfg, self.device = x, env, cfg, device
        self.n, self.d = x.shape
        self.n_latents, self.n_envs, self.prior, self.noise = n_latents, n_envs, prior, noise
        # Warm-ups use the paper's point-estimate L1 prior whatever the final prior: with variational strengths
        # the early fit collapses towards independent (noise-like) latents and loses the graph.
        self.warm_prior = LaplacePrior()
        warm = max(1, int(cfg.warmup_frac * cfg.num_steps)) if (cfg.order_search or cfg.n_restarts > 1) else 0
        self.warm = min(warm, cfg.num_steps)
        self.searches_order = bool(cfg.order_search) and n_latents > 1 and self.warm > 0
        self.elbo = Trace_ELBO()
        self.losses = np.full(cfg.num_steps, np.nan)
        self.order = tuple(range(n_latents))
        self.history: dict = {}
        self.callback = callback
        if self.n > MAX_SEARCH_ROWS:
            sel = row_subset(self.n, MAX_SEARCH_ROWS, cfg.seed + 1)
            self.xs, self.es = x[sel], env[sel]
        else:  # all rows (read once when x is read on demand)
            self.xs, self.es = (x if torch.is_tensor(x) else x[0:self.n]), env
        self.es_np = self.es.numpy()
        self.bar = None
        if progress:
            from bayes_crl.progress import progress_bar

            self.bar = progress_bar(cfg.n_restarts * self.warm + (cfg.num_steps - self.warm), "SVI")
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self.checkpoint_config = checkpoint_config(self) if checkpoint_dir is not None else None

    def latents(self, run: Run) -> np.ndarray:
        """Posterior-mean latents of ``run`` on the search rows (N_s, l)."""
        return encode(run.net, self.xs, self.es).numpy()

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``idx`` (B,) of the data as ``(x (B, d), env (B,), idx (B,))`` on the fit's device."""
        dev = self.device
        return self.x[idx].to(dev), self.env[idx].to(dev), idx.to(dev)

    def matrix(self, a) -> torch.Tensor:
        """``a`` (an array from a stage's numpy code) as a tensor of the data's dtype on the fit's device."""
        return torch.as_tensor(np.asarray(a), dtype=self.x.dtype, device=self.device)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Run:
    """Mutable state of one SVI run (one initialisation): network, edge posterior, optimizer, minibatch order."""

    def __init__(self, ctx: FitContext, prior: EdgePrior, seed: int):
        cfg = ctx.cfg
        torch.manual_seed(seed)
        self.net = LatentCausalNet(ctx.d, ctx.n_envs, ctx.n_latents, hidden=cfg.hidden, nonlinear=cfg.nonlinear,
                                   encoder_env=True, min_obs_scale=cfg.min_obs_scale, full_cov=True).to(ctx.device)
        self.gg = GlobalGuide(prior, ctx.n_envs, ctx.n_latents).to(ctx.device)
        self.params = list(self.net.parameters()) + list(self.gg.parameters())
        self.opt = _adam(self.params, cfg.lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm_rows = _row_order(ctx.n, self.gen)
        self.pos = self.bad = self.n_rej = 0


def checkpoint_config(ctx: FitContext) -> dict:
    """The data fingerprint and settings a checkpoint is written for; resuming requires the same dict."""
    cfg = ctx.cfg
    return {"n": ctx.n, "d": ctx.d, "n_latents": ctx.n_latents, "n_envs": ctx.n_envs, "num_steps": cfg.num_steps,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "warm": ctx.warm,
            "prior": repr(ctx.prior), "noise": ctx.noise.name, "hidden": cfg.hidden, "nonlinear": cfg.nonlinear,
            "n_restarts": cfg.n_restarts, "order_search": bool(cfg.order_search), "recheck_frac": cfg.recheck_frac,
            "unmix": cfg.unmix, "data_sha256": _fingerprint(ctx.x, ctx.env)}


def _save_checkpoint(ctx: FitContext, run: Run, step: int) -> None:
    from bayes_crl.checkpoint import save_training_state

    save_training_state(ctx.checkpoint_dir, modules={"net": run.net, "global_guide": run.gg},
                        optimizer=run.opt, generators={"rows": run.gen},
                        tensors={"perm_rows": run.perm_rows, "losses": torch.from_numpy(ctx.losses)},
                        meta={"step": step, "pos": run.pos, "bad": run.bad, "n_rejected": run.n_rej,
                              "order": list(ctx.order), "config": ctx.checkpoint_config})


def resume_from_checkpoint(ctx: FitContext) -> tuple[Run | None, int]:
    """The run and the step stored in ``ctx.checkpoint_dir``, or ``(None, ctx.warm)`` when it holds none.

    Restores the slot order and the loss record into ``ctx``; raises
    :class:`bayes_crl.codec.CheckpointError` when the checkpoint was written for other data or settings.
    """
    from bayes_crl.checkpoint import restore_training_state
    from bayes_crl.codec import CheckpointError

    if not os.path.exists(os.path.join(ctx.checkpoint_dir, "manifest.json")):
        return None, ctx.warm
    run = Run(ctx, ctx.prior, ctx.cfg.seed)
    t, st = restore_training_state(ctx.checkpoint_dir, modules={"net": run.net, "global_guide": run.gg},
                                   optimizer=run.opt, generators={"rows": run.gen})
    config = ctx.checkpoint_config
    if st["config"] != config:
        diff = sorted(k for k in config.keys() | st["config"].keys() if st["config"].get(k) != config.get(k))
        raise CheckpointError(f"The checkpoint in {ctx.checkpoint_dir!r} was written for other data or settings "
                              f"(differs in {diff}); resume with the same arguments or start a new checkpoint_dir.")
    start, run.pos, run.bad, run.n_rej = st["step"], st["pos"], st["bad"], st["n_rejected"]
    ctx.order = tuple(st["order"])
    run.perm_rows, ctx.losses = t["perm_rows"], t["losses"].numpy().copy()
    if ctx.bar is not None:
        ctx.bar.update(ctx.cfg.n_restarts * ctx.warm + start - ctx.warm)
    return run, start


def run_steps(ctx: FitContext, run: Run, steps: range, loss_store: np.ndarray, *, main: bool = True,
              latent_only: bool = False) -> None:
    """SVI steps ``steps`` of ``run``; the loss per row of step ``k`` goes to ``loss_store[k]``.

    A step whose loss or gradient is not finite is not applied (``nan`` stays in ``loss_store``); after
    ``max_bad_steps`` in a row :class:`NonFiniteLossError` is raised. ``main=False`` (warm-up): the L1 warm-up
    prior at a constant learning rate. ``main=True``: the requested prior and a cosine decay of the learning
    rate to 10 % over the main phase (over ``steps`` when ``latent_only``), and, outside the latent-only refit,
    a checkpoint every ``checkpoint_every`` steps when ``ctx.checkpoint_dir`` is set. ``latent_only``: the ELBO
    without the observation site (:func:`bayes_crl.models.latent_causal_model`).
    """
    cfg, n = ctx.cfg, ctx.n
    step_prior = ctx.prior if main else ctx.warm_prior
    checkpoints = main and not latent_only and ctx.checkpoint_dir is not None
    for step in steps:
        if checkpoints and step > steps.start and step % ctx.checkpoint_every == 0:
            _save_checkpoint(ctx, run, step)
        idx = _next_minibatch(run, n, cfg.batch_size)
        if main:
            frac = (step / max(1, len(steps)) if latent_only
                    else (step - ctx.warm) / max(1, cfg.num_steps - ctx.warm))
            for g in run.opt.param_groups:
                g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        run.opt.zero_grad()
        # Pyro's and torch's argument and support checks cost about 15 % of a step. They run on the first step
        # of each phase and after a bad step (so a failure is explained by their message); a NaN they would
        # have caught otherwise shows up as a non-finite loss, which is rejected the same way.
        try:
            with pyro.validation_enabled(step == steps.start or run.bad > 0), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Encountered NaN", UserWarning)  # rejected below
                xb, eb, ib = ctx.batch(idx)
                loss = ctx.elbo.differentiable_loss(latent_causal_model, latent_causal_guide, xb, eb, net=run.net,
                                                    prior=step_prior, noise=ctx.noise, n_total=n, subsample=ib,
                                                    global_guide=run.gg, latent_only=latent_only)
            why = None
        except ValueError as err:  # Pyro/torch argument validation rejects NaN parameters of a distribution
            loss, why = torch.tensor(float("nan")), str(err).splitlines()[0]
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            # the total gradient norm is finite exactly when every gradient is (one check, not one per tensor);
            # clipping a non-finite gradient is harmless, the step is skipped and the gradient cleared
            ok = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(run.params, 100.0)))
        if ctx.bar is not None:
            ctx.bar.update(1)
        if not ok:
            run.bad += 1
            run.n_rej += 1
            if run.bad >= cfg.max_bad_steps:
                raise _non_finite_error(f"step {step}", run.bad, why)
            continue
        run.bad = 0
        run.opt.step()
        loss_store[step] = loss.item() / n
        if ctx.bar is not None and step % 50 == 0:
            ctx.bar.set_postfix(loss=f"{loss_store[step]:.3f}")
        if ctx.callback is not None and not latent_only and step % 100 == 0:
            ctx.callback(step, run.net, run.gg, loss_store[step])


def warm_up(ctx: FitContext) -> tuple[list[Run], list[np.ndarray]]:
    """``n_restarts`` warm-ups of ``ctx.warm`` steps from different seeds; returns the runs and their loss records.

    They use the L1 warm-up prior (the requested prior when there is no warm-up). Several warm-ups run as one
    batched model (:func:`run_steps_batched`); each keeps its own initialisation and minibatch sequence.
    """
    cfg = ctx.cfg
    prior = ctx.warm_prior if ctx.warm else ctx.prior
    runs = [Run(ctx, prior, cfg.seed + 7919 * r) for r in range(cfg.n_restarts)]
    stores = [np.full(cfg.num_steps, np.nan) for _ in runs]
    if len(runs) > 1 and ctx.warm:
        run_steps_batched(ctx, runs, range(0, ctx.warm), stores)
    else:
        for run, store in zip(runs, stores):
            run_steps(ctx, run, range(0, ctx.warm), store, main=False)
    return runs, stores


class _NegativeELBO(torch.nn.Module):
    """One run's network and edge guide; ``forward(x, env, idx)`` is the minibatch's negative ELBO.

    For guides whose sites are all reparameterised (every guide here), this is the value and gradient of
    Pyro's ``Trace_ELBO.differentiable_loss`` on the same draws (``tests/test_models.py`` checks it), computed
    from the guide's trace and the model's trace replayed against it, without the ``.item()`` calls and NaN
    checks that keep ``Trace_ELBO`` from running under ``torch.func.vmap``.
    """

    def __init__(self, run: Run, prior: EdgePrior, noise: NoiseFamily, n_total: int):
        super().__init__()
        self.net, self.gg = run.net, run.gg
        self.prior, self.noise, self.n_total = prior, noise, n_total

    def forward(self, x: torch.Tensor, env: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        kw = dict(net=self.net, prior=self.prior, noise=self.noise, n_total=self.n_total, subsample=idx,
                  global_guide=self.gg)
        guide_tr = poutine.trace(latent_causal_guide).get_trace(x, env, **kw)
        model_tr = poutine.trace(poutine.replay(latent_causal_model, trace=guide_tr)).get_trace(x, env, **kw)
        return guide_tr.log_prob_sum() - model_tr.log_prob_sum()


def run_steps_batched(ctx: FitContext, runs: list[Run], steps: range, stores: list[np.ndarray]) -> None:
    """Warm-up steps ``steps`` of several runs at once: one forward and backward pass of all of them.

    The runs' parameters are stacked along a leading restart dimension (``torch.func.stack_module_state``) and
    the negative ELBO of :class:`_NegativeELBO` is mapped over it with ``torch.func.vmap``; each run draws its
    own minibatch from its own row order, as in :func:`run_steps`, and the latent draws share one standard
    normal draw per step. Adam is elementwise, so one Adam over the stacked tensors is one Adam per run. Each
    run's gradient is clipped to norm 100 on its own, and a run whose loss or gradient is not finite skips the
    step (its parameters and Adam moments are restored) exactly as in :func:`run_steps`. The stacked values are
    copied back into the runs' modules for the argument checks, for the callback and at the end. 1.5-1.9x faster than the runs
    one after another (BENCHMARKS.md, "Fit time and where it goes").
    """
    from torch.func import functional_call, stack_module_state, vmap

    cfg, n, r_count = ctx.cfg, ctx.n, len(runs)
    objectives = [_NegativeELBO(run, ctx.warm_prior, ctx.noise, n) for run in runs]
    params, buffers = stack_module_state(objectives)
    base = copy.deepcopy(objectives[0]).to("meta")

    def loss_fn(p, b, x, env, idx):
        return functional_call(base, (p, b), (x, env, idx))

    batched_loss = vmap(loss_fn, randomness="same")
    tensors = list(params.values())
    opt = _adam(tensors, cfg.lr)

    def sync() -> None:
        with torch.no_grad():
            for r, obj in enumerate(objectives):
                for name, p in obj.named_parameters():
                    p.copy_(params[name][r])

    for step in steps:
        idx = torch.stack([_next_minibatch(run, n, cfg.batch_size) for run in runs])
        why = [None] * r_count
        if step == steps.start or any(run.bad for run in runs):
            # the argument and support checks of run_steps, run on each run's own model outside vmap
            sync()
            for r, run in enumerate(runs):
                try:
                    with torch.no_grad(), pyro.validation_enabled(True), warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "Encountered NaN", UserWarning)
                        xb, eb, ib = ctx.batch(idx[r])
                        ctx.elbo.differentiable_loss(latent_causal_model, latent_causal_guide, xb, eb, net=run.net,
                                                     prior=ctx.warm_prior, noise=ctx.noise, n_total=n,
                                                     subsample=ib, global_guide=run.gg)
                except ValueError as err:
                    why[r] = str(err).splitlines()[0]
        opt.zero_grad()
        with pyro.validation_enabled(False):
            loss = batched_loss(params, buffers, *ctx.batch(idx))
        ok = torch.isfinite(loss) & torch.tensor([w is None for w in why], device=loss.device)
        torch.where(ok, loss, torch.zeros_like(loss)).sum().backward()
        with torch.no_grad():
            graded = [t for t in tensors if t.grad is not None]  # e.g. the gamma shape has none with other noise
            norm = torch.stack([t.grad.flatten(1).pow(2).sum(1) for t in graded]).sum(0).sqrt()
            ok &= torch.isfinite(norm)
            coef = torch.where(ok, (100.0 / (norm + 1e-6)).clamp(max=1.0), torch.zeros_like(norm))
            for t in graded:
                t.grad.copy_(torch.where(ok.view(-1, *[1] * (t.dim() - 1)), t.grad, 0.0))
                t.grad.mul_(coef.view(-1, *[1] * (t.dim() - 1)))
            bad = (~ok).nonzero().flatten().tolist()
            kept = [(t, t[bad].clone(), {k: v[bad].clone() for k, v in opt.state.get(t, {}).items()
                                         if v.dim() > 0 and v.shape[0] == r_count}) for t in tensors] if bad else []
            opt.step()
            for t, value, state in kept:
                t[bad] = value
                for k, v in state.items():
                    opt.state[t][k][bad] = v
        if ctx.bar is not None:
            ctx.bar.update(r_count)
        for r, run in enumerate(runs):
            if r in bad:
                run.bad += 1
                run.n_rej += 1
                if run.bad >= cfg.max_bad_steps:
                    sync()
                    raise _non_finite_error(f"step {step} of warm-up {r}", run.bad, why[r])
            else:
                run.bad = 0
                stores[r][step] = loss[r].item() / n
        if ctx.bar is not None and step % 50 == 0:
            ctx.bar.set_postfix(loss=f"{np.nanmin([s[step] for s in stores]):.3f}")
        if ctx.callback is not None and step % 100 == 0:
            sync()
            for r, run in enumerate(runs):
                ctx.callback(step, run.net, run.gg, stores[r][step])
    sync()


def identify(ctx: FitContext, run: Run, n_starts: int) -> float:
    """Re-express ``run``'s latents in the sparsest linear coordinates (:func:`bayes_crl.unmix.sparse_unmixing`
    from ``n_starts`` starts); each identified latent stays in the slot it came from. Returns the sparsity loss."""
    z = ctx.latents(run)
    a, b, loss = unmixing.sparse_unmixing(z, ctx.es_np, seed=ctx.cfg.seed, n_starts=n_starts)
    perm = match_latents(z, z @ a + b)[0]
    a, b = a[:, perm], b[perm]
    run.net.apply_linear_map(ctx.matrix(a), ctx.matrix(b))
    return loss


def identify_warm_ups(ctx: FitContext, runs: list[Run]) -> list[float] | None:
    """With ``unmix``, :func:`identify` each warm-up (``WARMUP_UNMIX_STARTS`` starts); their losses, or ``None``."""
    if not (ctx.cfg.unmix and ctx.warm and ctx.n_latents > 1):
        return None
    unmix_loss = [identify(ctx, run, WARMUP_UNMIX_STARTS) for run in runs]
    ctx.history["unmix_loss"] = unmix_loss
    return unmix_loss


@torch.no_grad()
def _regression_init(net: LatentCausalNet, z: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Per-environment least squares of each latent on the earlier slots (identity features), on the CPU
    (``z`` (N, l), ``env`` (N,)).

    Sets the noise locations/scales of ``net`` from the residuals and returns the strengths (E, l, l) on
    ``net``'s device.
    """
    e, l = net.n_envs, net.n_latents
    w = torch.zeros(e, l, l)
    loc = torch.zeros(e, l)
    log_scale = torch.zeros(e, l)
    for u in range(e):
        zu = z[env == u]
        if len(zu) < 2:
            continue
        for i in range(l):
            a = torch.cat([torch.ones(len(zu), 1), zu[:, :i]], 1)
            g = a.T.double() @ a.double() + 1e-6 * torch.eye(i + 1, dtype=torch.float64)
            coef = torch.linalg.solve(g, a.T.double() @ zu[:, i].double()).to(z.dtype)
            w[u, :i, i] = coef[1:]
            r = zu[:, i] - zu[:, :i] @ coef[1:]
            loc[u, i], log_scale[u, i] = r.mean(), r.std().clamp(min=1e-3).log()
    net.noise_loc.copy_(loc)
    net.noise_log_scale.copy_(log_scale)
    return w.to(net.mask.device) * net.mask


def _agreement(zs: list[np.ndarray]) -> np.ndarray:
    """Mean matched absolute correlation of each run's latents with every other run's (R,)."""
    r = len(zs)
    a = np.zeros((r, r))
    for i in range(r):
        for j in range(i + 1, r):
            a[i, j] = a[j, i] = mpc(zs[i], zs[j])
    return a.sum(1) / max(r - 1, 1)


def warm_up_loss(store: np.ndarray, warm: int) -> float:
    """A warm-up's negative ELBO per row: the mean training loss over the last tenth of its ``warm`` steps
    (``store`` (num_steps,), ``nan`` where a step was rejected); ``inf`` when none of those steps was taken."""
    tail = store[warm - max(1, warm // 10):warm]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if len(tail) else math.inf


def _select_restart(agree: np.ndarray, warm_loss: list[float],
                    unmix_loss: list[float] | None) -> tuple[int, np.ndarray]:
    """The warm-up to keep, and which warm-ups count (for the order votes).

    ``agree`` (R,): each warm-up's mean matched correlation with the others' latents; ``warm_loss`` (R,): each
    warm-up's negative ELBO per row (:func:`warm_up_loss`); ``unmix_loss`` (R,) or ``None``: the
    partial-correlation loss of each warm-up's identified coordinates. Among the warm-ups within
    ``RESTART_OUTLIER_DROP`` of the median agreement, the one best on both counts is kept: the lowest sum of its
    rank by loss and its rank by unmixing loss, ties going to the lower loss (by loss alone without unmixing
    losses). Each criterion alone keeps a bad warm-up on some generators: the loss on the project's simulator
    (a warm-up whose root is mixed can fit the data better), the sparsity on data this project did not generate
    (its optimum is off the truth there); BENCHMARKS.md, "Restart selection". The guard is against a warm-up
    that lost a latent (the generalise suite's ``chain3-vanish3`` seed 0: one warm-up agreed 0.573 with the
    others, 0.852-0.858 was the norm, and its coordinate close to noise was the sparsest).
    """
    agree = np.asarray(agree, dtype=float)
    kept = agree >= np.median(agree) - RESTART_OUTLIER_DROP

    def rank(values) -> np.ndarray:  # 0 for the lowest among the kept warm-ups
        return np.argsort(np.argsort(np.where(kept, np.asarray(values, dtype=float), np.inf), kind="stable"),
                          kind="stable")

    by_loss = rank(warm_loss)
    score = by_loss if unmix_loss is None else (by_loss + rank(unmix_loss)) * len(kept) + by_loss
    return int(np.argmin(np.where(kept, score, len(kept) ** 3))), kept


def order_votes(ctx: FitContext, runs: list[Run], best: int, kept: np.ndarray) -> np.ndarray:
    """Order scores (l, 2^l) summed over the counted warm-ups, each aligned to the kept run's latents."""
    zs = [ctx.latents(run) for run in runs]
    tables = np.zeros((ctx.n_latents, 2**ctx.n_latents))
    for z in (z for z, k in zip(zs, kept) if k):
        perm = match_latents(zs[best], z)[0]
        tables += align_scores(local_scores(z, ctx.es_np, noise=ctx.noise.name), np.asarray(perm))
    return tables


def select_restart(ctx: FitContext, runs: list[Run], stores: list[np.ndarray],
                   unmix_loss: list[float] | None = None) -> tuple[int, np.ndarray | None]:
    """The index of the warm-up to keep (:func:`_select_restart`, from the loss records ``stores`` of
    :func:`warm_up` and the unmixing losses of :func:`identify_warm_ups`) and, with the built-in order search
    and at most ``MAX_VOTE_LATENTS`` latents, the pooled order votes of the warm-ups (``None`` otherwise)."""
    cfg = ctx.cfg
    if cfg.n_restarts <= 1:
        return 0, None
    sub = torch.randperm(ctx.n, generator=torch.Generator().manual_seed(cfg.seed))[:AGREEMENT_ROWS]
    agree = _agreement([encode(run.net, ctx.x[sub], ctx.env[sub]).numpy() for run in runs])
    warm_loss = [warm_up_loss(store, ctx.warm) for store in stores]
    best, kept = _select_restart(agree, warm_loss, unmix_loss)
    ctx.history["restart_agreement"] = agree.tolist()
    ctx.history["restart_loss"] = warm_loss
    ctx.history["restart_selected"] = best
    ctx.history["restart_excluded"] = [r for r in range(cfg.n_restarts) if not kept[r]]
    if cfg.order_search is True and ctx.n_latents <= MAX_VOTE_LATENTS:
        return best, order_votes(ctx, runs, best, kept)
    return best, None


def search_order(ctx: FitContext, run: Run, tables: np.ndarray | None = None, shared: bool = False) -> tuple:
    """Search the causal order of ``run``'s latents and permute its slots to it; returns the composed order
    (new slot k = warm-up slot ``order[k]``).

    From pooled order ``tables`` when given, else with ``cfg.order_search`` when it is a callable, else with
    :func:`bayes_crl.order.best_order` (``shared``: the model's mechanism class as the score) up to
    ``MAX_SEARCH_LATENTS`` latents, and beyond with :func:`bayes_crl.order.greedy_order` (free score).
    """
    l = ctx.n_latents
    if tables is not None:
        new_order = best_order_from_scores(tables)[0]
    elif callable(ctx.cfg.order_search):
        new_order = list(ctx.cfg.order_search(ctx.latents(run), ctx.es_np))
    elif l <= MAX_SEARCH_LATENTS:
        new_order = best_order(ctx.latents(run), ctx.es_np, noise=ctx.noise.name, shared=shared)[0]
    else:  # beyond the exact search: hill climbing over orders from the current slot order
        new_order = greedy_order(ctx.latents(run), ctx.es_np, seed=ctx.cfg.seed)[0]
    if new_order == list(range(l)):
        return ctx.order
    run.net.permute_latents(torch.as_tensor(new_order, device=ctx.device))
    return tuple(ctx.order[k] for k in new_order)


def centre(ctx: FitContext, run: Run) -> None:
    """Centre the strengths on zero in the slot order (:func:`bayes_crl.unmix.centring_map`)."""
    a = unmixing.centring_map(ctx.latents(run), ctx.es_np)
    ctx.history.setdefault("centring_shift", []).append(float(np.abs(a - np.eye(ctx.n_latents)).max()))
    # Not rescaled to the model's normalised noise scale (bayes_crl.unmix.residual_scale): that made the
    # refitted noise match the latents exactly, and their small errors then came out as edges (random l=5
    # SHD 4, 8, 5 against 2, 1, 1; BENCHMARKS.md). Left as is, the refit's noise scale is somewhat larger than
    # the latents' residual scale.
    run.net.apply_linear_map(ctx.matrix(a), ctx.matrix(np.zeros(ctx.n_latents)))


def restart_edge_posterior(ctx: FitContext, run: Run) -> None:
    """A fresh edge posterior for the requested prior, started from per-environment least squares in the
    current slots (which also resets the noise parameters), and a new optimizer at the current learning rate."""
    run.gg = GlobalGuide(ctx.prior, ctx.n_envs, ctx.n_latents).to(ctx.device)
    run.gg.init_from_weights(_regression_init(run.net, encode(run.net, ctx.xs, ctx.es), ctx.es))
    run.params = list(run.net.parameters()) + list(run.gg.parameters())
    run.opt = _adam(run.params, run.opt.param_groups[0]["lr"])


def recheck(ctx: FitContext, run: Run, step: int) -> None:
    """At ``recheck_frac``: identify the latents again (one descent), search the order, centre, and restart the
    edge posterior when the coordinates or the order changed."""
    unmix = ctx.cfg.unmix
    if unmix:
        ctx.history["unmix_loss_recheck"] = identify(ctx, run, LATER_UNMIX_STARTS)
    new = search_order(ctx, run)
    if unmix:
        centre(ctx, run)
    changed = new != ctx.order
    if changed:
        ctx.order = new
        ctx.history["order_changed_at"] = step
    if changed or unmix:  # new slots or new coordinates: restart the edge posterior from least squares
        restart_edge_posterior(ctx, run)


def final_identification(ctx: FitContext, run: Run) -> bool:
    """Identify the final latents: with ``unmix`` one descent of the unmixing, then the order search with the
    shared score and the centring. Returns whether the coordinates or the order changed
    (then the latent model is refitted)."""
    unmix = ctx.cfg.unmix
    if unmix:
        ctx.history["unmix_loss_final"] = identify(ctx, run, LATER_UNMIX_STARTS)
    # The final latents are the sharpest: score orders with the model's own mechanism class (one function per
    # edge shared by all environments times a strength per environment; bayes_crl.order), which orients edges
    # better than free per-environment regressions on fitted latents (BENCHMARKS.md). Earlier searches keep the
    # free score: on warm-up latents the shared one did worse.
    new = search_order(ctx, run, shared=True)
    changed = new != ctx.order
    ctx.history["final_order_changed"] = changed
    ctx.order = new
    if unmix:
        centre(ctx, run)
    return changed or unmix


def refit_latent_model(ctx: FitContext, run: Run) -> None:
    """Refit the latent causal model (mechanisms, noise, edge posterior) for ``refit_frac * num_steps`` steps
    with the encoder, the decoder and the shift held fixed, on the latent-only ELBO, so the final latents are
    exactly the identified coordinates and the edges are learned in the final order."""
    cfg = ctx.cfg
    restart_edge_posterior(ctx, run)
    fixed = {id(p) for m in (run.net.encoder, run.net.decoder) for p in m.parameters()}
    fixed.add(id(run.net.shift))  # the centred coordinates are kept: only the prior would move them
    run.params = [p for p in run.net.parameters() if id(p) not in fixed] + list(run.gg.parameters())
    run.opt = _adam(run.params, cfg.lr)
    n_refit = max(1, int(cfg.refit_frac * cfg.num_steps))
    refit = np.full(n_refit, np.nan)
    if ctx.bar is not None:
        ctx.bar.total += n_refit
    held = [p for p in run.net.parameters() if id(p) in fixed and p.requires_grad]
    for p in held:  # no backward pass through the fixed encoder (about a third of a refit step)
        p.requires_grad_(False)
    try:
        run_steps(ctx, run, range(n_refit), refit, latent_only=True)
    finally:
        for p in held:
            p.requires_grad_(True)
    ctx.history["refit_losses"] = refit.tolist()


def _stage_state(ctx: FitContext, run: Run) -> dict:
    """What a stage between SVI segments changes: the run's parameters, the slot order, the diagnostics and the
    loss record."""
    return {"net": run.net.state_dict(), "global_guide": run.gg.state_dict(), "order": ctx.order,
            "history": ctx.history, "losses": ctx.losses}


def _load_stage_state(ctx: FitContext, run: Run, state: dict) -> None:
    """Take over a stage's result computed in another process (:func:`_stage_state` there)."""
    run.gg = GlobalGuide(ctx.prior, ctx.n_envs, ctx.n_latents).to(ctx.device)
    run.net.load_state_dict(state["net"])
    run.gg.load_state_dict(state["global_guide"])
    run.params = list(run.net.parameters()) + list(run.gg.parameters())
    run.opt = _adam(run.params, run.opt.param_groups[0]["lr"])
    ctx.order, ctx.history = tuple(state["order"]), dict(state["history"])
    ctx.losses = np.asarray(state["losses"], dtype=np.float64).copy()


def run_once(ctx: FitContext, run: Run, stage, name: str, main_phase=None) -> None:
    """Run ``stage()`` (a stage between SVI segments, which changes ``run`` and ``ctx``) in one process.

    With a ``main_phase`` that spans several processes and offers ``once(fn) -> (value, ran_here)`` (:class:`
    bayes_crl.distributed.LightningSteps`), the stage runs in process 0 only and every other process takes over its
    result (parameters, order, diagnostics, losses); ``name`` is then recorded in ``ctx.history["stages_received"]``
    of those processes. Otherwise ``stage()`` simply runs here.
    """
    once = getattr(main_phase, "once", None)
    if once is None:
        stage()
        return
    state, ran_here = once(lambda: (stage(), _stage_state(ctx, run))[1])
    if not ran_here:
        received = ctx.history.get("stages_received", [])
        _load_stage_state(ctx, run, state)
        ctx.history["stages_received"] = received + [name]
