"""How much does the choice of warm-up decide? The final MPC of a fit forced to keep each warm-up in turn.

The estimator runs ``n_restarts`` warm-ups and keeps one (:func:`bayes_crl.stages._select_restart`). This script
fits the defaults once per warm-up index, forcing that warm-up to be kept (the order votes and everything after
are the fit's own), and records the final MPC of each, beside the index the fit's own rule keeps. The spread
across indices is what a perfect selection criterion could gain or lose; ``benchmarks/warmup_scores.py`` scores
the same warm-ups for candidate criteria. ``--main-seeds`` refits a forced warm-up with its main phase redrawn
(the minibatch order and the latent draws after the selection), which separates what the warm-up decides from
what the main phase's randomness does.

    python benchmarks/kept_warmup.py --data-dir ../shared/outside --sim --workers 2 --results runs/kept_warmup.jsonl
    python benchmarks/kept_warmup.py --data-dir ../shared/outside --only cauca_l3_s0 --forced 2,3 --main-seeds 0,1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recovery  # noqa: E402  benchmarks/recovery.py: load and simulate exactly as the recovery benchmark does


_ORIGINAL: dict = {}  # the unpatched selection, kept once per worker process (workers run several jobs)


def run_one(job) -> dict:
    """Fit ``job`` = (name, source, forced index or None, main-phase seed or None, folder for the latents or
    None) with the defaults; MPC, the index the fit's rule keeps and the fit's final losses. A main-phase seed
    redraws, after the selection, the kept run's minibatch order and torch's random state (the latent draws of
    every later step), so the warm-ups stay those of the default fit."""
    name, source, forced, main_seed, latents_dir = job
    import torch

    torch.set_num_threads(1)
    import bayes_crl.infer as infer
    import bayes_crl.stages as stages
    from bayes_crl import LatentCausalModel, metrics

    d, seed, estkw = recovery.load_source(source)
    original = _ORIGINAL.setdefault("select", stages._select_restart)
    kept_index = {}

    def select(*scores):
        best, kept = original(*scores)
        kept_index["default"] = best
        return (best if forced is None else forced), kept

    original_select_restart = _ORIGINAL.setdefault("select_restart", infer.select_restart)

    def select_restart(ctx, runs, *scores):
        best, tables = original_select_restart(ctx, runs, *scores)
        if main_seed is not None:
            runs[best].gen.manual_seed(10_007 + main_seed)
            runs[best].perm_rows, runs[best].pos = stages._row_order(ctx.n, runs[best].gen), 0
            torch.manual_seed(20_011 + main_seed)
        return best, tables

    stages._select_restart = select
    infer.select_restart = select_restart
    m = LatentCausalModel(n_latents=d.z.shape[1], random_state=seed, **estkw).fit(d.x, env=d.env)
    z_hat = m.transform(d.x, env=d.env)
    perm, _, corr = metrics.match_latents(d.z, z_hat)
    if latents_dir:  # the final latents, for agreement between fits of the same data
        os.makedirs(latents_dir, exist_ok=True)
        np.save(os.path.join(latents_dir, f"{name.replace(':', '_')}_{forced}_{main_seed}.npy"),
                z_hat.astype(np.float32))
    hist = m.result_.history
    losses = np.asarray(m.result_.losses)
    return {"data": name, "forced": forced, "main_seed": main_seed, "default_choice": kept_index["default"],
            "mpc": float(metrics.mpc(d.z, z_hat)),
            "per_latent": [float(abs(corr[i, j])) for i, j in enumerate(perm)],
            "final_unmix_loss": hist.get("unmix_loss_final"),
            "final_loss": float(np.nanmean(losses[-len(losses) // 10:])),
            "refit_loss": float(np.nanmean(hist["refit_losses"][-len(hist["refit_losses"]) // 10:]))
            if hist.get("refit_losses") else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recovery.add_source_args(ap)
    ap.add_argument("--restarts", type=int, default=4, help="the estimator's n_restarts (its default: 4)")
    ap.add_argument("--forced", default=None, help="comma-separated warm-up indices to force (default: all)")
    ap.add_argument("--main-seeds", default=None,
                    help="comma-separated main-phase seeds: refit each forced warm-up with its main phase redrawn")
    ap.add_argument("--results", default="runs/kept_warmup.jsonl")
    ap.add_argument("--latents-dir", default=None, help="also save each fit's final latents here (.npy)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    sources = recovery.sources(a)
    if not sources:
        ap.error("nothing to run: pass --data-dir and/or --sim")
    done = set()
    if os.path.exists(a.results):
        with open(a.results) as fh:
            done = {(r["data"], r["forced"], r.get("main_seed")) for r in map(json.loads, fh)}
    forced = range(a.restarts) if a.forced is None else [int(k) for k in a.forced.split(",")]
    main_seeds = [None] if a.main_seeds is None else [int(k) for k in a.main_seeds.split(",")]
    jobs = [(n, s, k, m, a.latents_dir) for n, s in sources for k in forced for m in main_seeds
            if (n, k, m) not in done]
    with get_context("spawn").Pool(a.workers) as pool, open(a.results, "a") as fh:
        for r in pool.imap_unordered(run_one, jobs):
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            print(f"{r['data']} kept {r['forced']} main seed {r['main_seed']}: MPC {r['mpc']:.3f} "
                  f"(the fit's rule keeps {r['default_choice']})", flush=True)
    with open(a.results) as fh:
        recs = [json.loads(line) for line in fh]
    print("| data | MPC keeping warm-up 0, 1, 2, ... | the default keeps | its MPC | best | worst |")
    print("|---|---|---|---|---|---|")
    for n, _ in sources:
        rows = sorted((r for r in recs if r["data"] == n and r.get("main_seed") is None), key=lambda r: r["forced"])
        if not rows:
            continue
        mp = [r["mpc"] for r in rows]
        k = rows[0]["default_choice"]
        print(f"| {n} | {', '.join(f'{v:.3f}' for v in mp)} | {k} | {mp[k]:.3f} | {max(mp):.3f} | {min(mp):.3f} |")
    redrawn = [r for r in recs if r.get("main_seed") is not None and r["data"] in dict(sources)]
    if redrawn:
        print("\n| data | kept warm-up | MPC with its own main phase | with the main phase redrawn (seeds 0, 1, ...) |")
        print("|---|---|---|---|")
        own = {(r["data"], r["forced"]): r["mpc"] for r in recs if r.get("main_seed") is None}
        for n, k in sorted({(r["data"], r["forced"]) for r in redrawn}):
            mp = [r["mpc"] for r in sorted((r for r in redrawn if (r["data"], r["forced"]) == (n, k)),
                                           key=lambda r: r["main_seed"])]
            base = f"{own[(n, k)]:.3f}" if (n, k) in own else ""
            print(f"| {n} | {k} | {base} | {', '.join(f'{v:.3f}' for v in mp)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
