"""Real-data example: the Sachs et al. (2005) measurements as latent causal variables.

The log intensities of a subset of the 11 molecules (default Raf, Mek, Erk, Akt) are standardised and
observed only through a random injective leaky-ReLU MLP into 10 columns
(:func:`bayes_crl.datasets.sachs_latent_data`); the 9 experimental conditions are the environments. Each
method is fitted with its defaults, once per mixing seed, and scored against the measured variables (MPC,
per-latent correlation) and the consensus graph (SHD, AUROC, Brier after matching). As a reference for
what the graph score can say at all, the row ``order search on the true variables`` applies the library's
causal-order search (:func:`bayes_crl.order.best_order`) to the measured variables themselves.

    python benchmarks/realdata.py --seeds 3 --workers 2 --results benchmarks/results/realdata.jsonl \
        --out benchmarks/results/realdata.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import get_context

import numpy as np

METHODS = ("LatentCausalModel", "IVAE", "LinearLatentSCM")


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from baselines import _estimator, fit_and_score  # benchmarks/baselines.py: the same fit and scores
    from bayes_crl.datasets import sachs_latent_data

    data = sachs_latent_data(job["variables"], random_state=job["seed"])
    model = _estimator(job["method"], n_latents=len(job["variables"]), random_state=job["seed"])
    return fit_and_score(model, data, job)


def oracle(variables: list[str]) -> dict:
    """The order search on the measured variables themselves (no mixing, no fit)."""
    from bayes_crl import metrics
    from bayes_crl.datasets import load_sachs
    from bayes_crl.order import best_order

    d = load_sachs(variables)
    z = (d.values - d.values.mean(0)) / d.values.std(0)
    codes = np.unique(d.env, return_inverse=True)[1]
    order, _, parents = best_order(z, codes)
    return {"order": [d.names[k] for k in order], "parents": parents.tolist(),
            "shd": float(metrics.shd(d.adjacency, parents)), "truth": d.adjacency.tolist()}


def _edges(adj, names) -> str:
    a = np.asarray(adj)
    return ", ".join(f"{names[j]}->{names[i]}" for j in range(len(names)) for i in range(len(names)) if a[j, i] > 0.5)


def summarise(rows: list[dict], orc: dict, variables: list[str]) -> str:
    lines = [f"Variables (latents): {', '.join(variables)}; consensus edges among them: "
             f"{_edges(orc['truth'], variables)}.", "",
             "| method | fits | MPC per seed | MPC median | per-latent corr (median) | SHD per seed | Brier mean | "
             "fit s (median) |", "|---|---|---|---|---|---|---|---|"]
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["seed"])
        mp = [r["mpc"] for r in rs]
        pl = np.median([r["per_latent"] for r in rs], 0)
        shd = ", ".join("—" if r["shd"] is None else f"{r['shd']:.0f}" for r in rs)
        br = [r["brier"] for r in rs if r["brier"] is not None]
        lines.append(f"| {m} | {len(rs)} | {', '.join(f'{v:.3f}' for v in mp)} | {np.median(mp):.3f} | "
                     f"{', '.join(f'{c:.3f}' for c in pl)} | {shd} | "
                     f"{(f'{np.mean(br):.3f}' if br else '—')} | {np.median([r['fit_seconds'] for r in rs]):.0f} |")
    lines += ["", f"Order search on the true variables: order {' > '.join(orc['order'])}, parents "
              f"{_edges(orc['parents'], variables) or 'none'} (SHD {orc['shd']:.0f} against the consensus)."]
    for r in rows:
        if r["probs"] is not None:
            lines.append(f"- {r['method']} seed {r['seed']}: edges with probability >= 0.5 (true-latent names): "
                         f"{_edges(r['probs'], variables) or 'none'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variables", default="Raf,Mek,Erk,Akt")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", default="benchmarks/results/realdata.jsonl")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    variables = a.variables.split(",")
    rows = []
    if os.path.exists(a.results):
        rows = [json.loads(line) for line in open(a.results)]
    done = {(r["method"], r["seed"], tuple(r["variables"])) for r in rows}
    jobs = [{"method": m, "seed": s, "variables": variables} for m in a.methods.split(",") for s in range(a.seeds)
            if (m, s, tuple(variables)) not in done]
    os.makedirs(os.path.dirname(a.results) or ".", exist_ok=True)
    t0 = time.time()
    print(f"{len(jobs)} fits to run", flush=True)
    with get_context("spawn").Pool(a.workers) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            rows.append(r)
            with open(a.results, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['method']:>18} seed {r['seed']}: MPC {r['mpc']:.3f} SHD {r['shd']} ({r['fit_seconds']:.0f} s)",
                  flush=True)
    orc = oracle(variables)
    rows = [r for r in rows if r["variables"] == variables]
    text = summarise(rows, orc, variables)
    print(text)
    if a.out:
        header = (f"Command: `python benchmarks/realdata.py --variables {a.variables} --seeds {a.seeds}`. Machine: "
                  f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {a.workers} "
                  f"fits in parallel, 1 torch thread each; wall time {time.time() - t0:.0f} s.")
        with open(a.out, "w") as f:
            f.write(header + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
