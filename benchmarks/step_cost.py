"""Cost of one SVI step: Pyro's ``Trace_ELBO`` against an equivalent hand-written loss, and warm-ups one after
another against the batched warm-ups of the fit (:func:`bayes_crl.stages.run_steps_batched`).

All on chain l = 3, 30 environments x 1000 rows, d = 10, batch 512, one torch thread, the default network
(hidden 64, full-covariance encoder), Gaussian noise:

1. ``pyro``: one step of :func:`bayes_crl.stages.run_steps` (``Trace_ELBO.differentiable_loss`` of the Pyro model
   and guide, backward, gradient clipping, fused Adam), with the L1 warm-up prior and with the horseshoe.
2. ``hand``: the same step with the negative ELBO written directly in torch for the L1 prior (the same terms:
   ``log p(x | z) + log p(z | W, u) - log q(z | x, u)`` scaled by N / B, plus ``log p(W)``); its value is checked
   against Pyro's on the same draws before timing.
3. ``warm-ups``: 4 runs x ``--steps`` steps of the L1 warm-up, one after another (:func:`run_steps`) and batched.

    python benchmarks/step_cost.py --steps 300
"""
from __future__ import annotations

import argparse
import math
import platform
import subprocess
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    a = ap.parse_args(argv)
    import numpy as np
    import pyro
    import torch

    torch.set_num_threads(1)
    from bayes_crl import simulate_latent_anm
    from bayes_crl.fit_config import FitConfig
    from bayes_crl.guides import latent_causal_guide
    from bayes_crl.models import latent_causal_model
    from bayes_crl.noise import get_noise_family
    from bayes_crl.priors import Horseshoe
    from bayes_crl.stages import FitContext, Run, run_steps, run_steps_batched

    d = simulate_latent_anm(n_latents=3, graph="chain", n_envs=30, n_per_env=1000, random_state=0)
    x = torch.as_tensor((d.x - d.x.mean(0)) / d.x.std(0), dtype=torch.float32)
    env = torch.as_tensor(d.env)
    n = len(x)

    def context(prior, restarts: int, steps: int) -> FitContext:
        # warmup_frac 0.5 of 2 * steps: a warm-up of exactly `steps` steps
        cfg = FitConfig(num_steps=2 * steps, warmup_frac=0.5, batch_size=512, lr=5e-3, n_restarts=restarts,
                        min_obs_scale=0.1, seed=0)
        return FitContext(x, env, n_latents=3, n_envs=30, prior=prior, noise=get_noise_family("gaussian"), cfg=cfg)

    def hand_loss(ctx: FitContext, run: Run, idx: torch.Tensor) -> torch.Tensor:
        net, xb, eb = run.net, x[idx], env[idx]
        loc, scale, u = net.encoder.forward_full(xb, eb)
        eps = torch.randn_like(loc)
        r = loc + ((scale * eps).unsqueeze(-2) @ u).squeeze(-2)
        z = r @ net.shift_matrix()
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
        w = run.gg.edge_weight__value * net.mask
        g = (w[eb] * net.features(z)).sum(-2)
        log_pz = ctx.noise.log_prob(z - g, net.noise_loc[eb], net.noise_scale()[eb]).sum()
        log_px = torch.distributions.Normal(net.decode(z), net.obs_scale()).log_prob(xb).sum()
        log_pw = (torch.distributions.Laplace(0.0, ctx.warm_prior.scale).log_prob(w) * net.mask).sum()
        return -((n / len(idx)) * (log_px + log_pz - log_q) + log_pw)

    def time_pyro(prior) -> float:
        ctx = context(prior, 1, a.steps)
        run = Run(ctx, ctx.warm_prior if prior is None else prior, 0)
        store = np.full(ctx.cfg.num_steps, np.nan)
        main = prior is not None
        if main:
            ctx.prior = prior
        run_steps(ctx, run, range(0, 20), store, main=main)
        t0 = time.perf_counter()
        run_steps(ctx, run, range(20, 20 + a.steps), store, main=main)
        return (time.perf_counter() - t0) / a.steps * 1e3

    def time_hand() -> tuple[float, float]:
        ctx = context(None, 1, a.steps)
        run = Run(ctx, ctx.warm_prior, 0)
        idx = torch.arange(512)
        torch.manual_seed(1)
        ours = hand_loss(ctx, run, idx).item()
        torch.manual_seed(1)
        ref = (ctx.elbo.differentiable_loss(latent_causal_model, latent_causal_guide, x[idx], env[idx],
                                                 net=run.net, prior=ctx.warm_prior, noise=ctx.noise, n_total=n,
                                                 subsample=idx, global_guide=run.gg)).item()
        gen = torch.Generator().manual_seed(0)
        for k in range(20 + a.steps):
            if k == 20:
                t0 = time.perf_counter()
            idx = torch.randint(0, n, (512,), generator=gen)
            run.opt.zero_grad()
            loss = hand_loss(ctx, run, idx)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.params, 100.0)
            run.opt.step()
        return (time.perf_counter() - t0) / a.steps * 1e3, abs(ours - ref) / abs(ref)

    def time_warm_ups(batched: bool) -> float:
        ctx = context(None, 4, a.steps)
        runs = [Run(ctx, ctx.warm_prior, 7919 * r) for r in range(4)]
        stores = [np.full(ctx.cfg.num_steps, np.nan) for _ in runs]
        t0 = time.perf_counter()
        if batched:
            run_steps_batched(ctx, runs, range(0, a.steps), stores)
        else:
            for run, store in zip(runs, stores):
                run_steps(ctx, run, range(0, a.steps), store, main=False)
        return (time.perf_counter() - t0) / a.steps * 1e3

    with pyro.validation_enabled(False):
        pyro_l1 = time_pyro(None)
        pyro_hs = time_pyro(Horseshoe())
        hand_l1, rel = time_hand()
    seq = time_warm_ups(False)
    bat = time_warm_ups(True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.machine()) if platform.system() == "Linux" else platform.machine()
    print(f"commit {commit}; {cpu}; 1 torch thread; {a.steps} timed steps")
    print("| step | ms per step | ratio |")
    print("|---|---|---|")
    print(f"| Pyro Trace_ELBO, L1 warm-up prior | {pyro_l1:.2f} | {pyro_l1 / hand_l1:.2f} x hand-written |")
    print(f"| hand-written loss, L1 prior (value within {rel:.1e} of Pyro's) | {hand_l1:.2f} | 1 |")
    print(f"| Pyro Trace_ELBO, horseshoe (main phase) | {pyro_hs:.2f} | |")
    print(f"| 4 warm-ups one after another (per step of all 4) | {seq:.2f} | 1 |")
    print(f"| 4 warm-ups batched (per step of all 4) | {bat:.2f} | {seq / bat:.2f} x faster |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
