"""Calibration of edge probabilities: AUROC, Brier, ECE and a reliability diagram per prior or method.

Reads the JSON lines written by ``benchmarks/recovery.py`` (grouped by ``prior``) and/or
``benchmarks/baselines.py`` (grouped by ``method``; only the methods with a graph), pools the
off-diagonal entries of every fit's aligned edge probabilities, and writes a Markdown table and a
reliability diagram (PNG). ``--settings`` restricts the recovery rows to some settings (e.g. the
identifiable ones: ``chain3-gauss,random5-gauss``), matched by prefix.

    python benchmarks/calibration.py --results benchmarks/results/recovery_default.jsonl \
        --settings chain3-gauss --out benchmarks/results/calibration.md \
        --figure benchmarks/results/figures/reliability.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def groups(paths: list[str], settings: list[str] | None, n_latents: int | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            if r.get("probs") is None:
                continue  # a method without a graph
            if settings and "setting" in r and not any(r["setting"].startswith(s) for s in settings):
                continue
            if n_latents is not None and len(r["truth"]) != n_latents:
                continue
            key = r.get("method") or r.get("prior")
            if key == "LatentCausalModel":
                key = f"LatentCausalModel ({r.get('edge_prior', 'default')})"
            out.setdefault(key, []).append(r)
    return out


def table(g: dict[str, list[dict]], n_bins: int) -> str:
    from bayes_crl import metrics

    lines = ["| prior / method | fits | entries | true edges | AUROC | Brier | ECE | mean prob. on true edges | "
             "mean prob. on non-edges |", "|---|---|---|---|---|---|---|---|---|"]
    for k, rs in g.items():
        t = [np.array(r["truth"]) for r in rs]
        p = [np.array(r["probs"]) for r in rs]
        rel = metrics.reliability(t, p, n_bins=n_bins)
        off = [~np.eye(len(x), dtype=bool) for x in t]
        y = np.concatenate([x[o] for x, o in zip(t, off)])
        s = np.concatenate([x[o] for x, o in zip(p, off)])
        from sklearn.metrics import roc_auc_score

        au = roc_auc_score(y, s) if 0 < y.sum() < len(y) else float("nan")
        lines.append(f"| {k} | {len(rs)} | {len(y)} | {int(y.sum())} | {au:.3f} | {rel['brier']:.3f} | "
                     f"{rel['ece']:.3f} | {s[y == 1].mean():.3f} | {s[y == 0].mean():.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", nargs="+", required=True, help="JSON-lines files of recovery.py / baselines.py")
    ap.add_argument("--settings", default=None, help="comma-separated setting-name prefixes (recovery rows)")
    ap.add_argument("--n-latents", type=int, default=None, help="only fits with this many latents")
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--figure", default=None)
    a = ap.parse_args(argv)
    g = groups(a.results, a.settings.split(",") if a.settings else None, a.n_latents)
    if not g:
        print("no rows with edge probabilities", file=sys.stderr)
        return 1
    tab = table(g, a.bins)
    print(tab)
    if a.figure:
        from matplotlib.figure import Figure

        from bayes_crl.plots import plot_reliability

        fig = Figure(figsize=(5.5, 5), layout="constrained")
        ax = fig.subplots()
        for k, rs in g.items():
            plot_reliability([np.array(r["truth"]) for r in rs], [np.array(r["probs"]) for r in rs], ax=ax,
                             n_bins=a.bins, label=k)
        os.makedirs(os.path.dirname(a.figure) or ".", exist_ok=True)
        fig.savefig(a.figure, dpi=120)
        print(f"wrote {a.figure}")
    if a.out:
        cmd = "python benchmarks/calibration.py --results " + " ".join(a.results)
        if a.settings:
            cmd += f" --settings {a.settings}"
        if a.n_latents:
            cmd += f" --n-latents {a.n_latents}"
        with open(a.out, "w") as f:
            f.write(f"Command: `{cmd}`\n\n{tab}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
