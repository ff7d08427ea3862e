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
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO

from bayes_crl.guides import GlobalGuide, latent_causal_guide
from bayes_crl.models import LatentCausalNet, latent_causal_model
from bayes_crl.noise import NoiseFamily
from bayes_crl.order import best_order
from bayes_crl.priors import EdgePrior, LaplacePrior

__all__ = ["FitResult", "fit_svi", "NonFiniteLossError", "encode"]


MAX_SEARCH_ROWS = 100_000
SCALE_REFIT_ROWS = 20_000
# a warm-up agreeing this much less than the median warm-up with the others is not kept (:func:`_select_restart`)
RESTART_OUTLIER_DROP = 0.2


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


@torch.no_grad()
def _regression_init(net: LatentCausalNet, z: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """Per-environment least squares of each latent on the earlier slots (identity features).

    Sets the noise locations/scales of ``net`` from the residuals and returns the strengths (E, l, l).
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
    return w * net.mask


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where the parameters' device has one: one update for all the (many, small)
    tensors instead of a Python loop over them (about 3 ms of a 20 ms step on 2 CPU cores, BENCHMARKS.md,
    session 12)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr)


def _select_restart(agree: np.ndarray, unmix_loss: list[float] | None) -> tuple[int, np.ndarray]:
    """The warm-up to keep, and which warm-ups count (for the order votes).

    ``agree`` (R,): each warm-up's mean matched correlation with the others' latents; ``unmix_loss`` (R,) or
    ``None``: the partial-correlation loss of each warm-up's identified coordinates. Without the losses, the most
    agreeing run. With them, the sparsest run among those within ``RESTART_OUTLIER_DROP`` of the median
    agreement: a warm-up that lost a latent (learned one coordinate as something close to noise) can have the
    sparsest partial correlations of all, since a coordinate independent of the others is trivially sparse.
    Measured on the generalise suite's ``chain3-vanish3`` seed 0 (session 12): the kept warm-up agreed 0.573
    with the others (they agreed 0.852-0.858), and the fit ended at MPC 0.663 with the middle latent at 0.15.
    Over the other 27 fits of session 12 the largest drop below the median was 0.17 (chain3-gauss seed 4, a run
    not kept), so the guard changes no other fit of that session.
    """
    agree = np.asarray(agree, dtype=float)
    if unmix_loss is None:
        return int(np.argmax(agree)), np.ones(len(agree), dtype=bool)
    kept = agree >= np.median(agree) - RESTART_OUTLIER_DROP
    return int(np.argmin(np.where(kept, np.asarray(unmix_loss, dtype=float), np.inf))), kept


class _Run:
    """Mutable state of one SVI run (one initialisation)."""

    def __init__(self, x, env, *, n_latents, n_envs, prior, hidden, nonlinear, lr, seed, encoder_env=True,
                 min_obs_scale=0.0, full_cov=False):
        torch.manual_seed(seed)
        self.net = LatentCausalNet(x.shape[1], n_envs, n_latents, hidden=hidden, nonlinear=nonlinear,
                                   encoder_env=encoder_env, min_obs_scale=min_obs_scale, full_cov=full_cov)
        self.gg = GlobalGuide(prior, n_envs, n_latents)
        self.params = list(self.net.parameters()) + list(self.gg.parameters())
        self.opt = _adam(self.params, lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm_rows = torch.randperm(x.shape[0], generator=self.gen)
        self.pos = self.bad = self.n_rej = 0


def _agreement(zs: list[np.ndarray]) -> np.ndarray:
    """Mean matched absolute correlation of each run's latents with every other run's (R,)."""
    from bayes_crl.metrics import mpc

    r = len(zs)
    a = np.zeros((r, r))
    for i in range(r):
        for j in range(i + 1, r):
            a[i, j] = a[j, i] = mpc(zs[i], zs[j])
    return a.sum(1) / max(r - 1, 1)


def fit_svi(x: torch.Tensor, env: torch.Tensor, *, n_latents: int, n_envs: int, prior: EdgePrior,
            noise: NoiseFamily, num_steps: int = 3000, batch_size: int = 256, lr: float = 3e-3,
            warmup_frac: float = 0.3, recheck_frac: float = 0.6, order_search=True, nonlinear: bool = True, hidden: int = 64,
            n_restarts: int = 1, encoder_env: bool = True, min_obs_scale: float = 0.0, unmix: bool = True,
            final_order_check: bool = True, final_shared_score: bool = True, refit_frac: float = 0.15,
            later_unmix: str = "local", warmup_unmix: str = "global", flat_direction: str = "children",
            refit_scales: bool = False, guide_cov: str = "full", seed: int = 0, max_bad_steps: int = 50,
            progress: bool = False, callback=None, checkpoint_dir: str | None = None, checkpoint_every: int = 500,
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
        Steps of the selected run (warm-up included).
    batch_size : int
    lr : float
        Adam learning rate (cosine-decayed to 10 % over the main phase).
    warmup_frac : float
        Fraction of steps before the restart selection and the order search.
    recheck_frac : float
        A second order search at this fraction of the steps (the latents are sharper by then); when it
        changes the order, the slots are permuted and the edge posterior restarts from least squares.
    order_search : bool or callable
        Whether to search the causal order after the warm-up; a callable ``(z (N, l), env (N,)) -> order``
        replaces the built-in search (for experiments).
    n_restarts : int
        Independent warm-ups from different initialisations. With ``unmix`` the run whose identified
        coordinates are sparsest is kept, among the runs whose latents agree with the others' (mean matched
        correlation) no less than ``RESTART_OUTLIER_DROP`` below the median run's; otherwise the most agreeing run.
        The ELBO does not single out good runs. Costs ``n_restarts * warmup`` extra steps.
    unmix : bool
        After the warm-ups, re-express each run's latents in the linear coordinates with the sparsest
        per-environment partial correlations (:func:`bayes_crl.unmix.sparse_unmixing`) and keep the run
        whose coordinates are sparsest (instead of the most agreeing one); again at ``recheck_frac`` when the
        order is rechecked, and on the final latents. The ELBO is nearly flat along linear maps of the latents;
        this sparsity is what identifies them. After each order search that follows an unmixing, the strengths
        are centred (:func:`bayes_crl.unmix.centring_map`): the unmixing leaves the flat direction
        ``z_i - c z_j`` at the median strength, the centring moves it to the centred representative that the
        default horseshoe prior prefers (:func:`bayes_crl.unmix.centring_map`, pooled).
    later_unmix : {"local", "global", "off"}
        How the unmixings at ``recheck_frac`` and on the final latents search. ``"local"`` (default): one
        descent from the current coordinates, which corrects them without leaving their basin. ``"global"``:
        the 64-start search of the warm-ups. ``"off"``: no unmixing after the warm-ups (centring only). The
        sparsity criterion is biased by nonlinear mechanisms: its global minimum on the *true* latents of the
        chain benchmark is at MPC 0.93-0.99, not 1, and on fitted latents a global search often jumps to a
        wrong basin (chain seed 2: 0.955 before the recheck, 0.845 after). Measured on the 8 identifiable
        benchmark fits (session 8): ``"global"`` chain MPC min 0.872, pooled edge AUROC 0.917, Brier 0.080;
        ``"local"`` min 0.945, 0.948, 0.074 (both with ``min_effect`` 0.05); ``"off"`` broke random 5-latent
        graphs (MPC 0.84-0.86, SHD 8).
    warmup_unmix : {"global", "local"}
        The same for the unmixing of each warm-up (default ``"global"``: 64 starts). ``"local"`` everywhere was
        measured in session 8 (35 fits, ``benchmarks/recovery.py --fit-svi-kw '{"warmup_unmix": "local"}'``):
        better on the chain (every seed >= 0.955, edge AUROC 0.99) and on other generators (mean MPC 0.922 ->
        0.941, Brier 0.165 -> 0.153), worse on random 5-latent graphs (median SHD 1 -> 2, one fit 0.906 ->
        0.860), so it is not the default.
    flat_direction : {"children", "centre"}
        How the final coordinates settle the flat direction ``z_i - c z_j`` (``j`` a parent of ``i``), which the
        likelihood leaves open. ``"centre"``: the centring convention for every latent
        (:func:`bayes_crl.unmix.centring_map`). ``"children"`` (default): after that centring, every latent
        with children takes the ``c`` under which it carries its children's dependence on its parents
        (:func:`bayes_crl.unmix.children_map`; with any other ``c`` its parent becomes a spurious parent of its
        child, a false grandparent edge); sinks keep the centred ``c``, and a shift that would absorb a genuine
        triangle edge is not applied, nor one fitted to edges too weak to be told from estimation error
        (``bayes_crl.unmix.MIN_EDGE_EFFECT``). Only on the final latents (with ``unmix`` and ``final_order_check``).
        Session 9, chain l = 3, 5 seeds, same fits otherwise: the middle latent's correlation with the truth
        0.942 -> 0.985 (seed 0), 0.987 -> 0.993, 0.991 -> 0.995, two seeds unchanged (the shift was rejected);
        SHD 0 on 2 -> 4 of 5 (BENCHMARKS.md).
    final_order_check : bool
        Search the order once more on the final latents (with ``unmix``: unmix them first and centre them in
        the order found); if it differs from the slot order, or the latents were unmixed and centred, refit the
        latent causal model for ``refit_frac * num_steps`` steps with the encoder, the decoder and the linear
        shift between them held fixed, so the final latents are exactly the identified, centred ones (the
        latent-only ELBO, ``latent_only=True`` in the model). On the chain benchmark the order found on the
        final latents was right where the one fixed at ``recheck_frac`` was wrong.
    final_shared_score : bool
        Score that final order search with the model's mechanism class (``bayes_crl.order.local_scores`` with
        ``shared=True``) instead of free per-environment regressions. Measured on the final fitted latents of 29
        saved benchmark fits (``benchmarks/order_scores.py``, session 6): 52 of 61 true edges put forward against
        43 of 61; in the fit, chain l = 3 SHD 0 on 2/5 seeds (1/5 before) and random l = 5 SHD 2, 0, 1 (2, 1, 1
        before).
    refit_scales : bool
        After each linear map of the latents (unmixing, centring, children map), refit the encoder's posterior
        scales to the new coordinates (:meth:`bayes_crl.models.LatentCausalNet.apply_linear_map`) on up to
        ``SCALE_REFIT_ROWS`` rows; otherwise the guide keeps the old coordinates' scales until training moves
        them, and the final refit (encoder fixed) never does. The warm-up unmixing shrinks the latents to about
        0.6 of their size, so without the refit ``q`` is then about 1.7 times too wide and the reconstruction
        term loses about 4 nats per row until the main phase retrains the encoder. Off by default, as measured
        (session 11, ``benchmarks/recovery.py --only random5-gauss,chain3-gauss --fit-svi-kw
        '{"refit_scales": true}'``, 5 seeds each): the latents are unchanged (MPC within 0.004 except one fit,
        0.908 -> 0.931) and the graphs are worse: chain l = 3 SHD 0 on 4/5 -> 2/5 seeds, Brier 0.042 -> 0.053;
        random l = 5 SHD 2, 0, 2, 3, 1 -> 2, 0, 4, 4, 0, Brier 0.071 -> 0.089.
    guide_cov : {"full", "diag"}
        Posterior covariance of the amortized guide ``q(z | x, u)``: ``"full"`` (default; a per-row unit triangular
        factor from an extra encoder head, :class:`bayes_crl.guides.ShiftedNormal`) or ``"diag"`` (mean-field).
        The factor is reset to zero (mean-field) after every linear map of the latents and retrained. Measured
        in session 11 (``benchmarks/recovery.py --only random5-gauss,chain3-gauss --fit-svi-kw '{"guide_cov":
        "full"}'``, 5 seeds each, against the mean-field rows of session 9): chain l = 3 MPC 0.983, 0.990, 0.914,
        0.954, 0.981 -> 0.992, 0.995, 0.993, 0.989, 0.990, Brier 0.042 -> 0.023; random l = 5 MPC median 0.924 ->
        0.957, SHD 2, 0, 2, 3, 1 -> 3, 0, 0, 4, 0, Brier 0.071 -> 0.058, mean AUROC 0.955 -> 0.973. The rotated
        parent-child pairs of session 10 are gone on chain seed 2 and random seed 2 (not on random seeds 0
        and 3).
    refit_frac : float
        Length of that refit as a fraction of ``num_steps`` (steps without the decoder are cheaper).
    encoder_env : bool
        Whether the encoder sees the environment (``q(z | x, u)``) or only ``x`` (``q(z | x)``).
    min_obs_scale : float
        Lower bound of the decoder's observation noise scale (standardised units).
    seed : int
    max_bad_steps : int
        Consecutive non-finite steps tolerated before :class:`NonFiniteLossError`. Pyro's and torch's argument
        and support checks (``pyro.enable_validation``) run on the first step of each phase and on every step
        after a rejected one, so the error names the check that failed; in between they are off (they cost
        about 15 % of a step) and a value they would reject shows up as a non-finite loss, rejected the same way.
    progress : bool
        Show progress: tqdm's bar in notebooks and terminals, a plain line every 5 % otherwise
        (:mod:`bayes_crl.progress`).
    callback : callable, optional
        ``callback(step, net, global_guide, loss)`` called every 100 steps of the kept run (for monitoring).
    checkpoint_dir : str, optional
        Write a checkpoint (safetensors + JSON manifest with SHA-256, written atomically) every
        ``checkpoint_every`` steps of the main phase: parameters, optimizer state, RNG states, step.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir``; on CPU the result is bitwise identical to an
        uninterrupted fit. The checkpoint must have been written for the same data and settings.

    Returns
    -------
    FitResult
    """
    if later_unmix not in ("local", "global", "off"):
        raise ValueError(f"The 'later_unmix' argument of fit_svi must be one of 'local', 'global', 'off'. "
                         f"Got {later_unmix!r} instead.")
    if flat_direction not in ("children", "centre"):
        raise ValueError(f"The 'flat_direction' argument of fit_svi must be 'children' or 'centre'. Got "
                         f"{flat_direction!r} instead.")
    if warmup_unmix not in ("local", "global"):
        raise ValueError(f"The 'warmup_unmix' argument of fit_svi must be 'local' or 'global'. Got {warmup_unmix!r} "
                         "instead.")
    n, d = x.shape
    if guide_cov not in ("diag", "full"):
        raise ValueError(f"The 'guide_cov' argument of fit_svi must be 'diag' or 'full'. Got {guide_cov!r} instead.")
    mk = dict(n_latents=n_latents, n_envs=n_envs, prior=prior, hidden=hidden, nonlinear=nonlinear, lr=lr,
              encoder_env=encoder_env, min_obs_scale=min_obs_scale, full_cov=guide_cov == "full")
    # Warm-ups use the paper's point-estimate L1 prior whatever the final prior: with variational strengths
    # the early fit collapses towards independent (noise-like) latents and loses the graph.
    warm_prior = LaplacePrior()
    warm = max(1, int(warmup_frac * num_steps)) if (order_search or n_restarts > 1) else 0
    warm = min(warm, num_steps)
    elbo = Trace_ELBO()
    losses = np.full(num_steps, np.nan)
    order = tuple(range(n_latents))
    history: dict = {}
    total = n_restarts * warm + (num_steps - warm)
    bar = None
    if progress:
        from bayes_crl.progress import progress_bar

        bar = progress_bar(total, "SVI")

    def run_steps(run: _Run, steps, main: bool, loss_store: np.ndarray | None, latent_only: bool = False):
        step_prior = prior if main else warm_prior
        for step in steps:
            if main and not latent_only and checkpoint_dir is not None and step > steps.start and step % checkpoint_every == 0:
                save_training_state(checkpoint_dir, modules={"net": run.net, "global_guide": run.gg},
                                    optimizer=run.opt, generators={"rows": run.gen},
                                    tensors={"perm_rows": run.perm_rows, "losses": torch.from_numpy(losses)},
                                    meta={"step": step, "pos": run.pos, "bad": run.bad, "n_rejected": run.n_rej,
                                          "order": list(order), "config": config})
            if run.pos + batch_size > n:
                run.perm_rows, run.pos = torch.randperm(n, generator=run.gen), 0
            idx = run.perm_rows[run.pos:run.pos + batch_size]
            run.pos += batch_size
            if main:
                frac = (step / max(1, len(steps)) if latent_only else (step - warm) / max(1, num_steps - warm))
                for g in run.opt.param_groups:
                    g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            run.opt.zero_grad()
            # Pyro's and torch's argument and support checks cost about 15 % of a step. They run on the first step
            # of each phase and after a bad step (so a failure is explained by their message); a NaN they would
            # have caught otherwise shows up as a non-finite loss, which is rejected the same way.
            try:
                with pyro.validation_enabled(step == steps.start or run.bad > 0), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Encountered NaN", UserWarning)  # rejected below
                    loss = elbo.differentiable_loss(latent_causal_model, latent_causal_guide, x[idx], env[idx],
                                                    net=run.net, prior=step_prior, noise=noise, n_total=n,
                                                    subsample=idx, global_guide=run.gg, latent_only=latent_only)
                why = None
            except ValueError as err:  # Pyro/torch argument validation rejects NaN parameters of a distribution
                loss, why = torch.tensor(float("nan")), str(err).splitlines()[0]
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                # the total gradient norm is finite exactly when every gradient is (one check, not one per tensor);
                # clipping a non-finite gradient is harmless, the step is skipped and the gradient cleared
                ok = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(run.params, 100.0)))
            if bar is not None:
                bar.update(1)
            if not ok:
                run.bad += 1
                run.n_rej += 1
                if run.bad >= max_bad_steps:
                    raise NonFiniteLossError(
                        f"SVI stopped at step {step}: {run.bad} consecutive steps gave a non-finite loss or "
                        "gradient (likely causes: a learning rate too high, unscaled inputs with extreme values, or "
                        "a noise family whose support does not fit the data). Parameters are at the last good step."
                        + (f" Last error: {why}" if why else ""))
                continue
            run.bad = 0
            run.opt.step()
            if loss_store is not None:
                loss_store[step] = loss.item() / n
                if bar is not None and step % 50 == 0:
                    bar.set_postfix(loss=f"{loss_store[step]:.3f}")
            if callback is not None and loss_store is not None and not latent_only and step % 100 == 0:
                callback(step, run.net, run.gg, loss_store[step])

    # Order search and least-squares restarts use at most MAX_SEARCH_ROWS rows (a fixed random subset), so
    # their memory does not grow with N.
    if n > MAX_SEARCH_ROWS:
        sel = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:MAX_SEARCH_ROWS]
        xs, es = x[sel], env[sel]
    else:
        xs, es = x, env
    es_np = es.numpy()
    # rows on which the encoder's scale head is refitted after each linear map of the latents
    scale_rows: tuple = ()
    if refit_scales:
        pick = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed + 2))[:SCALE_REFIT_ROWS]
        scale_rows = (xs[pick], es[pick])

    def _search_and_permute(run: _Run, order: tuple, tables: np.ndarray | None = None, shared: bool = False) -> tuple:
        z = encode(run.net, xs, es).numpy()
        if tables is not None:
            from bayes_crl.order import best_order_from_scores

            new_order = best_order_from_scores(tables)[0]
        elif callable(order_search):
            new_order = list(order_search(z, es_np))
        elif n_latents <= 12:
            new_order = best_order(z, es_np, noise=noise.name, shared=shared)[0]
        else:
            new_order = list(range(n_latents))
        if new_order == list(range(n_latents)):
            return order
        run.net.permute_latents(torch.as_tensor(new_order))
        return tuple(order[k] for k in new_order)

    def _identify(run: _Run, later: bool = False) -> float | None:
        from bayes_crl.metrics import match_latents
        from bayes_crl.unmix import sparse_unmixing

        if later and later_unmix == "off":
            return None
        z = encode(run.net, xs, es).numpy()
        local = (later_unmix if later else warmup_unmix) == "local"
        a, b, loss = sparse_unmixing(z, es_np, seed=seed, n_starts=1 if local else 64)
        perm = match_latents(z, z @ a + b)[0]  # keep each identified latent in the slot it came from
        a, b = a[:, perm], b[perm]
        run.net.apply_linear_map(torch.as_tensor(a, dtype=x.dtype), torch.as_tensor(b, dtype=x.dtype), *scale_rows)
        return loss

    def _centre(run: _Run) -> None:
        from bayes_crl.unmix import centring_map

        z = encode(run.net, xs, es).numpy()
        a = centring_map(z, es_np)
        history.setdefault("centring_shift", []).append(float(np.abs(a - np.eye(n_latents)).max()))
        # Not rescaled to the model's normalised noise scale (bayes_crl.unmix.residual_scale): that made the
        # refitted noise match the latents exactly, and their small errors then came out as edges (random l=5
        # SHD 4, 8, 5 against 2, 1, 1; BENCHMARKS.md, session 5). Left as is, the refit's noise scale is
        # somewhat larger than the latents' residual scale.
        run.net.apply_linear_map(torch.as_tensor(a, dtype=x.dtype), torch.zeros(n_latents, dtype=x.dtype), *scale_rows)

    def _children(run: _Run) -> None:
        from bayes_crl.unmix import children_map

        z = encode(run.net, xs, es).numpy()
        a, info = children_map(z, es_np)
        history["children_map"] = info
        history["children_map_matrix"] = a.tolist()
        run.net.apply_linear_map(torch.as_tensor(a, dtype=x.dtype), torch.zeros(n_latents, dtype=x.dtype), *scale_rows)

    def _restart_prior(run: _Run, prior: EdgePrior) -> None:
        run.gg = GlobalGuide(prior, n_envs, n_latents)
        run.gg.init_from_weights(_regression_init(run.net, encode(run.net, xs, es), es))
        run.params = list(run.net.parameters()) + list(run.gg.parameters())
        run.opt = _adam(run.params, run.opt.param_groups[0]["lr"])

    with _RNGGuard(seed):
        config = None
        if checkpoint_dir is not None:
            from bayes_crl.persistence import CheckpointError, restore_training_state, save_training_state
            config = {"n": n, "d": d, "n_latents": n_latents, "n_envs": n_envs, "num_steps": num_steps,
                      "batch_size": batch_size, "lr": lr, "seed": seed, "warm": warm, "prior": repr(prior),
                      "noise": noise.name, "hidden": hidden, "nonlinear": nonlinear, "n_restarts": n_restarts,
                      "order_search": bool(order_search), "recheck_frac": recheck_frac, "unmix": unmix,
                      "later_unmix": later_unmix, "warmup_unmix": warmup_unmix,
                      "flat_direction": flat_direction, "data_sha256": _fingerprint(x, env)}
            if refit_scales:  # only when set, so checkpoints written before the option existed still resume
                config["refit_scales"] = True
            if guide_cov != "diag":
                config["guide_cov"] = guide_cov
        elif resume:
            raise ValueError("resume=True needs checkpoint_dir")
        start = warm
        run = None
        if resume:
            import os

            if os.path.exists(os.path.join(checkpoint_dir, "manifest.json")):
                run = _Run(x, env, seed=seed, **mk)
                t, st = restore_training_state(checkpoint_dir, modules={"net": run.net, "global_guide": run.gg},
                                               optimizer=run.opt, generators={"rows": run.gen})
                if st["config"] != config:
                    diff = sorted(k for k in config if st["config"].get(k) != config[k])
                    raise CheckpointError(f"The checkpoint in {checkpoint_dir!r} was written for other data or "
                                          f"settings (differs in {diff}); resume with the same arguments or start "
                                          "a new checkpoint_dir.")
                start, run.pos, run.bad, run.n_rej = st["step"], st["pos"], st["bad"], st["n_rejected"]
                order = tuple(st["order"])
                run.perm_rows, losses = t["perm_rows"], t["losses"].numpy().copy()
                if bar is not None:
                    bar.update(n_restarts * warm + start - warm)
        if run is None:
            runs, stores = [], []
            for r in range(n_restarts):
                rr = _Run(x, env, seed=seed + 7919 * r, **{**mk, "prior": warm_prior if warm else prior})
                store = np.full(num_steps, np.nan)
                run_steps(rr, range(0, warm), False, store)
                runs.append(rr)
                stores.append(store)
            tables = None
            unmix_loss = None
            if unmix and warm and n_latents > 1:
                unmix_loss = [_identify(rr) for rr in runs]
                history["unmix_loss"] = unmix_loss
            if n_restarts > 1:
                sub = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:5000]
                zs = [encode(rr.net, x[sub], env[sub]).numpy() for rr in runs]
                agree = _agreement(zs)
                best, kept = _select_restart(agree, unmix_loss)
                history["restart_agreement"] = agree.tolist()
                history["restart_selected"] = best
                history["restart_excluded"] = [r for r in range(n_restarts) if not kept[r]]
                if order_search is True and n_latents <= 8:
                    # order votes of all warm-ups, aligned to the kept run's latents
                    from bayes_crl.metrics import match_latents
                    from bayes_crl.order import align_scores, local_scores

                    zs_full = [encode(rr.net, xs, es).numpy() for rr in runs]
                    tables = np.zeros((n_latents, 2**n_latents))
                    for zr in (zr for zr, k in zip(zs_full, kept) if k):
                        perm = match_latents(zs_full[best], zr)[0]
                        tables += align_scores(local_scores(zr, es_np, noise=noise.name), np.asarray(perm))
            else:
                best = 0
            run, losses = runs[best], stores[best]
            if order_search and n_latents > 1 and warm > 0:
                order = _search_and_permute(run, order, tables)
                if unmix:
                    _centre(run)
            if warm:
                # switch to the requested prior, starting from least squares in the (new) slot order
                _restart_prior(run, prior)
        second = int(recheck_frac * num_steps) if (order_search and n_latents > 1 and warm > 0) else num_steps
        if start < second < num_steps:
            run_steps(run, range(start, second), True, losses)
            if unmix:
                history["unmix_loss_recheck"] = _identify(run, later=True)
            new = _search_and_permute(run, order)
            if unmix:
                _centre(run)
            if unmix and new == order:  # new coordinates: restart the edge posterior from least squares
                _restart_prior(run, prior)
            if new != order:
                order = new
                history["order_changed_at"] = second
                _restart_prior(run, prior)
            start = second
        run_steps(run, range(start, num_steps), True, losses)
        if final_order_check and order_search and n_latents > 1 and warm > 0:
            if unmix:
                history["unmix_loss_final"] = _identify(run, later=True)
            # The final latents are the sharpest: score orders with the model's own mechanism class (one function
            # per edge shared by all environments times a strength per environment; bayes_crl.order), which
            # orients edges better than free per-environment regressions on fitted latents (BENCHMARKS.md,
            # session 6). Earlier searches keep the free score: on warm-up latents the shared one did worse.
            new = _search_and_permute(run, order, shared=final_shared_score)
            history["final_order_changed"] = new != order
            if unmix:
                _centre(run)
                if flat_direction == "children":
                    _children(run)
            if new != order or unmix:
                # The latents kept improving after the last check: identify their coordinates once more (sparse
                # unmixing, causal order, centred strengths) and refit the latent causal model (mechanisms, noise,
                # edge posterior) in them with the encoder and decoder held fixed, so the edges are learned in the
                # right direction.
                order = new
                _restart_prior(run, prior)
                fixed = {id(p) for m in (run.net.encoder, run.net.decoder) for p in m.parameters()}
                fixed.add(id(run.net.shift))  # the centred coordinates are kept: only the prior would move them
                run.params = [p for p in run.net.parameters() if id(p) not in fixed] + list(run.gg.parameters())
                run.opt = _adam(run.params, lr)
                n_refit = max(1, int(refit_frac * num_steps))
                refit = np.full(n_refit, np.nan)
                if bar is not None:
                    bar.total += n_refit
                run_steps(run, range(n_refit), True, refit, latent_only=True)
                history["refit_losses"] = refit.tolist()
        if bar is not None:
            bar.close()
    return FitResult(net=run.net, global_guide=run.gg, prior=prior, noise=noise, losses=losses, order=order,
                     n_rejected=run.n_rej, history=history)
