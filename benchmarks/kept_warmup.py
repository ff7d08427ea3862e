"""How much does the choice of warm-up decide? The final MPC of a fit forced to keep each warm-up in turn.

The estimator runs ``n_restarts`` warm-ups and keeps one (:func:`bayes_crl.stages._select_restart`: the lowest
unmixing loss among the warm-ups that agree with the others). This script fits the defaults once per warm-up
index, forcing that warm-up to be kept (the order votes and everything after are the fit's own), and records
the final MPC of each, beside the index the default selection keeps. The spread across indices is what a
perfect selection criterion could gain or lose; the default's row shows where it lands.

    python benchmarks/kept_warmup.py --data-dir ../shared/outside --sim --workers 2 --results runs/kept_warmup.jsonl
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from multiprocessing import get_context

import numpy as np


_ORIGINAL: dict = {}  # the unpatched selection, kept once per worker process (workers run several jobs)


def run_one(job) -> dict:
    """Fit ``job`` = (name, source, forced index or None) with the defaults; MPC and the kept index."""
    name, source, forced = job
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import recovery  # benchmarks/recovery.py: load and simulate exactly as the recovery benchmark does

    import bayes_crl.stages as stages
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    if source.endswith(".npz"):
        d = recovery._load_outside(source)
        seed = 0
    else:
        setting, seed = source.split(":")
        seed = int(seed)
        simkw = next(sk for n, sk, _, _ in recovery.SUITES["default"] if n == setting)
        d = simulate_latent_anm(random_state=seed, **{**recovery.SIM_DEFAULTS, **simkw})
    original = _ORIGINAL.setdefault("select", stages._select_restart)
    kept_index = {}

    def select(agree, unmix_loss):
        best, kept = original(agree, unmix_loss)
        kept_index["default"] = best
        return (best if forced is None else forced), kept

    stages._select_restart = select
    m = LatentCausalModel(n_latents=d.z.shape[1], random_state=seed).fit(d.x, env=d.env)
    z_hat = m.transform(d.x, env=d.env)
    perm, _, corr = metrics.match_latents(d.z, z_hat)
    return {"data": name, "forced": forced, "default_choice": kept_index["default"],
            "mpc": float(metrics.mpc(d.z, z_hat)),
            "per_latent": [float(abs(corr[i, j])) for i, j in enumerate(perm)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder of .npz files (keys x, env, z)")
    ap.add_argument("--only", default=None, help="comma-separated file stems of --data-dir")
    ap.add_argument("--sim", action="store_true", help="also the default suite's random5-gauss seeds 0-4")
    ap.add_argument("--restarts", type=int, default=4, help="the estimator's n_restarts (its default: 4)")
    ap.add_argument("--results", default="runs/kept_warmup.jsonl")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    sources = []
    if a.data_dir:
        files = sorted(glob.glob(os.path.join(a.data_dir, "*.npz")))
        if a.only:
            files = [f for f in files if os.path.basename(f)[:-4] in a.only.split(",")]
        sources += [(os.path.basename(f)[:-4], f) for f in files]
    if a.sim:
        sources += [(f"random5-gauss:{k}", f"random5-gauss:{k}") for k in range(5)]
    if not sources:
        ap.error("nothing to run: pass --data-dir and/or --sim")
    done = set()
    if os.path.exists(a.results):
        with open(a.results) as fh:
            done = {(r["data"], r["forced"]) for r in map(json.loads, fh)}
    jobs = [(n, s, k) for n, s in sources for k in range(a.restarts) if (n, k) not in done]
    with get_context("spawn").Pool(a.workers) as pool, open(a.results, "a") as fh:
        for r in pool.imap_unordered(run_one, jobs):
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            print(f"{r['data']} kept {r['forced']}: MPC {r['mpc']:.3f} (default keeps {r['default_choice']})",
                  flush=True)
    with open(a.results) as fh:
        recs = [json.loads(line) for line in fh]
    print("| data | MPC keeping warm-up 0, 1, 2, ... | the default keeps | its MPC | best | worst |")
    print("|---|---|---|---|---|---|")
    for n, _ in sources:
        rows = sorted((r for r in recs if r["data"] == n), key=lambda r: r["forced"])
        if not rows:
            continue
        mp = [r["mpc"] for r in rows]
        k = rows[0]["default_choice"]
        print(f"| {n} | {', '.join(f'{v:.3f}' for v in mp)} | {k} | {mp[k]:.3f} | {max(mp):.3f} | {min(mp):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
