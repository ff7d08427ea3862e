"""Compare two runs of ``benchmarks/recovery.py`` fit by fit (same settings and seeds).

Rows are paired by setting (the part before any ``/tag`` that ``--prior`` or ``--fit-svi-kw`` appends) and seed;
for each setting it prints the MPC and SHD per seed of both runs, and the pooled edge AUROC (scikit-learn) and
Brier score of each; then the same pooled over ``--group`` settings.

    python benchmarks/compare_runs.py runs/a.jsonl runs/b.jsonl --group chain3-gauss,random5-gauss
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _load(path: str) -> dict:
    rows = {}
    for line in open(path):
        r = json.loads(line)
        rows[(r["setting"].split("/")[0], r["seed"])] = r
    return rows


def _pooled(rows: list[dict]) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    off = [~np.eye(len(r["truth"]), dtype=bool) for r in rows]
    t = np.concatenate([np.array(r["truth"])[o] for r, o in zip(rows, off)])
    p = np.concatenate([np.array(r["probs"])[o] for r, o in zip(rows, off)])
    au = float(roc_auc_score(t, p)) if 0 < t.sum() < len(t) else float("nan")
    return au, float(np.mean((p - t) ** 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--group", default=None, help="comma-separated settings pooled in a last line")
    a = ap.parse_args(argv)
    b, c = _load(a.before), _load(a.after)
    keys = sorted(set(b) & set(c))
    settings = list(dict.fromkeys(k[0] for k in keys))
    print("| setting | seeds | MPC per seed (before -> after) | SHD per seed (before -> after) | SHD = 0 | "
          "AUROC | Brier |")
    print("|---|---|---|---|---|---|---|")

    def line(name, ks):
        rb, ra = [b[k] for k in ks], [c[k] for k in ks]
        mpc = ", ".join(f"{x['mpc']:.3f} -> {y['mpc']:.3f}" for x, y in zip(rb, ra))
        shd = ", ".join(f"{x['shd']:.0f} -> {y['shd']:.0f}" for x, y in zip(rb, ra))
        z0 = f"{sum(x['shd'] == 0 for x in rb)} -> {sum(y['shd'] == 0 for y in ra)}"
        (aub, brb), (aua, bra) = _pooled(rb), _pooled(ra)
        print(f"| {name} | {', '.join(str(k[1]) for k in ks)} | {mpc} | {shd} | {z0} | {aub:.3f} -> {aua:.3f} | "
              f"{brb:.3f} -> {bra:.3f} |")

    for s in settings:
        line(s, [k for k in keys if k[0] == s])
    if a.group:
        g = set(a.group.split(","))
        line("pooled: " + a.group, [k for k in keys if k[0] in g])
    return 0


if __name__ == "__main__":
    sys.exit(main())
