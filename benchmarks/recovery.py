"""Recovery benchmark: the paper's synthetic setting and data from outside generators, fitted with the
estimator's defaults.

Runs a grid of (setting, prior, seed) fits, appends one JSON line per fit to ``--results`` (so an
interrupted run resumes where it stopped) and writes the summary tables into ``--out`` (BENCHMARKS.md).

    python benchmarks/recovery.py --suite default --workers 2 --out benchmarks/results/recovery_default.md

The ``outside`` suite fits the ``.npz`` files of a folder written by generators this project did not write
(keys ``x, env, z, adjacency[parent, child]``; see the folder's README), with the estimator's defaults and, in
the same run, the iVAE baseline and the paper's point estimate (``PaperL1``):

    python benchmarks/recovery.py --suite outside --data-dir ../shared/outside --results runs/outside.jsonl

Each fit uses one torch thread; ``--workers`` fits run side by side.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
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
    # the regimes of outside generators: observed dimension d = l and d = 2l, linear mechanisms, strengths
    # |w| in (0.2, 1.5) with random signs, noise locations +-2 and scales spanning a factor of 30, fewer
    # environments than 2l + 1
    "wide": [
        *[(f"chain3-d{d}-lin", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="linear", n_obs_dims=d,
                                    weight_range=(0.2, 1.5)), {}, range(2)) for d in (3, 6)],
        *[(f"random5-d{d}-lin", dict(n_latents=5, graph="random", expected_degree=1.5, noise="gaussian",
                                     mechanism="linear", n_obs_dims=d, weight_range=(0.2, 1.5), n_envs=40), {}, range(2))
          for d in (5, 10)],
        ("chain3-d3-nonlin", dict(n_latents=3, graph="chain", noise="gaussian", n_obs_dims=3), {}, range(2)),
        ("chain3-d6-violate2", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="linear", n_obs_dims=6,
                                    weight_range=(0.2, 1.5), violate=[2]), {}, range(2)),
        ("chain3-d6-env5", dict(n_latents=3, graph="chain", noise="gaussian", mechanism="linear", n_obs_dims=6,
                                weight_range=(0.2, 1.5), n_envs=5), {}, range(1)),
        ("null3-d3", dict(n_latents=3, graph="random", expected_degree=0.0, noise="gaussian", n_obs_dims=3), {},
         range(1)),
    ],
    # larger graphs: random DAGs of 5, 10 and 20 latents (expected degree 1) observed in d = 2l dimensions, at least
    # 2l + 1 environments of 1000 rows; beyond 12 latents the order search uses its local search
    # (bayes_crl.order.greedy_order)
    "large": [
        (f"random{l}-d{2 * l}", dict(n_latents=l, graph="random", expected_degree=1.0, noise="gaussian",
                                     n_obs_dims=2 * l, n_envs=max(30, 2 * l + 1)), {}, range(1))
        for l in (5, 10, 20)
    ],
    "smoke": [
        ("chain2-gauss", dict(n_latents=2, graph="chain", noise="gaussian", n_envs=6, n_per_env=100), {"num_steps": 50},
         range(1)),
    ],
}

# methods fitted to every file of the outside suite ("LatentCausalModel": the estimator's defaults)
OUTSIDE_METHODS = ("LatentCausalModel", "IVAE", "PaperL1")


def outside_suite(data_dir: str, seeds=range(1)) -> list:
    """One setting per ``.npz`` file in ``data_dir`` and method (``<file>`` or ``<file>/<method>``); the seeds are
    the fits' ``random_state`` (the data are the file's)."""
    if not os.path.isdir(data_dir):
        raise SystemExit(f"--data-dir: expected a folder of .npz files, got {data_dir!r} (not a folder)")
    files = sorted(f[:-4] for f in os.listdir(data_dir) if f.endswith(".npz"))
    if not files:
        raise SystemExit(f"--data-dir: no .npz files in {data_dir!r}")
    return [(f if m == "LatentCausalModel" else f"{f}/{m}", {"outside": os.path.join(data_dir, f + ".npz")},
             {} if m == "LatentCausalModel" else {"_method": m}, seeds) for f in files for m in OUTSIDE_METHODS]


def linear_ceiling(z_true: np.ndarray, z_hat: np.ndarray) -> list[float]:
    """Per true latent, the correlation of its best linear prediction from all learned latents (with an
    intercept): the MPC a perfect linear re-identification of ``z_hat`` could reach. A gap between it and the
    per-latent correlation is in the coordinates; a low ceiling is in the nonlinear part (encoder/decoder)."""
    a = np.column_stack([z_hat, np.ones(len(z_hat))])
    coef = np.linalg.lstsq(a, z_true, rcond=None)[0]
    pred = a @ coef
    return [float(abs(np.corrcoef(pred[:, i], z_true[:, i])[0, 1])) for i in range(z_true.shape[1])]


def _load_outside(path: str):
    """The file's ``x, env, z, adjacency`` as a simulator-like namespace (``condition_iv`` from ``weights``)."""
    from types import SimpleNamespace

    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    adj = np.asarray(d["adjacency"], dtype=int)
    l = adj.shape[0]
    if "weights" in d:  # (iv): every incoming edge of a node vanishes in some environment
        w = np.asarray(d["weights"])
        civ = [bool(all((w[:, j, i] == 0).any() for j in np.flatnonzero(adj[:, i]))) for i in range(l)]
    else:
        civ = [True] * l
    return SimpleNamespace(x=d["x"].astype(np.float64), env=d["env"].astype(np.int64), z=d["z"].astype(np.float64),
                           adjacency=adj, condition_iv=civ)


