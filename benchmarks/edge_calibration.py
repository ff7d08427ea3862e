"""Calibration of the spike-and-slab's exact edge posterior given the latents (the edge machinery alone).

Graphs, strengths and latents are drawn from the spike-and-slab prior itself (spike width 0.1, the default)
(:func:`bayes_crl.simulate.simulate_spike_slab_latents`); the true latents and the true causal order are given to
:func:`bayes_crl.parent_sets.edge_marginals`. Over the candidate edges (``j`` before ``i``) it reports, per
setting and pooled: the expected calibration error (10 equal-width bins), the Brier score against the prior's
own ``pi (1 - pi)`` (what always answering ``pi`` scores), the mean probability against the fraction of true
edges (equal in expectation for an exact posterior), and on null data (no edges) the mean and largest
probability. A second table sweeps rows per environment, environments and a fixed standardised effect size.

    python benchmarks/edge_calibration.py --graphs 300 --out benchmarks/results/edge_calibration.md \
        --figure benchmarks/results/figures/edge_calibration.png

Cost: seconds (no model is fitted).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _stats(d, l):
    from bayes_crl.parent_sets import child_statistics

    n = len(d.z)
    return child_statistics(np.broadcast_to(d.z[:, :, None], (n, l, l)), d.z, d.env)


def ece(p: np.ndarray, t: np.ndarray, bins: int = 10) -> float:
    b = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[b == k].mean() - t[b == k].mean()) * (b == k).sum() for k in np.unique(b)) / len(p))


def reliability_points(p, t, bins=10):
    b = np.minimum((p * bins).astype(int), bins - 1)
    return [(float(p[b == k].mean()), float(t[b == k].mean()), int((b == k).sum())) for k in np.unique(b)]


def run_setting(l, n_envs, n_per_env, graphs, pi, slab, seed0, null=False, effect=None, spike=0.1):
    from bayes_crl.parent_sets import edge_marginals
    from bayes_crl.simulate import simulate_spike_slab_latents

    iu = np.triu_indices(l, 1)
    ps, ts = [], []
    for g in range(graphs):
        d = simulate_spike_slab_latents(l, n_envs, n_per_env, prior_inclusion=pi, slab_scale=slab, spike_scale=spike,
                                        null=null, effect=effect, random_state=seed0 + g)
        st, c = _stats(d, l)
        ps.append(edge_marginals(st, c, np.arange(l), prior_inclusion=pi, slab_scale=slab, spike_scale=spike)[iu])
        ts.append(d.adjacency[iu])
    return np.concatenate(ps), np.concatenate(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=300, help="graphs per calibration setting")
    ap.add_argument("--latents", type=int, default=5)
    ap.add_argument("--grid-graphs", type=int, default=20, help="graphs per cell of the sweep")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results", default=None, help="JSON lines, one per setting and cell")
    ap.add_argument("--figure", default=None)
    a = ap.parse_args(argv)
    l, pi = a.latents, 0.3
    rows, lines, rel = [], [], {}
    t0 = time.perf_counter()
    lines += [f"Calibration, l = {l}, prior inclusion {pi}, spike width 0.1, {a.graphs} graphs per setting drawn from "
              "the prior (true latents and order given); null: no edges and no spike effects.", "",
              "| environments x rows | slab | edges | ECE | Brier | pi (1 - pi) | mean prob. | fraction true | "
              "probs in (0.1, 0.9) | null: mean prob. | null: max prob. |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    pooled_p, pooled_t = [], []
    for k, (e, n, slab) in enumerate([(5, 20, 0.5), (10, 20, 0.5), (5, 50, 0.3), (30, 20, 0.3), (10, 100, 1.0)]):
        p, t = run_setting(l, e, n, a.graphs, pi, slab, 10_000 * k)
        pn, _ = run_setting(l, e, n, max(a.graphs // 3, 1), pi, slab, 10_000 * k + 5_000, null=True)
        pooled_p.append(p)
        pooled_t.append(t)
        r = {"kind": "calibration", "latents": l, "envs": e, "rows_per_env": n, "slab_scale": slab,
             "prior_inclusion": pi, "edges": int(len(p)), "ece": ece(p, t), "brier": float(np.mean((p - t) ** 2)),
             "mean_prob": float(p.mean()), "frac_true": float(t.mean()),
             "uncertain": float(np.mean((p > 0.1) & (p < 0.9))), "null_mean": float(pn.mean()),
             "null_max": float(pn.max())}
        rows.append(r)
        rel[f"{e} x {n}, slab {slab}"] = reliability_points(p, t)
        lines.append(f"| {e} x {n} | {slab} | {r['edges']} | {r['ece']:.3f} | {r['brier']:.3f} | {pi * (1 - pi):.2f} | "
                     f"{r['mean_prob']:.3f} | {r['frac_true']:.3f} | {r['uncertain']:.2f} | {r['null_mean']:.3f} | "
                     f"{r['null_max']:.3f} |")
    p, t = np.concatenate(pooled_p), np.concatenate(pooled_t)
    lines.append(f"| pooled | | {len(p)} | {ece(p, t):.3f} | {np.mean((p - t) ** 2):.3f} | {pi * (1 - pi):.2f} | "
                 f"{p.mean():.3f} | {t.mean():.3f} | {np.mean((p > 0.1) & (p < 0.9)):.2f} | | |")
    rows.append({"kind": "calibration_pooled", "edges": int(len(p)), "ece": ece(p, t),
                 "brier": float(np.mean((p - t) ** 2)), "mean_prob": float(p.mean()), "frac_true": float(t.mean())})

    lines += ["", f"Sweep: fixed standardised strength +-effect on every edge, 0 elsewhere (graphs with inclusion "
              f"0.5), slab 1.0, spike 0.1, "
              f"{a.grid_graphs} graphs per cell; mean probability on true edges / on absent edges.", "",
              "| rows per env | " + " | ".join(f"E = {e}, effect {ef}" for e in (5, 10, 30) for ef in (0.05, 0.1, 0.2, 0.5))
              + " |", "|---|" + "---|" * 12]
    grid = {}
    for n in (20, 50, 100, 200, 1000):
        cells = []
        for e in (5, 10, 30):
            for ef in (0.05, 0.1, 0.2, 0.5):
                p, t = run_setting(l, e, n, a.grid_graphs, 0.5, 1.0, 100_000 + n * 100 + e, effect=ef)
                on, off = float(p[t == 1].mean()), float(p[t == 0].mean())
                grid[(n, e, ef)] = (on, off)
                rows.append({"kind": "sweep", "rows_per_env": n, "envs": e, "effect": ef, "mean_prob_true": on,
                             "mean_prob_absent": off, "brier": float(np.mean((p - t) ** 2)),
                             "expected_shd": float(np.sum(np.abs(p - t)) / a.grid_graphs)})
                cells.append(f"{on:.2f} / {off:.2f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Total {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if a.results:
        with open(a.results, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if a.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(os.path.dirname(a.figure) or ".", exist_ok=True)
        fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
        ax[0].plot([0, 1], [0, 1], "k:", lw=1)
        for name, pts in rel.items():
            x, y, c = zip(*pts)
            ax[0].plot(x, y, "o-", ms=3, label=name)
        ax[0].set(xlabel="edge probability", ylabel="fraction of true edges", title="Reliability (graphs from the prior)")
        ax[0].legend(fontsize=7)
        ns = (20, 50, 100, 200, 1000)
        for ef, col in zip((0.05, 0.1, 0.2, 0.5), ("C0", "C1", "C2", "C3")):
            ax[1].plot(ns, [grid[(n, 10, ef)][0] for n in ns], "o-", color=col, label=f"true edges, effect {ef}")
            ax[1].plot(ns, [grid[(n, 10, ef)][1] for n in ns], "x--", color=col, alpha=0.6)
        ax[1].set(xscale="log", xlabel="rows per environment (E = 10)", ylabel="mean edge probability",
                  title="Sweep (dashed: absent edges)")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.figure, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
