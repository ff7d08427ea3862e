"""Recovery benchmark: the paper's synthetic setting, fitted with the estimator's defaults.

Runs a grid of (setting, prior, seed) fits, appends one JSON line per fit to ``--results`` (so an
interrupted run resumes where it stopped) and writes the summary tables into ``--out`` (BENCHMARKS.md).

    python benchmarks/recovery.py --suite default --workers 2 --out benchmarks/results/recovery.md

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

SUITES = {
    # name: list of (setting name, simulate kwargs, model kwargs, seeds)
    "default": [
        ("chain3-gauss", dict(n_latents=3, graph="chain", noise="gaussian"), {}, range(5)),
        ("random5-gauss", dict(n_latents=5, graph="random", expected_degree=1.0, noise="gaussian"), {}, range(5)),
        ("chain3-violate2", dict(n_latents=3, graph="chain", noise="gaussian", violate=[2]), {}, range(3)),
        # the violated edge with one-sign strengths: no centring convention can land on the truth (Theorem 2.5)
        ("chain3-violate2-onesign", dict(n_latents=3, graph="chain", noise="gaussian", violate=[2],
                                         violate_one_sign=True), {}, range(3)),
        ("chain3-laplace", dict(n_latents=3, graph="chain", noise="laplace"), {"noise": "laplace"}, range(2)),
        ("chain3-gamma", dict(n_latents=3, graph="chain", noise="gamma"), {}, range(2)),
        ("chain3-linear", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="linear"), {}, range(2)),
        ("chain3-gauss/spike_slab", dict(n_latents=3, graph="chain", noise="gaussian"), {"edge_prior": "spike_slab"},
         range(5)),
        ("chain3-gauss/horseshoe", dict(n_latents=3, graph="chain", noise="gaussian"), {"edge_prior": "horseshoe"},
         range(5)),
        ("random5-gauss/horseshoe", dict(n_latents=5, graph="random", expected_degree=1.0, noise="gaussian"),
         {"edge_prior": "horseshoe"}, range(3)),
        ("chain3-gauss/laplace", dict(n_latents=3, graph="chain", noise="gaussian"), {"edge_prior": "laplace"},
         range(5)),
        ("chain3-gauss/none", dict(n_latents=3, graph="chain", noise="gaussian"), {"edge_prior": "none"}, range(2)),
        # no latent edges at all: every inclusion probability should be low
        ("null3-gauss", dict(n_latents=3, graph="random", expected_degree=0.0, noise="gaussian"), {}, range(3)),
    ],
    # the estimator's defaults on generators other than the default one (outside data is not ours)
    "generalise": [
        ("chain3-laplace-dm", dict(n_latents=3, graph="chain", noise="laplace"), {}, range(2)),
        ("chain3-gamma", dict(n_latents=3, graph="chain", noise="gamma"), {}, range(2)),
        ("chain3-linear", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="linear"), {}, range(2)),
        ("chain3-mlp", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="mlp"), {}, range(2)),
        ("chain3-allpos", dict(n_latents=3, graph="chain", noise="gaussian", random_sign=False), {}, range(2)),
        ("chain3-vanish3", dict(n_latents=3, graph="chain", noise="gaussian", vanish_envs=3), {}, range(2)),
        ("chain3-50env", dict(n_latents=3, graph="chain", noise="gaussian", n_envs=50), {}, range(2)),
        ("chain3-linmix-noisy", dict(n_latents=3, graph="chain", noise="gaussian", mixing="linear",
                                     obs_noise_std=0.1), {}, range(2)),
        ("random4-mlp-laplace", dict(n_latents=4, graph="random", expected_degree=1.0, noise="laplace",
                                     mechanism="mlp", n_obs_dims=20), {}, range(2)),
    ],
    # number of environments against the theory's 2l + 1 (= 7 for l = 3); 1000 rows per environment
    "envsweep": [
        (f"chain3-env{e}", dict(n_latents=3, graph="chain", noise="gaussian", n_envs=e), {}, range(2))
        for e in (3, 5, 7, 10, 20)
    ],
    "smoke": [
        ("chain2-gauss", dict(n_latents=2, graph="chain", noise="gaussian", n_envs=6, n_per_env=100), {"num_steps": 50},
         range(1)),
    ],
}

SIM_DEFAULTS = dict(n_envs=30, n_per_env=1000, n_obs_dims=10, mechanism="nonlinear")


def _patch_fit_svi(fit_kw: dict) -> None:
    """Pool initializer: make every fit pass ``fit_kw`` to :func:`bayes_crl.infer.fit_svi` (options the estimator
    does not expose, e.g. ``{"warmup_unmix": "local"}``)."""
    if not fit_kw:
        return
    import bayes_crl.estimator as est

    real = est.fit_svi

    def fit_svi(*args, **kw):
        return real(*args, **{**kw, **fit_kw})

    est.fit_svi = fit_svi


def run_one(job):
    name, simkw, modelkw, seed, save_dir = job
    import torch

    torch.set_num_threads(1)
    from baselines import graph_scores  # benchmarks/baselines.py
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    sk = {**SIM_DEFAULTS, **simkw}
    data = simulate_latent_anm(random_state=seed, **sk)
    mk = {"n_latents": sk["n_latents"], "random_state": seed, **modelkw}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LatentCausalModel(**mk).fit(data.x, env=data.env)
    z_hat = m.transform(data.x, env=data.env)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        m.save(os.path.join(save_dir, f"{name.replace('/', '_')}_seed{seed}"), overwrite=True)
    score, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
    corr = metrics.per_latent_correlation(data.z, z_hat)
    extra = {}
    hist = m.result_.history
    if "children_map_matrix" in hist:  # the coordinates before fit_svi's final children_map (flat_direction)
        z_before = z_hat @ np.linalg.inv(np.asarray(hist["children_map_matrix"]))
        extra = {"mpc_before_children_map": float(metrics.mpc(data.z, z_before)),
                 "per_latent_before_children_map": [float(c) for c in metrics.per_latent_correlation(data.z, z_before)],
                 "children_map": hist["children_map"]}
    return {
        "setting": name, "seed": seed, "prior": mk.get("edge_prior", LatentCausalModel().edge_prior), "sim": sk, "model": mk,
        "mpc": float(score), "per_latent": [float(c) for c in corr],
        **graph_scores(m.edge_inclusion_, perm, data.adjacency),  # probs, shd, brier, auroc
        "fit_seconds": float(m.fit_seconds_), "condition_iv": [bool(c) for c in data.condition_iv],
        "is_root": [bool(data.adjacency[:, i].sum() == 0) for i in range(sk["n_latents"])],
        "truth": data.adjacency.tolist(), **extra,
    }


def summarise(rows: list[dict]) -> str:
    out = []
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    out.append("| setting | prior | seeds | MPC median | MPC min | per-latent corr (median) | SHD median | SHD=0 | "
               "AUROC (pooled) | Brier | fit s (median) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    from sklearn.metrics import roc_auc_score

    for s in settings:
        rs = [r for r in rows if r["setting"] == s]
        mpcs = np.array([r["mpc"] for r in rs])
        pl = np.median(np.array([r["per_latent"] for r in rs]), 0)
        shds = np.array([r["shd"] for r in rs])
        t = np.concatenate([np.array(r["truth"])[~np.eye(len(r["truth"]), dtype=bool)] for r in rs])
        p = np.concatenate([np.array(r["probs"])[~np.eye(len(r["probs"]), dtype=bool)] for r in rs])
        au = float(roc_auc_score(t, p)) if 0 < t.sum() < len(t) else float("nan")
        br = float(np.mean((p - t) ** 2))
        out.append(f"| {s} | {rs[0]['prior']} | {len(rs)} | {np.median(mpcs):.3f} | {mpcs.min():.3f} | "
                   f"{', '.join(f'{c:.3f}' for c in pl)} | {np.median(shds):.1f} | {(shds == 0).sum()}/{len(rs)} | "
                   f"{au:.3f} | {br:.3f} | {np.median([r['fit_seconds'] for r in rs]):.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="default", choices=sorted(SUITES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", default="benchmarks/results/recovery.jsonl")
    ap.add_argument("--out", default=None, help="write the summary table (with machine and wall time) to this file")
    ap.add_argument("--only", default=None, help="comma-separated settings to run")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds: run only these of each setting's seeds")
    ap.add_argument("--save-dir", default=None, help="also save each fitted model here (for offline analysis)")
    ap.add_argument("--fit-svi-kw", default=None, help="JSON object of extra bayes_crl.infer.fit_svi arguments for every "
                    "fit (setting names get '/<key>=<value>' appended), e.g. '{\"warmup_unmix\": \"local\"}'")
    ap.add_argument("--prior", default=None, help="fit every setting with this edge_prior instead (setting names get "
                    "'/<prior>' appended)")
    a = ap.parse_args(argv)
    os.makedirs(os.path.dirname(a.results), exist_ok=True)
    done = set()
    rows = []
    if os.path.exists(a.results):
        for line in open(a.results):
            r = json.loads(line)
            rows.append(r)
            done.add((r["setting"], r["seed"]))
    only = set(a.only.split(",")) if a.only else None
    suite = SUITES[a.suite]
    if a.prior:
        suite = [(f"{n.split('/')[0]}/{a.prior}", sk, {**mk, "edge_prior": a.prior}, seeds) for n, sk, mk, seeds in suite
                 if only is None or n in only]
        only = {n for n, *_ in suite}
    fit_kw = json.loads(a.fit_svi_kw) if a.fit_svi_kw else {}
    if fit_kw:
        tag = ",".join(f"{k}={v}" for k, v in sorted(fit_kw.items()))
        suite = [(f"{n}/{tag}", sk, mk, seeds) for n, sk, mk, seeds in suite if only is None or n in only]
        only = {n for n, *_ in suite}
    keep_seeds = {int(s) for s in a.seeds.split(",")} if a.seeds else None
    jobs = [(n, sk, mk, s, a.save_dir) for n, sk, mk, seeds in suite for s in seeds
            if (n, s) not in done and (only is None or n in only) and (keep_seeds is None or s in keep_seeds)]
    print(f"{len(jobs)} fits to run ({len(done)} already in {a.results})", flush=True)
    t0 = time.time()
    with get_context("spawn").Pool(a.workers, initializer=_patch_fit_svi, initargs=(fit_kw,)) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            rows.append(r)
            with open(a.results, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['setting']:>26} seed {r['seed']}: MPC {r['mpc']:.3f} SHD {r['shd']:.0f} "
                  f"AUROC {r['auroc']:.3f} Brier {r['brier']:.3f} ({r['fit_seconds']:.0f} s)", flush=True)
    table = summarise([r for r in rows if only is None or r["setting"] in only])
    print(table)
    if a.out:
        header = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}; {a.workers} fits in parallel, 1 torch thread each; "
                  f"wall time of this invocation {time.time() - t0:.0f} s.")
        with open(a.out, "w") as f:
            f.write(header + "\n\n" + table + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