SIM_DEFAULTS = dict(n_envs=30, n_per_env=1000, n_obs_dims=10, mechanism="nonlinear")


def load_source(source: str):
    """``(data, random_state, estimator keywords)`` for a source of the offline scripts: ``"<path>.npz"`` or
    ``"<path>.npz@<random_state>"`` (an outside file, loaded as :func:`_load_outside` does), or
    ``"<setting>:<seed>"`` (a setting of a suite, simulated as this benchmark does)."""
    if ".npz" in source:
        path, _, rs = source.partition("@")
        return _load_outside(path), int(rs or 0), {}
    from bayes_crl import simulate_latent_anm

    setting, seed = source.split(":")
    simkw, estkw = next((sk, ek) for suite in SUITES.values() for n, sk, ek, _ in suite if n == setting)
    return simulate_latent_anm(random_state=int(seed), **{**SIM_DEFAULTS, **simkw}), int(seed), estkw


def add_source_args(ap: argparse.ArgumentParser) -> None:
    """The offline scripts' data options: outside files at some random states and default-suite settings."""
    ap.add_argument("--data-dir", default=None, help="folder of .npz files (keys x, env, z)")
    ap.add_argument("--only", default=None, help="comma-separated file stems of --data-dir")
    ap.add_argument("--random-states", default="0", type=lambda v: [int(k) for k in v.split(",")],
                    help="comma-separated random states of the fits of --data-dir files (rows name them <stem>@<k>)")
    ap.add_argument("--sim", action="store_true", help="also the default suite's settings below")
    ap.add_argument("--sim-settings", default="random5-gauss", help="comma-separated settings of the suites")
    ap.add_argument("--sim-seeds", default="0,1,2,3,4", type=lambda v: [int(k) for k in v.split(",")])


def sources(a: argparse.Namespace) -> list[tuple[str, str]]:
    """``(row name, source for load_source)`` per fit the options of :func:`add_source_args` ask for."""
    out = []
    if a.data_dir:
        files = sorted(glob.glob(os.path.join(a.data_dir, "*.npz")))
        if a.only:
            files = [f for f in files if os.path.basename(f)[:-4] in a.only.split(",")]
        out += [(os.path.basename(f)[:-4] + (f"@{rs}" if rs else ""), f + (f"@{rs}" if rs else ""))
                for rs in a.random_states for f in files]
    if a.sim:
        out += [(f"{st}:{k}", f"{st}:{k}") for st in a.sim_settings.split(",") for k in a.sim_seeds]
    return out


THREADS = 1  # torch threads per fit (set by the pool initializer from --threads)


def _init_worker(fit_kw: dict, threads: int = 1) -> None:
    """Pool initializer: torch threads per fit, and the extra ``fit_svi`` arguments (:func:`_patch_fit_svi`)."""
    global THREADS
    THREADS = int(threads)
    _patch_fit_svi(fit_kw)


