"""Which score of a warm-up tracks the final MPC? Candidate restart-selection criteria, scored offline.

The estimator runs ``n_restarts`` warm-ups, identifies each (sparse unmixing) and keeps one
(:func:`bayes_crl.stages._select_restart`). This script runs the defaults up to that choice and, instead of
choosing, records for every warm-up the scores a criterion could use: its agreement with the other warm-ups,
its unmixing loss, its training loss over the last tenth of the warm-up, the
reconstruction error on 8192 rows, the best order's score of its (standardised) latents with the free and the
shared mechanism score, and its latents' MPC against the truth. ``benchmarks/kept_warmup.py`` records the final
MPC of the same fits forced to keep each warm-up (the warm-ups are the same: same data, seed and thread count);
``--kept`` joins the two and prints, per criterion, the mean final MPC of the warm-up it would keep, beside the
best, the mean and the worst warm-up.

    python benchmarks/warmup_scores.py --data-dir ../shared/outside --only <stems> --sim --workers 2 \
        --results runs/warmup_scores.jsonl --kept benchmarks/results/kept_warmup.jsonl
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


class _Stop(Exception):
    """Raised once the warm-ups are scored: the rest of the fit is not needed."""


def _scores(ctx, runs, unmix_loss, stores, z_true) -> list[dict]:
    import torch
    from bayes_crl import metrics
    from bayes_crl import stages
    from bayes_crl.order import best_order

    cfg = ctx.cfg
    sub = torch.randperm(ctx.n, generator=torch.Generator().manual_seed(cfg.seed))[:stages.AGREEMENT_ROWS]
    agree = stages._agreement([stages.encode(run.net, ctx.x[sub], ctx.env[sub]).numpy() for run in runs])
    held = torch.randperm(ctx.n, generator=torch.Generator().manual_seed(cfg.seed + 2))[:8192]
    out = []
    for r, run in enumerate(runs):
        z = ctx.latents(run)
        zs = (z - z.mean(0)) / z.std(0)
        with torch.no_grad():
            xb, eb, _ = ctx.batch(held)
            zh = stages.encode(run.net, xb, eb)
            rec = run.net.decode(zh)
            recon = float(((rec - xb) ** 2).mean())
        free = best_order(zs, ctx.es_np, noise=ctx.noise.name)[1] / len(zs)
        shared = best_order(zs, ctx.es_np, noise=ctx.noise.name, shared=True)[1] / len(zs)
        perm, _, corr = metrics.match_latents(z_true, z)
        out.append({"warmup": r, "agree": float(agree[r]),
                    "unmix_loss": None if unmix_loss is None else float(unmix_loss[r]),
                    "loss_tail": stages.warm_up_loss(stores[r], ctx.warm), "recon": recon,
                    "order_free": float(free), "order_shared": float(shared),
                    "warm_mpc": float(metrics.mpc(z_true, z)),
                    "warm_per_latent": [float(abs(corr[i, j])) for i, j in enumerate(perm)]})
    return out


def run_one(job) -> list[dict]:
    """Run the defaults on ``job`` = (name, source) up to the restart selection; one row per warm-up."""
    name, source = job
    import torch

    torch.set_num_threads(1)
    import bayes_crl.infer as infer
    from bayes_crl import LatentCausalModel

    d, seed, estkw = recovery.load_source(source)
    seen = {}

    def select_restart(ctx, runs, stores, unmix_loss=None):
        seen["rows"] = _scores(ctx, runs, unmix_loss, stores, np.asarray(d.z))
        raise _Stop

    infer.select_restart = select_restart
    try:
        LatentCausalModel(n_latents=d.z.shape[1], random_state=seed, **estkw).fit(d.x, env=d.env)
    except _Stop:
        pass
    return [{"data": name, **row} for row in seen["rows"]]


def _guarded(key: str):
    """The lowest ``key`` among the warm-ups the agreement guard keeps (:func:`bayes_crl.stages._select_restart`)."""
    from bayes_crl.stages import RESTART_OUTLIER_DROP

    def rank(g):
        agree = np.array([r["agree"] for r in g])
        return np.where(agree >= np.median(agree) - RESTART_OUTLIER_DROP,
                        np.array([r[key] for r in g], dtype=float), np.inf)
    return rank


def _fit_rule(g):
    """:func:`bayes_crl.stages._select_restart` on the scores, as a ranking (0 for the warm-up it keeps)."""
    from bayes_crl.stages import _select_restart

    best = _select_restart([r["agree"] for r in g], [r["loss_tail"] for r in g],
                           None if g[0]["unmix_loss"] is None else [r["unmix_loss"] for r in g])[0]
    return (np.arange(len(g)) != best).astype(float)


CRITERIA = {
    "the fit's rule (lowest rank sum of training loss and unmixing loss, among the agreeing)": _fit_rule,
    "lowest training loss among the agreeing": _guarded("loss_tail"),
    "lowest training loss": lambda g: np.array([r["loss_tail"] for r in g]),
    "lowest unmixing loss among the agreeing": _guarded("unmix_loss"),
    "lowest unmixing loss": lambda g: np.array([r["unmix_loss"] for r in g]),
    "most agreeing": lambda g: -np.array([r["agree"] for r in g]),
    "lowest reconstruction error": lambda g: np.array([r["recon"] for r in g]),
    "best free order score": lambda g: -np.array([r["order_free"] for r in g]),
    "best shared order score": lambda g: -np.array([r["order_shared"] for r in g]),
    "highest warm-up MPC (oracle)": lambda g: -np.array([r["warm_mpc"] for r in g]),
}


def report(rows: list[dict], kept: list[dict]) -> None:
    """Per criterion: mean final MPC of the warm-up it keeps over the fits that have both records."""
    kept = [r for r in kept if r.get("main_seed") is None]
    final = {(r["data"], r["forced"]): r["mpc"] for r in kept}
    by = {}
    for r in rows:
        by.setdefault(r["data"], []).append(r)
    names = [n for n in by if all((n, r["warmup"]) in final for r in by[n])]
    print(f"{len(names)} fits with scores and final MPC per warm-up\n")
    print("| criterion | mean final MPC of the kept warm-up | outside | simulator | keeps the best | keeps the worst |")
    print("|---|---|---|---|---|---|")
    for label, key in CRITERIA.items():
        got, best, worst = [], 0, 0
        for n in names:
            g = sorted(by[n], key=lambda r: r["warmup"])
            mp = np.array([final[(n, r["warmup"])] for r in g])
            k = int(np.argmin(key(g)))
            got.append((n, mp[k]))
            best += mp[k] == mp.max()
            worst += mp[k] == mp.min()
        out = [v for n, v in got if ":" not in n]
        sim = [v for n, v in got if ":" in n]
        print(f"| {label} | {np.mean([v for _, v in got]):.3f} | {np.mean(out) if out else float('nan'):.3f} | "
              f"{np.mean(sim) if sim else float('nan'):.3f} | {best} of {len(names)} | {worst} of {len(names)} |")
    for label, fn in (("best warm-up", np.max), ("mean of the warm-ups", np.mean), ("worst warm-up", np.min)):
        vals = [(n, fn([final[(n, r["warmup"])] for r in by[n]])) for n in names]
        out = [v for n, v in vals if ":" not in n]
        sim = [v for n, v in vals if ":" in n]
        print(f"| {label} | {np.mean([v for _, v in vals]):.3f} | {np.mean(out) if out else float('nan'):.3f} | "
              f"{np.mean(sim) if sim else float('nan'):.3f} | | |")
    print("\n| data | final MPC keeping warm-up 0, 1, ... | training loss per warm-up | the fit's rule keeps | "
          "lowest training loss among the agreeing keeps | lowest unmixing loss among the agreeing keeps |")
    print("|---|---|---|---|---|---|")
    loss_rule, unmix_rule = _guarded("loss_tail"), _guarded("unmix_loss")
    for n in names:
        g = sorted(by[n], key=lambda r: r["warmup"])
        mp = [final[(n, r["warmup"])] for r in g]
        f, a, b = int(np.argmin(_fit_rule(g))), int(np.argmin(loss_rule(g))), int(np.argmin(unmix_rule(g)))
        losses = ", ".join(f"{r['loss_tail']:.3f}" for r in g)
        print(f"| {n} | {', '.join(f'{v:.3f}' for v in mp)} | {losses} | "
              f"{f} ({mp[f]:.3f}) | {a} ({mp[a]:.3f}) | {b} ({mp[b]:.3f}) |")
    print("\nSpearman correlation of each score with the final MPC, within a fit, averaged over fits")
    from scipy.stats import spearmanr

    for label, key in CRITERIA.items():
        rho = []
        for n in names:
            g = sorted(by[n], key=lambda r: r["warmup"])
            mp = np.array([final[(n, r["warmup"])] for r in g])
            s = -key(g)
            if np.ptp(s) > 0 and np.ptp(mp) > 0:
                rho.append(spearmanr(s, mp)[0])
        print(f"  {label}: {np.mean(rho):+.2f} over {len(rho)} fits")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recovery.add_source_args(ap)
    ap.add_argument("--results", default="runs/warmup_scores.jsonl")
    ap.add_argument("--kept", default=None, help="kept_warmup.py rows to join (final MPC per forced warm-up)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    sources = recovery.sources(a)
    done = set()
    if os.path.exists(a.results):
        with open(a.results) as fh:
            done = {r["data"] for r in map(json.loads, fh)}
    jobs = [(n, s) for n, s in sources if n not in done]
    if jobs:
        with get_context("spawn").Pool(a.workers) as pool, open(a.results, "a") as fh:
            for rows in pool.imap_unordered(run_one, jobs):
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
                fh.flush()
                print(rows[0]["data"], "warm-up MPC", [round(r["warm_mpc"], 3) for r in rows], flush=True)
    if a.kept:
        with open(a.results) as fh:
            rows = [json.loads(line) for line in fh]
        with open(a.kept) as fh:
            kept = [json.loads(line) for line in fh]
        report(rows, kept)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
