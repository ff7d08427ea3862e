"""Where the sparsity prior matters: edge posteriors of the spike-and-slab, horseshoe and Laplace priors given the
same true latents, over rows per environment and effect sizes.

Each cell draws ``--graphs`` graphs (l = 4, edge probability 0.5) whose edges all have the standardised strength
``+-effect`` in every environment (0 = no edges), and runs :func:`bayes_crl.latent_edges.fit_latent_edges` with
every prior on the true latents in the true order. The priors report different quantities (the spike-and-slab an
exact posterior inclusion probability, the horseshoe and Laplace priors the probability that an edge explains at
least ``min_effect`` of its child's variance), so they are compared on what both are meant to predict, the true
graph: Brier score, expected SHD (the sum over candidate edges of ``|p - truth|``) and the mean probability on
true and on absent edges.

    python benchmarks/prior_grid.py --graphs 4 --out benchmarks/results/prior_grid.md \
        --results benchmarks/results/prior_grid.jsonl --figure benchmarks/results/figures/prior_grid.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

PRIORS = ("spike_slab", "horseshoe", "laplace")


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from bayes_crl.latent_edges import fit_latent_edges
    from bayes_crl.simulate import simulate_spike_slab_latents

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=4)
    ap.add_argument("--envs", type=int, default=10)
    ap.add_argument("--rows", default="20,50,100,200,1000")
    ap.add_argument("--effects", default="0,0.05,0.1,0.2,0.5")
    ap.add_argument("--steps", type=int, default=600, help="SVI steps of the horseshoe and Laplace fits")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results", default=None)
    ap.add_argument("--figure", default=None)
    a = ap.parse_args(argv)
    rows_list = [int(r) for r in a.rows.split(",")]
    effects = [float(e) for e in a.effects.split(",")]
    l, iu = 4, np.triu_indices(4, 1)
    out, res = [], {}
    t0 = time.perf_counter()
    for n in rows_list:
        for ef in effects:
            acc = {p: ([], []) for p in PRIORS}
            secs = {p: 0.0 for p in PRIORS}
            for g in range(a.graphs):
                d = simulate_spike_slab_latents(l, a.envs, n, prior_inclusion=0.5, effect=ef if ef > 0 else None,
                                                null=ef == 0, random_state=1000 * g + n + int(100 * ef))
                for p in PRIORS:
                    t = time.perf_counter()
                    r = fit_latent_edges(d.z, d.env, p, num_steps=a.steps, seed=g)
                    secs[p] += time.perf_counter() - t
                    acc[p][0].append(r.inclusion[iu])
                    acc[p][1].append(d.adjacency[iu])
            for p in PRIORS:
                pr, tr = np.concatenate(acc[p][0]), np.concatenate(acc[p][1])
                row = {"prior": p, "rows_per_env": n, "envs": a.envs, "effect": ef, "graphs": a.graphs,
                       "brier": float(np.mean((pr - tr) ** 2)), "expected_shd": float(np.abs(pr - tr).sum() / a.graphs),
                       "mean_prob_true": float(pr[tr == 1].mean()) if (tr == 1).any() else None,
                       "mean_prob_absent": float(pr[tr == 0].mean()) if (tr == 0).any() else None,
                       "seconds_per_graph": secs[p] / a.graphs}
                out.append(row)
                res[(p, n, ef)] = row
            print(f"rows {n} effect {ef}: " + ", ".join(f"{p} Brier {res[(p, n, ef)]['brier']:.3f}" for p in PRIORS),
                  flush=True)

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [f"l = 4, {a.envs} environments, {a.graphs} graphs per cell (edge probability 0.5), true latents and order "
             "given. Per cell: Brier / expected SHD per graph / mean probability on true edges / on absent edges.", "",
             "| rows per env | effect | " + " | ".join(PRIORS) + " |", "|---|---|" + "---|" * len(PRIORS)]
    for n in rows_list:
        for ef in effects:
            cells = [f"{r['brier']:.3f} / {r['expected_shd']:.2f} / {fmt(r['mean_prob_true'])} / "
                     f"{fmt(r['mean_prob_absent'])}" for r in (res[(p, n, ef)] for p in PRIORS)]
            lines.append(f"| {n} | {ef} | " + " | ".join(cells) + " |")
    sec = {p: np.mean([r["seconds_per_graph"] for r in out if r["prior"] == p]) for p in PRIORS}
    lines += ["", "Seconds per graph: " + ", ".join(f"{p} {sec[p]:.2f}" for p in PRIORS)
              + f"; total {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    if a.results:
        with open(a.results, "w") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")
    if a.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(os.path.dirname(a.figure) or ".", exist_ok=True)
        fig, axes = plt.subplots(1, len(effects), figsize=(3.2 * len(effects), 3.4), sharey=True)
        for ax, ef in zip(np.atleast_1d(axes), effects):
            for p, mk in zip(PRIORS, "osx"):
                ax.plot(rows_list, [res[(p, n, ef)]["brier"] for n in rows_list], marker=mk, label=p)
            ax.set(xscale="log", title=f"effect {ef}" if ef else "no edges", xlabel="rows per environment")
        np.atleast_1d(axes)[0].set_ylabel("Brier score (vs the true graph)")
        np.atleast_1d(axes)[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.figure, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