def _patch_fit_svi(fit_kw: dict) -> None:
    """Pool initializer: make every fit pass ``fit_kw`` to :func:`bayes_crl.infer.fit_svi` (options the estimator
    does not expose, e.g. ``{"recheck_frac": 0.5}``)."""
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

    torch.set_num_threads(THREADS)
    from baselines import graph_scores  # benchmarks/baselines.py
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    if "outside" in simkw:
        data = _load_outside(simkw["outside"])
        sk = {"outside": os.path.basename(simkw["outside"]), "n_latents": data.z.shape[1]}
    else:
        sk = {**SIM_DEFAULTS, **simkw}
        data = simulate_latent_anm(random_state=seed, **sk)
    modelkw = dict(modelkw)
    method = modelkw.pop("_method", "LatentCausalModel")
    mk = {"n_latents": sk["n_latents"], "random_state": seed, **modelkw}
    import warnings

    if method != "LatentCausalModel":
        from baselines import _estimator, fit_and_score  # benchmarks/baselines.py

        job = {"setting": name, "seed": seed, "method": method, "sim": sk, "model": mk,
               "condition_iv": [bool(c) for c in data.condition_iv],
               "is_root": [bool(data.adjacency[:, i].sum() == 0) for i in range(sk["n_latents"])]}
        est = _estimator(method, **mk)
        r = fit_and_score(est, data, job)
        r["linear_ceiling"] = linear_ceiling(data.z, est.transform(data.x, env=data.env))
        r["prior"] = "laplace" if method == "PaperL1" else "—"
        if r["probs"] is None:
            r.update(shd=float("nan"), brier=float("nan"), auroc=float("nan"), probs=np.full_like(
                data.adjacency, np.nan, dtype=float).tolist())
        return r
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LatentCausalModel(**mk).fit(data.x, env=data.env)
        report = m.identifiability_report()
    z_hat = m.transform(data.x, env=data.env)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        m.save(os.path.join(save_dir, f"{name.replace('/', '_')}_seed{seed}"), overwrite=True)
    score, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
    corr = metrics.per_latent_correlation(data.z, z_hat)
    return {
        "setting": name, "seed": seed, "prior": mk.get("edge_prior", LatentCausalModel().edge_prior), "sim": sk, "model": mk,
        "mpc": float(score), "per_latent": [float(c) for c in corr],
        **graph_scores(m.edge_inclusion_, perm, data.adjacency),  # probs, shd, brier, auroc
        "fit_seconds": float(m.fit_seconds_), "condition_iv": [bool(c) for c in data.condition_iv],
        "is_root": [bool(data.adjacency[:, i].sum() == 0) for i in range(sk["n_latents"])],
        "linear_ceiling": linear_ceiling(data.z, z_hat),
        "truth": data.adjacency.tolist(), "method": method, "wall_seconds": time.perf_counter() - t0,
        # the report's verdict per learned latent, in the order of the true latents they were matched to
        "identified": [bool(report.latents[perm[i]].identified) for i in range(sk["n_latents"])],
        # this worker process runs one fit (maxtasksperchild=1): its peak resident memory is the fit's
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def summarise(rows: list[dict]) -> str:
    out = []
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    out.append("| setting | method | prior | fits | MPC median | MPC min | per-latent corr (median) | SHD median | SHD=0 | "
               "AUROC (pooled) | Brier | roots >= 0.95 | identified (report) | fit s (median) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    from sklearn.metrics import roc_auc_score

    for s in settings:
        rs = [r for r in rows if r["setting"] == s]
        mpcs = np.array([r["mpc"] for r in rs])
        pl = np.median(np.array([r["per_latent"] for r in rs]), 0)
        shds = np.array([r["shd"] for r in rs], dtype=float)
        t = np.concatenate([np.array(r["truth"])[~np.eye(len(r["truth"]), dtype=bool)] for r in rs])
        p = np.concatenate([np.array(r["probs"], dtype=float)[~np.eye(len(r["probs"]), dtype=bool)] for r in rs])
        graph = bool(np.all(np.isfinite(p)))
        au = float(roc_auc_score(t, p)) if graph and 0 < t.sum() < len(t) else float("nan")
        br = float(np.mean((p - t) ** 2)) if graph else float("nan")
        roots = [c for r in rs for c, root in zip(r["per_latent"], r.get("is_root", [])) if root]
        roots_ok = f"{sum(c >= 0.95 for c in roots)}/{len(roots)}" if roots else "—"
        ident = [r["identified"] for r in rs if r.get("identified") is not None]
        ident_s = " ".join("".join("y" if v else "n" for v in i) for i in ident) if ident else "—"
        shd_s = f"{np.median(shds):.1f} | {(shds == 0).sum()}/{len(rs)}" if graph else "— | —"
        out.append(f"| {s.split('/')[0]} | {rs[0].get('method', 'LatentCausalModel')}{'/' + '/'.join(s.split('/')[1:]) if '/' in s and rs[0].get('method', 'LatentCausalModel') == 'LatentCausalModel' else ''} | "
                   f"{rs[0]['prior']} | {len(rs)} | {np.median(mpcs):.3f} | {mpcs.min():.3f} | "
                   f"{', '.join(f'{c:.3f}' for c in pl)} | {shd_s} | "
                   f"{'—' if np.isnan(au) else f'{au:.3f}'} | {'—' if np.isnan(br) else f'{br:.3f}'} | {roots_ok} | "
                   f"{ident_s} | {np.median([r['fit_seconds'] for r in rs]):.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="default", choices=sorted([*SUITES, "outside"]))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per fit (default 1; setting names get "
                    "'/threads=<n>' appended otherwise)")
    ap.add_argument("--data-dir", default=None, help="folder of outside .npz datasets (needed by --suite outside)")
    ap.add_argument("--results", default="benchmarks/results/recovery_default.jsonl")
    ap.add_argument("--out", default=None, help="write the summary table (with machine and wall time) to this file")
    ap.add_argument("--only", default=None, help="comma-separated settings to run")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds: run only these of each setting's seeds")
    ap.add_argument("--save-dir", default=None, help="also save each fitted model here (for offline analysis)")
    ap.add_argument("--fit-svi-kw", default=None, help="JSON object of extra bayes_crl.infer.fit_svi arguments for every "
                    "fit (setting names get '/<key>=<value>' appended), e.g. '{\"recheck_frac\": 0.5}'")
    ap.add_argument("--model-kw", default=None, help="JSON object of extra LatentCausalModel arguments for every fit "
                    "(setting names get '/<key>=<value>' appended), e.g. '{\"min_obs_scale\": 0.02}'")
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
    if a.suite == "outside":
        if not a.data_dir:
            ap.error("--suite outside needs --data-dir (a folder of .npz files)")
        suite = outside_suite(a.data_dir, [int(x) for x in a.seeds.split(",")] if a.seeds else range(1))
    else:
        suite = SUITES[a.suite]
    if a.prior:
        suite = [(f"{n.split('/')[0]}/{a.prior}", sk, {**mk, "edge_prior": a.prior}, seeds) for n, sk, mk, seeds in suite
                 if (only is None or n in only) and "_method" not in mk]  # the baselines have no edge prior
        only = {n for n, *_ in suite}
    fit_kw = json.loads(a.fit_svi_kw) if a.fit_svi_kw else {}
    if fit_kw:
        tag = ",".join(f"{k}={v}" for k, v in sorted(fit_kw.items()))
        suite = [(f"{n}/{tag}", sk, mk, seeds) for n, sk, mk, seeds in suite if only is None or n in only]
        only = {n for n, *_ in suite}
    model_kw = json.loads(a.model_kw) if a.model_kw else {}
    if model_kw:
        tag = ",".join(f"{k}={v}" for k, v in sorted(model_kw.items()))
        suite = [(f"{n}/{tag}", sk, {**mk, **model_kw}, seeds) for n, sk, mk, seeds in suite
                 if (only is None or n in only) and "_method" not in mk]
        only = {n for n, *_ in suite}
    if a.threads != 1:
        suite = [(f"{n}/threads={a.threads}", sk, mk, seeds) for n, sk, mk, seeds in suite if only is None or n in only]
        only = {n for n, *_ in suite}
    keep_seeds = {int(s) for s in a.seeds.split(",")} if a.seeds else None
    jobs = [(n, sk, mk, s, a.save_dir) for n, sk, mk, seeds in suite for s in seeds
            if (n, s) not in done and (only is None or n in only) and (keep_seeds is None or s in keep_seeds)]
    print(f"{len(jobs)} fits to run ({len(done)} already in {a.results})", flush=True)
    t0 = time.time()
    with get_context("spawn").Pool(a.workers, initializer=_init_worker, initargs=(fit_kw, a.threads),
                                     maxtasksperchild=1) as pool:
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
