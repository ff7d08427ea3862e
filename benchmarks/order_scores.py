"""Free against shared order score on fitted latents: how many true edges each puts forward.

For every fitted model saved by ``benchmarks/recovery.py --save-dir`` (with that run's ``--results`` rows),
re-simulate the data, take the model's latents (``transform``), match them to the true latents, and run the
exact order search (:func:`bayes_crl.order.best_order`, 20 000 random rows) with the free per-environment
score and with the model's mechanism class (``shared=True``). Prints, per fit, the true edges whose parent
comes before the child in each order.

    python benchmarks/order_scores.py runs/rec.jsonl:runs/models runs/gen.jsonl:runs/models_gen
"""
from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm
    from bayes_crl.order import best_order

    pairs = [a.split(":") for a in (argv if argv is not None else sys.argv[1:])]
    tot = {False: [0, 0], True: [0, 0]}
    for res, mdir in pairs:
        for line in open(res):
            r = json.loads(line)
            path = os.path.join(mdir, f"{r['setting'].replace('/', '_')}_seed{r['seed']}")
            data = simulate_latent_anm(random_state=r["seed"], **r["sim"])
            if not os.path.exists(path) or data.adjacency.sum() == 0:
                continue
            m = LatentCausalModel.load(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z_hat = m.transform(data.x, env=data.env)
            _, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
            za = z_hat[:, perm]  # column i matches true latent i
            sub = np.random.default_rng(0).permutation(len(za))[:20000]
            t = data.adjacency
            out = []
            for shared in (False, True):
                order = best_order(za[sub], data.env[sub], shared=shared)[0]
                pos = {v: k for k, v in enumerate(order)}
                fwd = sum(pos[j] < pos[i] for j in range(len(t)) for i in range(len(t)) if t[j, i])
                tot[shared][0] += fwd
                tot[shared][1] += int(t.sum())
                out.append(f"{'shared' if shared else 'free'} {fwd}/{int(t.sum())}")
            print(f"{r['setting']:>26} seed {r['seed']} (MPC {r['mpc']:.3f}): forward edges " + ", ".join(out),
                  flush=True)
    print(f"total: free {tot[False][0]}/{tot[False][1]}, shared {tot[True][0]}/{tot[True][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
