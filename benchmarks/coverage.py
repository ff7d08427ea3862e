"""Coverage of the 90 % credible intervals of the per-environment causal strengths.

Reads fitted models saved by ``benchmarks/recovery.py --save-dir`` together with that run's
``--results`` rows (which hold the simulator settings), re-simulates each dataset from its seed, and
asks, per environment, whether the posterior 90 % interval of the learned strength covers the truth.

The truth is put into the model's coordinates by :func:`bayes_crl.metrics.strength_coverage`: the model identifies a strength
``W[u, j, i]`` only up to one scale per edge (the scales of the learned ``z_j``, ``z_i`` and of the
learned feature ``phi_ji``) and one offset per edge (the flat direction ``z_i -> z_i - c phi_ji(z_j)``,
which the centring fixes by convention). So for every true edge that the model has *in the same
direction*, the truth is mapped by the least-squares line ``a + b * W_true[u]`` through the
posterior means over the environments (2 numbers fitted from E environments: the coverage is slightly
optimistic for small E). A true edge the model has reversed or dropped is counted, not scored.
For a pair with no true edge (in either direction) the truth is 0 in every environment in any
coordinates, so there is nothing to fit: the interval covers when it contains 0.

    python benchmarks/coverage.py --results benchmarks/results/recovery_default.jsonl \
        --models runs/models --out benchmarks/results/coverage.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np


def run(results: str, models: str, num_samples: int) -> list[dict]:
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    rows = [json.loads(line) for line in open(results)]
    out = []
    for r in rows:
        path = os.path.join(models, f"{r['setting'].replace('/', '_')}_seed{r['seed']}")
        if not os.path.exists(path):
            continue
        data = simulate_latent_anm(random_state=r["seed"], **r["sim"])
        m = LatentCausalModel.load(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z_hat = m.transform(data.x, env=data.env)
        _, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
        env_idx = [m.env_labels_.index(u) for u in range(data.n_envs)]
        draws = m.sample_posterior(num_samples)["weight"][:, env_idx]
        c = metrics.strength_coverage(data.weights, draws, data.adjacency, perm)
        out.append({"setting": r["setting"], "seed": r["seed"], "mpc": r["mpc"], **c})
        print(f"{r['setting']:>26} seed {r['seed']}: true edges {c['edge_hits']}/{c['edge_n']} "
              f"(scored {c['edges_scored']}, not {c['edges_unscored']}), non-edges {c['null_hits']}/{c['null_n']}",
              flush=True)
    return out


def summarise(rows: list[dict]) -> str:
    lines = ["| setting | fits | true edges scored / not | coverage, true edges | coverage, non-edges | "
             "interval width / sd of truth (median) |", "|---|---|---|---|---|---|"]
    for s in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == s]
        eh, en = sum(r["edge_hits"] for r in rs), sum(r["edge_n"] for r in rs)
        nh, nn = sum(r["null_hits"] for r in rs), sum(r["null_n"] for r in rs)
        wr = [w for r in rs for w in r["width_ratio"]]
        lines.append(f"| {s} | {len(rs)} | {sum(r['edges_scored'] for r in rs)} / "
                     f"{sum(r['edges_unscored'] for r in rs)} | "
                     f"{(eh / en if en else float('nan')):.3f} ({eh}/{en}) | "
                     f"{(nh / nn if nn else float('nan')):.3f} ({nh}/{nn}) | "
                     f"{(np.median(wr) if wr else float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="JSON lines written by benchmarks/recovery.py")
    ap.add_argument("--models", required=True, help="the --save-dir of that recovery run")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = run(a.results, a.models, a.num_samples)
    if not rows:
        print(f"no saved models in {a.models} match the rows of {a.results}", file=sys.stderr)
        return 1
    table = summarise(rows)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"Command: python benchmarks/coverage.py --results {a.results} --models {a.models}\n\n"
                    + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
