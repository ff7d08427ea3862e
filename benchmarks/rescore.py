"""Recompute the edge probabilities of saved benchmark fits with another ``n_order_draws``, without refitting.

Reads the rows of ``benchmarks/recovery.py`` (``--results``) and the models it saved (``--save-dir``),
regenerates each data set from the row's simulator settings and seed, recomputes the inclusion context and the
edge probabilities of the saved fit with ``--n-order-draws`` environment-bootstrap draws (0: the fitted order
fixed, the probabilities of the variational posterior alone) and writes rows in the same format, with
``prior`` set to ``"<prior> (n_order_draws=K)"`` so that ``benchmarks/calibration.py`` groups them apart:

    python benchmarks/rescore.py --results benchmarks/results/recovery_default.jsonl --models runs/models \\
        --n-order-draws 0 --out runs/rescored0.jsonl
    python benchmarks/calibration.py --results benchmarks/results/recovery_default.jsonl runs/rescored0.jsonl \\
        --settings chain3-gauss,random5-gauss

The fits are the same, so this isolates what the orientation draws change. ``--min-effect`` rescores with
another inclusion threshold (``bayes_crl.priors.MIN_EFFECT``; the saved fits keep the one they were made with),
``--spike-scale`` the spike-and-slab's fits with another spike width.
The bootstrap seed is the one the estimator uses (derived from ``random_state``), so ``--n-order-draws 100``
reproduces the rows' probabilities.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="JSON lines of benchmarks/recovery.py")
    ap.add_argument("--models", required=True, help="the --save-dir of that run")
    ap.add_argument("--n-order-draws", type=int, required=True)
    ap.add_argument("--min-effect", type=float, default=None,
                    help="score with this inclusion threshold instead of the one saved with each fit's prior")
    ap.add_argument("--spike-scale", type=float, default=None,
                    help="spike-and-slab fits: score with this spike width (bayes_crl.priors.SpikeAndSlab.spike_scale)")
    ap.add_argument("--out", required=True, help="JSON-lines file written (overwritten)")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from baselines import graph_scores  # benchmarks/baselines.py
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm
    from bayes_crl._validation import check_random_state
    from bayes_crl.posterior import edge_inclusion, inclusion_context

    rows = []
    for line in open(a.results):
        r = json.loads(line)
        path = os.path.join(a.models, f"{r['setting'].replace('/', '_')}_seed{r['seed']}")
        if not os.path.exists(path):
            print(f"skipped {r['setting']} seed {r['seed']}: no saved model at {path}", flush=True)
            continue
        data = simulate_latent_anm(random_state=r["seed"], **r["sim"])
        m = LatentCausalModel.load(path)
        x, codes, _ = m._prepare(data.x, data.env, fitting=False)
        seed = int(check_random_state(m.random_state).integers(2**31 - 1))  # as in LatentCausalModel.fit
        ctx = inclusion_context(m.result_, m._scale(x), torch.as_tensor(codes), n_order_draws=a.n_order_draws,
                                seed=seed)
        result = m.result_
        if a.min_effect is not None:
            result = dataclasses.replace(result, prior=dataclasses.replace(result.prior, min_effect=a.min_effect))
        if a.spike_scale is not None:
            result = dataclasses.replace(result, prior=dataclasses.replace(result.prior, spike_scale=a.spike_scale))
        p = edge_inclusion(result, ctx, m.num_posterior_samples, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z_hat = m.transform(data.x, env=data.env)
        _, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
        tag = (f"n_order_draws={a.n_order_draws}" + ("" if a.min_effect is None else f", min_effect={a.min_effect}")
               + ("" if a.spike_scale is None else f", spike_scale={a.spike_scale}"))
        out = {**r, "prior": f"{r['prior']} ({tag})",
               **graph_scores(p, perm, data.adjacency)}
        rows.append(out)
        print(f"{r['setting']} seed {r['seed']}: Brier {r['brier']:.3f} -> {out['brier']:.3f}, SHD {r['shd']:.0f} -> "
              f"{out['shd']:.0f}", flush=True)
    with open(a.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} rows to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
