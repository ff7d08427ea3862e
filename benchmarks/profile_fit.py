"""Where a default fit's time goes: seconds per stage of the fit pipeline and of the posterior summary.

Wraps the stages that :func:`bayes_crl.infer.fit_svi` calls (``bayes_crl.stages``: warm-ups, their unmixing,
restart selection, order search, centring, main-phase steps, recheck, final identification, latent-only refit)
and the estimator's posterior summary (order bootstrap, inclusion probabilities, posterior draws) with timers,
runs one default fit with one torch thread, and prints a Markdown table. The timers add nothing measurable.

    python benchmarks/profile_fit.py --latents 3 --seed 0            # chain l = 3, 30 x 1000 rows
    python benchmarks/profile_fit.py --latents 5 --graph random --envs 40
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

INFER_STAGES = ("warm_up", "identify_warm_ups", "select_restart", "search_order", "centre", "restart_edge_posterior",
                "run_steps", "recheck", "final_identification", "refit_latent_model")
SUMMARY = ("inclusion_context", "edge_inclusion", "edge_orientation", "posterior_draws")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=3)
    ap.add_argument("--graph", default="chain")
    ap.add_argument("--envs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import warnings

    import torch

    torch.set_num_threads(1)
    import bayes_crl.estimator as est
    import bayes_crl.infer as infer
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    spent: dict = defaultdict(float)
    calls: dict = defaultdict(int)

    def timed(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return real(*args, **kw)
            finally:
                spent[name] += time.perf_counter() - t0
                calls[name] += 1
        setattr(module, name, wrapper)

    for name in INFER_STAGES:
        timed(infer, name)
    for name in SUMMARY:
        timed(est, name)
    d = simulate_latent_anm(n_latents=a.latents, graph=a.graph, n_envs=a.envs, n_per_env=1000, mechanism="nonlinear",
                            random_state=a.seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LatentCausalModel(n_latents=a.latents, random_state=a.seed).fit(d.x, env=d.env)
    wall = time.perf_counter() - t0
    print(f"l = {a.latents}, {a.graph}, {len(d.x)} rows: fit() {wall:.1f} s (fit_svi {m.fit_seconds_:.1f} s), "
          f"MPC {metrics.mpc(d.z, m.transform(d.x, env=d.env)):.3f}")
    print("| stage | calls | seconds | share of fit() |")
    print("|---|---|---|---|")
    for name in (*INFER_STAGES, *SUMMARY):
        if calls[name]:
            print(f"| {name} | {calls[name]} | {spent[name]:.1f} | {100 * spent[name] / wall:.0f} % |")
    other = wall - sum(spent.values())
    print(f"| other (validation, scaling, encoder passes) | | {other:.1f} | {100 * other / wall:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
