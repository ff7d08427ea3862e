"""Diagnose what a recovery run identified: per fit, the causal order the search finds on the final latents,
and how each learned latent decomposes into the true ones.

Reads the JSON lines of ``benchmarks/recovery.py --results R`` and the models it saved with ``--save-dir D``:

    python benchmarks/identification.py --results R --models D

For each fit it prints
- ``order(final)``: the order :func:`bayes_crl.order.best_order` finds on the final latents, in true indices
  (the truth is topologically ordered, so a right order is increasing along each true edge), and the
  score gap to the runner-up order;
- per true latent, the least-squares coefficients of its matched learned latent (standardised) on the
  standardised true latents and their tanh, with the R^2: a learned latent that spans the truth but carries a
  share of a parent is the flat direction ``z_i - c z_j`` left undecided by the prior.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--models", required=True)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm
    from bayes_crl.order import order_scores

    for line in open(a.results):
        r = json.loads(line)
        path = os.path.join(a.models, f"{r['setting'].replace('/', '_')}_seed{r['seed']}")
        if not os.path.exists(path):
            continue
        data = simulate_latent_anm(random_state=r["seed"], **r["sim"])
        m = LatentCausalModel.load(path)
        zh = m.transform(data.x, env=data.env)
        _, perm, _ = metrics.mpc(data.z, zh, return_matching=True)
        true_of = {int(perm[i]): i for i in range(len(perm))}
        env = np.unique(data.env, return_inverse=True)[1]
        line_out = f"{r['setting']} seed {r['seed']}: MPC {r['mpc']:.3f}"
        if zh.shape[1] <= 6:
            sc = sorted(order_scores(zh, env).items(), key=lambda kv: -kv[1])
            best = [true_of[k] for k in sc[0][0]]
            line_out += f"; order(final) {best} (gap to next {sc[0][1] - sc[1][1]:.1f})"
            line_out += f"; slot order of the fit {[true_of[k] for k in range(len(perm))]}"
        print(line_out)
        z = (data.z - data.z.mean(0)) / data.z.std(0)
        zs = (zh - zh.mean(0)) / zh.std(0)
        feats = np.concatenate([z, np.tanh(z), np.ones((len(z), 1))], 1)
        l = z.shape[1]
        for i in range(l):
            y = zs[:, perm[i]]
            coef, *_ = np.linalg.lstsq(feats, y, rcond=None)
            r2 = 1 - ((y - feats @ coef) ** 2).mean() / y.var()
            print(f"   z{i}: linear {np.round(coef[:l], 2).tolist()} tanh {np.round(coef[l:2 * l], 2).tolist()} "
                  f"R2 {r2:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
