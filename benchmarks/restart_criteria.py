"""Which restart-selection criterion tracks the truth? Per warm-up: agreement, unmixing loss and true MPC.

Runs the estimator's warm-ups (``n_restarts`` of them, each followed by its sparse unmixing) on each data set,
then stops the fit at the restart selection and records, for every warm-up, the selection's inputs (mean
matched correlation with the other warm-ups, the unmixing loss) and the MPC of its latents against the true
ones. One JSON line per data set in ``--results``; ``--out`` gets a Markdown table: per data set the true MPC of
the warm-up each criterion would keep, against the best and the worst warm-up.

    python benchmarks/restart_criteria.py --data-dir ../shared/outside --wide --results runs/restarts.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class _Stop(Exception):
    pass


_ORIGINAL: dict = {}  # the unpatched functions, kept once per worker process


def run_one(job):
    import torch

    torch.set_num_threads(1)
    import recovery  # benchmarks/recovery.py

    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    name, source, seed, n_restarts = job
    if source.endswith(".npz"):
        data = recovery._load_outside(source)
    else:
        sk = {**recovery.SIM_DEFAULTS, **dict(next(s for n, s, *_ in recovery.SUITES["wide"] if n == source))}
        data = simulate_latent_anm(random_state=seed, **sk)
    rec: dict = {}
    from bayes_crl import stages as where  # the module whose functions the fit calls for the restart selection
    import bayes_crl.estimator as est

    real_agree, real_select, real_fit = _ORIGINAL.setdefault(
        id(where), (where._agreement, where._select_restart, est.fit_svi))

    def fit_svi(*args, **kw):
        rec["fit_seed"] = int(kw["seed"])
        return real_fit(*args, **kw)

    def agreement(zs):
        n = len(data.x)
        sub = torch.randperm(n, generator=torch.Generator().manual_seed(rec["fit_seed"]))[:5000].numpy()
        rec["mpc"] = [float(metrics.mpc(data.z[sub], z)) for z in zs]
        return real_agree(zs)

    def select(agree, unmix_loss):
        rec["agree"], rec["unmix_loss"] = [float(a) for a in agree], [float(u) for u in unmix_loss]
        rec["selected"] = int(real_select(agree, unmix_loss)[0])
        raise _Stop

    where._agreement, where._select_restart, est.fit_svi = agreement, select, fit_svi
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LatentCausalModel(n_latents=data.z.shape[1], n_restarts=n_restarts, random_state=seed).fit(data.x, data.env)
    except _Stop:
        pass
    return {"data": name, "seed": seed, **rec}


def summarise(rows):
    lines = ["| data | seed | best | worst | most agreeing | sparsest | default rule | agreement-ranked corr. with MPC |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, a, u = np.array(r["mpc"]), np.array(r["agree"]), np.array(r["unmix_loss"])
        rho = float(np.corrcoef(a, m)[0, 1]) if m.std() > 0 and a.std() > 0 else float("nan")
        lines.append(f"| {r['data']} | {r['seed']} | {m.max():.3f} | {m.min():.3f} | {m[np.argmax(a)]:.3f} | "
                     f"{m[np.argmin(u)]:.3f} | {m[r['selected']]:.3f} | {rho:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder of outside .npz files")
    ap.add_argument("--wide", action="store_true", help="also the recovery benchmark's 'wide' settings")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--restarts", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import recovery

    sources = []
    if a.data_dir:
        sources += [(f[:-4], os.path.join(a.data_dir, f)) for f in sorted(os.listdir(a.data_dir)) if f.endswith(".npz")]
    if a.wide:
        sources += [(n, n) for n, *_ in recovery.SUITES["wide"]]
    done = set()
    rows = []
    if os.path.exists(a.results):
        rows = [json.loads(line) for line in open(a.results)]
        done = {(r["data"], r["seed"]) for r in rows}
    jobs = [(n, s, int(seed), a.restarts) for n, s in sources for seed in a.seeds.split(",") if (n, int(seed)) not in done]
    print(f"{len(jobs)} data sets to run", flush=True)
    with get_context("spawn").Pool(a.workers) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            rows.append(r)
            with open(a.results, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(r["data"], r["seed"], "mpc", np.round(r["mpc"], 3), "agree", np.round(r["agree"], 3), "unmix",
                  np.round(r["unmix_loss"], 3), flush=True)
    table = summarise(rows)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
