"""What the final identification's criterion does to fitted latents: variants replayed on the same fits.

The final latent-only refit holds the encoder fixed, so a fit's latents (and its MPC) are exactly what the final
identification makes of the latents it receives. This script runs the estimator's defaults up to that stage,
saves those latents (``--latents-dir``; a saved file is reused, so an interrupted run resumes), and replays the
final identification on them with several unmixing variants, each followed by the fit's own order search
(``shared=True``) and centring:

- ``none``: no unmixing (order search and centring only);
- ``l1_1``: the current default, one descent of :func:`bayes_crl.unmix.sparse_unmixing` from the current
  coordinates;
- ``l1_64``: 64 random starts of the same criterion;
- with ``--unmix-module PATH`` (another version of ``bayes_crl/unmix.py``, for example one taken from git with
  ``git show <commit>:bayes_crl/unmix.py > runs/unmix_alt.py``): ``alt_1`` and ``alt_64``, its
  ``sparse_unmixing`` from 1 and from 64 starts.

One JSON line per fit in ``--results`` (MPC of each variant, and each variant's partial-correlation loss on
its final latents); the table on stdout gives MPC per variant.

    python benchmarks/final_identification.py --data-dir ../shared/outside --seeds 0,1 --sim --workers 2 \\
        --latents-dir runs/final_latents --results runs/final_identification.jsonl
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
from multiprocessing import get_context

import numpy as np


class _Stop(Exception):
    pass


def capture(job) -> str:
    """Fit ``job`` = (name, source, random_state, out) with the defaults up to the final identification."""
    name, source, rs, out = job
    if os.path.exists(out):
        return out
    import torch

    torch.set_num_threads(1)
    import bayes_crl.infer as infer
    from bayes_crl import LatentCausalModel, simulate_latent_anm

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import recovery  # benchmarks/recovery.py: load and simulate exactly as the recovery benchmark does

    if source.endswith(".npz"):
        d = recovery._load_outside(source)  # float64, as the recovery benchmark fits it
        x, env, z = d.x, d.env, d.z
    else:  # "<setting>:<seed>" of the recovery benchmark's default suite
        setting, seed = source.split(":")
        simkw = next(sk for n, sk, _, _ in recovery.SUITES["default"] if n == setting)
        d = simulate_latent_anm(random_state=int(seed), **{**recovery.SIM_DEFAULTS, **simkw})
        x, env, z = d.x, d.env, d.z
    saved = {}

    def grab(ctx, run):
        saved["z_fit"], saved["env"] = ctx.latents(run), ctx.es_np
        raise _Stop

    infer.final_identification = grab
    try:
        LatentCausalModel(n_latents=z.shape[1], random_state=rs).fit(x, env=env)
    except _Stop:
        pass
    if len(saved["z_fit"]) != len(z):
        raise RuntimeError(f"{name}: the fit's search rows are a subset; this script needs every row")
    np.savez(out, z_fit=saved["z_fit"], env=saved["env"], z=z)
    return out


def replay(job) -> dict:
    """MPC of each final-identification variant on the latents saved in ``job`` = (path, unmix_module)."""
    path, module = job
    import torch

    torch.set_num_threads(1)
    from bayes_crl import metrics
    from bayes_crl import unmix as cur
    from bayes_crl.order import best_order

    variants = {"none": None, "l1_1": (cur, 1), "l1_64": (cur, 64)}
    if module:
        spec = importlib.util.spec_from_file_location("unmix_alt", module)
        alt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(alt)
        variants.update({"alt_1": (alt, 1), "alt_64": (alt, 64)})
    with np.load(path, allow_pickle=False) as f:
        z_fit, env, z = f["z_fit"], f["env"], f["z"]
    l = z.shape[1]
    rec = {"fit": os.path.basename(path)[:-4]}
    for name, how in variants.items():
        zi = z_fit if how is None else z_fit @ np.asarray(how[0].sparse_unmixing(z_fit, env, seed=0,
                                                                              n_starts=how[1])[0])
        order = best_order(zi, env, shared=True)[0]
        zo = zi[:, order]
        zc = zo @ cur.centring_map(zo, env)
        zs = (zc - zc.mean(0)) / zc.std(0)
        cov = torch.as_tensor(cur.env_covariances(zs, env))
        loss = float(cur.partial_correlation_loss(torch.eye(l, dtype=torch.float64)[None], cov, 0.01)[0])
        rec[name] = {"mpc": float(metrics.mpc(z, zc)), "l1_loss": loss / cov.shape[0]}
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder of .npz files (keys x, env, z)")
    ap.add_argument("--seeds", default="0", help="comma-separated random_states of the fits on each file")
    ap.add_argument("--sim", action="store_true",
                    help="also the default suite's random5-gauss seeds 0-4 and chain3-gauss seeds 0-2 (as fitted by "
                         "benchmarks/recovery.py: the seed is the data's and the fit's random_state)")
    ap.add_argument("--latents-dir", default="runs/final_latents")
    ap.add_argument("--unmix-module", default=None, help="another unmix.py to replay (variants alt_1, alt_64)")
    ap.add_argument("--results", default="runs/final_identification.jsonl")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    os.makedirs(a.latents_dir, exist_ok=True)
    jobs = []
    if a.data_dir:
        for f in sorted(glob.glob(os.path.join(a.data_dir, "*.npz"))):
            stem = os.path.basename(f)[:-4]
            jobs += [(stem, f, int(s), os.path.join(a.latents_dir, f"{stem}_rs{s}.npz")) for s in a.seeds.split(",")]
    if a.sim:
        sims = [*(f"random5-gauss:{k}" for k in range(5)), *(f"chain3-gauss:{k}" for k in range(3))]
        # the suite's random_state is the data's seed
        jobs += [(s, s, int(s.split(":")[1]), os.path.join(a.latents_dir, s.replace(":", "_seed") + ".npz"))
                 for s in sims]
    if not jobs:
        ap.error("nothing to run: pass --data-dir and/or --sim")
    with get_context("spawn").Pool(a.workers) as pool:
        paths = list(pool.imap(capture, jobs))
        recs = list(pool.imap(replay, [(p, a.unmix_module) for p in paths]))
    with open(a.results, "w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")
    names = [k for k in recs[0] if k != "fit"]
    print("| fit | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in recs:
        print(f"| {r['fit']} | " + " | ".join(f"{r[n]['mpc']:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
