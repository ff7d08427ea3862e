"""The spike-and-slab's variational edge posterior against the exact one, given the latents.

Beyond 12 candidate parents per child the spike-and-slab's edge marginals come from the mean-field posterior of
:func:`bayes_crl.parent_sets.variational_inclusion`; below, from exact enumeration. Graphs, strengths and latents
are drawn from the prior (:func:`bayes_crl.simulate.simulate_spike_slab_latents`, prior inclusion 0.3, spike
0.1), the true latents and order are given, and both posteriors are computed (``method="exact"`` and
``method="variational"`` of :func:`bayes_crl.parent_sets.edge_marginals`). Per setting: the largest absolute
difference per graph (median, 95th percentile, largest, fraction of graphs above 0.1), the time of each, and the
calibration (ECE, Brier) of each against the true graph. Three variational variants: mean field alone, and
refined with the 4 or (default) 10 least certain candidates enumerated exactly. ``--latents 13`` compares
children with up to 12 candidates (the largest exact case; with 4 refined candidates the approximation is what
is measured); ``--calibration-latents 20`` scores the default variational posterior alone on graphs too large to
enumerate.

    python benchmarks/variational_edges.py --graphs 200 --out benchmarks/results/variational_edges.md \
        --results benchmarks/results/variational_edges.jsonl

Cost: a few minutes on one core (no model is fitted).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _report import cpu_name, write_report

SETTINGS = [(5, 20, 0.5), (10, 20, 0.5), (5, 50, 0.3), (30, 20, 0.3), (10, 100, 1.0), (30, 1000, 1.0)]
"""(environments, rows per environment, slab scale): the calibration benchmark's settings and a fit-sized one."""


def _ece(p, t, bins=10):
    b = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[b == k].mean() - t[b == k].mean()) * (b == k).sum() for k in np.unique(b)) / len(p))


VARIANTS = {"mean field": 0, "refined (4)": 4, "refined (10, default)": None}
"""``refine`` of :func:`bayes_crl.parent_sets.variational_inclusion`: how many of the least certain candidates get
their exact joint posterior (0: mean field alone)."""


def _variational(st, c, l, slab, refine):
    from bayes_crl.parent_sets import variational_inclusion

    p = np.zeros((l, l))
    for child in range(1, l):
        p[:child, child] = variational_inclusion(st, c, child, range(child), prior_inclusion=0.3, slab_scale=slab,
                                                 spike_scale=0.1, refine=refine)
    return p


def run(l, e, n, slab, graphs, seed0, exact=True):
    from bayes_crl.parent_sets import child_statistics, edge_marginals
    from bayes_crl.simulate import simulate_spike_slab_latents

    iu = np.triu_indices(l, 1)
    errs = {v: [] for v in VARIANTS}
    pe, pv, ts = [], [], []
    t_exact = t_vi = 0.0
    for g in range(graphs):
        d = simulate_spike_slab_latents(l, e, n, prior_inclusion=0.3, slab_scale=slab, spike_scale=0.1,
                                        random_state=seed0 + g)
        st, c = child_statistics(np.broadcast_to(d.z[:, :, None], (len(d.z), l, l)), d.z, d.env)
        ts.append(d.adjacency[iu].astype(float))
        if exact:
            t0 = time.perf_counter()
            x = edge_marginals(st, c, np.arange(l), method="exact", prior_inclusion=0.3, slab_scale=slab,
                               spike_scale=0.1)
            t_exact += time.perf_counter() - t0
            pe.append(x[iu])
        for name, refine in VARIANTS.items():
            if not exact and refine is not None:
                continue
            t0 = time.perf_counter()
            v = _variational(st, c, l, slab, refine)
            if refine is None:
                t_vi += time.perf_counter() - t0
                pv.append(v[iu])
            if exact:
                errs[name].append(float(np.abs(x - v).max()))
    t = np.concatenate(ts)
    row = {"latents": l, "envs": e, "rows_per_env": n, "slab": slab, "graphs": graphs,
           "vi_seconds_per_graph": t_vi / graphs, "vi_ece": _ece(np.concatenate(pv), t),
           "vi_brier": float(np.mean((np.concatenate(pv) - t) ** 2))}
    if exact:
        pe = np.concatenate(pe)
        row.update(exact_seconds_per_graph=t_exact / graphs, exact_ece=_ece(pe, t),
                   exact_brier=float(np.mean((pe - t) ** 2)))
        for name, er in errs.items():
            er = np.asarray(er)
            row[name] = {"median": float(np.median(er)), "q95": float(np.quantile(er, 0.95)),
                         "max": float(er.max()), "frac_above_0_1": float((er > 0.1).mean())}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=200, help="graphs per setting at l = 4")
    ap.add_argument("--large-graphs", type=int, default=10, help="graphs per setting at --latents")
    ap.add_argument("--latents", type=int, default=13, help="the larger exact comparison (at most 13)")
    ap.add_argument("--calibration-latents", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--results", default=None)
    a = ap.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for k, (e, n, slab) in enumerate(SETTINGS):
        rows.append(run(4, e, n, slab, a.graphs, 10_000 * k))
        print(rows[-1], flush=True)
    for k, (e, n, slab) in enumerate(SETTINGS):
        rows.append(run(a.latents, e, n, slab, a.large_graphs, 20_000 + 1000 * k))
        print(rows[-1], flush=True)
    for k, (e, n, slab) in enumerate(SETTINGS):
        rows.append(run(a.calibration_latents, e, n, slab, a.large_graphs, 30_000 + 1000 * k, exact=False))
        print(rows[-1], flush=True)
    wall = time.perf_counter() - start
    names = list(VARIANTS)
    head = ("| l | environments x rows | slab | graphs | "
            + " | ".join(f"{v}: median / 95 % / largest, > 0.1" for v in names)
            + " | ECE exact / default | Brier exact / default | s per graph exact / default |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ex = "exact_ece" in r

        def pair(key, r=r, ex=ex):
            return (f"{r['exact_' + key]:.3f} / " if ex else "- / ") + f"{r['vi_' + key]:.3f}"

        errs = " | ".join((f"{r[v]['median']:.3f} / {r[v]['q95']:.3f} / {r[v]['max']:.3f}, "
                           f"{100 * r[v]['frac_above_0_1']:.0f} %") if ex else "-" for v in names)
        lines.append(f"| {r['latents']} | {r['envs']} x {r['rows_per_env']} | {r['slab']} | {r['graphs']} | {errs} | "
                     f"{pair('ece')} | {pair('brier')} | {pair('seconds_per_graph')} |")
    cpu = cpu_name()
    lines += ["", f"wall {wall:.0f} s; {cpu}; python {sys.version.split()[0]}"]
    write_report("\n".join(lines), rows, a.out, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
