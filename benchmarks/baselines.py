"""Baselines benchmark: VAE, beta-VAE, iVAE, the latent linear SCM, LANCA and LatentCausalModel on the same data.

For every number of latents ``l`` and seed, one data set is simulated with
``simulate_latent_anm(n_latents=l, n_envs=E, n_per_env=R, mechanism="nonlinear", random_state=seed)``
(chain graph, Gaussian noise, MLP mixing to ``--dims`` observed dimensions) and every method is fitted to
it with the same ``num_steps`` (``--steps``; default: each estimator's own default), batch size and
network width. One JSON line per fit is appended to ``--results`` (an interrupted run resumes where it
stopped: a fit is skipped when a line with the same method, l, seed and data/step settings exists) and
a Markdown table is written to ``--out``: MPC, SHD and Brier score of the edge probabilities (for the
methods with a graph; the point-estimate baselines give 0/1 probabilities) and fit seconds.

    python benchmarks/baselines.py --workers 2 --out benchmarks/results/baselines.md

Each fit uses one torch thread; ``--workers`` fits run side by side.
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

METHODS = ("LatentCausalModel", "PaperL1", "VAE", "BetaVAE", "IVAE", "LinearLatentSCM", "LANCA")
GRAPH_METHODS = {"LatentCausalModel", "PaperL1", "LinearLatentSCM", "LANCA"}
# "PaperL1": the paper's point-estimate method, the same model with the L1 (Laplace, MAP) prior on the
# per-environment strengths and thresholded masks (no environment bootstrap): 0/1 edge probabilities


def _estimator(method: str, **kw):
    if method in ("LatentCausalModel", "PaperL1"):
        from bayes_crl import LatentCausalModel

        if method == "PaperL1":
            kw = {**kw, "edge_prior": "laplace", "n_order_draws": 0}
        return LatentCausalModel(**kw)
    from bayes_crl import baselines

    return getattr(baselines, method)(**kw)


def _key(r: dict) -> tuple:
    return (r["method"], r["n_latents"], r["seed"], r["n_envs"], r["n_per_env"], r["n_obs_dims"], r["steps"],
            r.get("noise", "gaussian"), bool(r.get("post_nonlinear", False)))


def run_one(job: dict) -> dict:
    """Simulate one data set and fit one method to it (runs in a worker process)."""
    import torch

    torch.set_num_threads(1)
    from bayes_crl import simulate_latent_anm

    data = simulate_latent_anm(n_latents=job["n_latents"], n_envs=job["n_envs"], n_per_env=job["n_per_env"],
                               n_obs_dims=job["n_obs_dims"], mechanism="nonlinear", noise=job.get("noise", "gaussian"),
                               post_nonlinear=bool(job.get("post_nonlinear", False)), random_state=job["seed"])
    kw = {"n_latents": job["n_latents"], "random_state": job["seed"]}
    if job["steps"] is not None:
        kw["num_steps"] = job["steps"]
    return fit_and_score(_estimator(job["method"], **kw), data, job)


def fit_and_score(model, data, job: dict) -> dict:
    """Fit ``model`` to ``data.x``/``data.env`` (warnings silenced) and score it against ``data.z`` and
    ``data.adjacency``: MPC, per-latent correlation, fit seconds and, for a method with ``edge_inclusion_``,
    SHD, Brier, AUROC and the aligned probabilities. Returns ``job`` extended with those fields."""
    import warnings

    from bayes_crl import metrics

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data.x, env=data.env)
    seconds = time.perf_counter() - t0
    z_hat = model.transform(data.x, env=data.env)
    score, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
    out = {**job, "mpc": float(score),
           "per_latent": [float(c) for c in metrics.per_latent_correlation(data.z, z_hat)],
           "fit_seconds": float(seconds), "truth": data.adjacency.tolist(),
           "shd": None, "brier": None, "auroc": None, "probs": None}
    if hasattr(model, "edge_inclusion_"):
        out.update(graph_scores(model.edge_inclusion_, perm, data.adjacency))
    return out


def graph_scores(inclusion, perm, adjacency) -> dict:
    """Edge probabilities ``inclusion`` (l, l) of learned latents, aligned to the true ones by ``perm`` (from
    ``metrics.mpc(..., return_matching=True)``) and scored against ``adjacency``: ``probs`` (aligned, as a
    list), ``shd`` (at 0.5), ``brier`` and ``auroc``. Shared by the benchmark scripts."""
    from bayes_crl import metrics

    probs = metrics.align_graph(inclusion, perm)
    return {"probs": probs.tolist(), "shd": float(metrics.shd(adjacency, probs, threshold=0.5)),
            "brier": float(metrics.brier(adjacency, probs)), "auroc": float(metrics.edge_auroc(adjacency, probs))}


def _fmt(v, spec: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def summarise(rows: list[dict]) -> str:
    """Markdown table, one row per (environments, n_latents, method); AUROC pooled over the fits' edges."""
    from sklearn.metrics import roc_auc_score

    lines = ["| E | l | method | fits | MPC median | MPC min | SHD median | SHD=0 | Brier mean | AUROC pooled | "
             "fit s (median) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted({r["n_envs"] for r in rows}):
        for l in sorted({r["n_latents"] for r in rows}):
            for method in METHODS:
                rs = [r for r in rows if r["n_latents"] == l and r["method"] == method and r["n_envs"] == e]
                if not rs:
                    continue
                mpcs = np.array([r["mpc"] for r in rs])
                graph = method in GRAPH_METHODS
                shds = np.array([r["shd"] for r in rs]) if graph else None
                auroc = None
                if graph:
                    off = [~np.eye(len(r["truth"]), dtype=bool) for r in rs]
                    y = np.concatenate([np.array(r["truth"])[o] for r, o in zip(rs, off)])
                    p = np.concatenate([np.array(r["probs"])[o] for r, o in zip(rs, off)])
                    auroc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
                lines.append(
                    f"| {e} | {l} | {method} | {len(rs)} | {np.median(mpcs):.3f} | {mpcs.min():.3f} | "
                    f"{_fmt(float(np.median(shds)) if graph else None, '.1f')} | "
                    f"{f'{int((shds == 0).sum())}/{len(rs)}' if graph else '—'} | "
                    f"{_fmt(float(np.mean([r['brier'] for r in rs])) if graph else None)} | {_fmt(auroc)} | "
                    f"{np.median([r['fit_seconds'] for r in rs]):.1f} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=_ints, default=[2, 3, 4, 5], help="comma-separated l values (default 2,3,4,5)")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds per l (seeds 0..N-1)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--steps", type=int, default=None, help="num_steps of every method (default: their own)")
    ap.add_argument("--envs", type=_ints, default=[30], help="environments per data set (comma-separated: a sweep)")
    ap.add_argument("--noise", default="gaussian", choices=["gaussian", "laplace", "gamma"],
                    help="latent noise family of the simulated data (every method keeps its defaults)")
    ap.add_argument("--post-nonlinear", action="store_true", help="simulate z_i = h_i(g_i + n_i)")
    ap.add_argument("--rows", type=int, default=1000, help="rows per environment")
    ap.add_argument("--dims", type=int, default=10, help="observed dimensions")
    ap.add_argument("--workers", type=int, default=2, help="fits run side by side (one torch thread each)")
    ap.add_argument("--results", default="benchmarks/results/baselines.jsonl", help="JSONL file (appended, resumable)")
    ap.add_argument("--out", default="benchmarks/results/baselines.md", help="Markdown table written here")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown methods {unknown}; choose among {', '.join(METHODS)}")
    for path in (a.results, a.out):
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    rows: list[dict] = []
    if os.path.exists(a.results):
        with open(a.results) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    done = {_key(r) for r in rows}
    jobs = [dict(method=m, n_latents=l, seed=s, n_envs=e, n_per_env=a.rows, n_obs_dims=a.dims, steps=a.steps,
                 noise=a.noise, post_nonlinear=a.post_nonlinear)
            for e in a.envs for l in a.latents for s in range(a.seeds) for m in methods]
    todo = [j for j in jobs if _key(j) not in done]
    print(f"{len(todo)} fits to run ({len(jobs) - len(todo)} already in {a.results})", flush=True)
    t0 = time.time()
    if todo:
        with get_context("spawn").Pool(a.workers) as pool:
            for r in pool.imap_unordered(run_one, todo):
                rows.append(r)
                with open(a.results, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"l={r['n_latents']} E={r['n_envs']} seed {r['seed']} {r['method']:>17}: MPC {r['mpc']:.3f} "
                      f"SHD {_fmt(r['shd'], '.0f')} Brier {_fmt(r['brier'])} ({r['fit_seconds']:.0f} s)", flush=True)
    wanted = {_key(j) for j in jobs}
    table = summarise([r for r in rows if _key(r) in wanted])
    header = (f"Data: simulate_latent_anm(n_latents=l, n_envs={','.join(map(str, a.envs))}, n_per_env={a.rows}, "
              f"n_obs_dims={a.dims}, mechanism='nonlinear', noise={a.noise!r}, post_nonlinear={a.post_nonlinear}), "
              f"chain graph; seeds 0..{a.seeds - 1}; num_steps="
              f"{a.steps if a.steps is not None else 'each method default'}. Machine: "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; {a.workers} fits in parallel, 1 torch thread each; wall time of this "
              f"invocation {time.time() - t0:.0f} s. SHD and Brier after matching learned to true latents; the "
              "baselines' graphs are 0/1 point estimates.")
    print(table)
    with open(a.out, "w") as f:
        f.write("## Baselines\n\n" + header + "\n\n" + table + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
