"""Seconds the spike-and-slab's exact edge posterior costs, by number of latents.

For each ``l`` it draws latents (30 environments x 1000 rows) and times, on one thread, what the estimator's
summary does for the spike-and-slab: the per-environment statistics of ``--latent-draws`` draws of the latents
(:func:`bayes_crl.parent_sets.child_statistics`), the exact marginals averaged over ``--orders`` order draws
(:func:`bayes_crl.parent_sets.edge_marginals`) and 1000 graph draws (:func:`bayes_crl.parent_sets.sample_parent_sets`).
The orders are random permutations: the worst case, as every child then meets many different candidate sets
(bootstrap orders of a fit mostly repeat a few orders).

    python benchmarks/edge_posterior_cost.py --latents 3,5,8
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from bayes_crl.parent_sets import child_statistics, edge_marginals, sample_parent_sets
    from bayes_crl.simulate import simulate_spike_slab_latents

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", default="3,5,8")
    ap.add_argument("--orders", type=int, default=100)
    ap.add_argument("--latent-draws", type=int, default=4)
    a = ap.parse_args(argv)
    print("| l | statistics s | marginals s | 1000 graph draws s | total s |")
    print("|---|---|---|---|---|")
    for l in (int(v) for v in a.latents.split(",")):
        d = simulate_spike_slab_latents(l, 30, 1000, random_state=0)
        rng = np.random.default_rng(0)
        orders = np.stack([rng.permutation(l) for _ in range(a.orders)])
        t0 = time.perf_counter()
        stats = [child_statistics(np.broadcast_to(d.z[:, :, None], (len(d.z), l, l)), d.z, d.env)
                 for _ in range(a.latent_draws)]
        t1 = time.perf_counter()
        for st, c in stats:
            edge_marginals(st, c, orders)
        t2 = time.perf_counter()
        for k, (st, c) in enumerate(stats):
            sample_parent_sets(st, c, orders, 1000 // a.latent_draws, rng=rng)
        t3 = time.perf_counter()
        print(f"| {l} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | {t3 - t0:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
