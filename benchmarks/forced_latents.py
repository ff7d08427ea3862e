"""What differs between the warm-ups of one fit: the span of the final latents, or their coordinates?

Reads the final latents that ``benchmarks/kept_warmup.py --latents-dir`` saved for fits forced to keep each
warm-up in turn (same data, seed and thread count; one ``.npy`` per forced warm-up) and reports per fit:

- the MPC of each forced fit, and the spread across warm-ups;
- its *linear ceiling*: the correlation of each true latent with its best linear prediction from all of the
  fit's latents (mean over the true latents), which is what a perfect choice of linear coordinates in that span
  would reach;
- what two ways of making the coordinates less dependent on the warm-up would have given: the *consensus* of the
  forced fits' coordinates (each fit's latents regressed on the reference fit's, matched to its slots by
  correlation, scaled to unit variance, and the maps averaged), taken over every counted warm-up and over the
  two that the fit's restart rule ranks first, with the rule's choice as the reference (``--scores``, rows of
  ``benchmarks/warmup_scores.py`` for the same fits); and, with ``--global-search``, the unmixing's 64-start
  search on each forced fit's latents (:func:`bayes_crl.unmix.sparse_unmixing`, then the shared-score order
  search and the centring, as the final identification does).

No fit is run: the latents are read from disk.

    python benchmarks/forced_latents.py --latents-dir runs/kept_latents --data-dir ../shared/outside \\
        --scores benchmarks/results/warmup_scores.jsonl --global-search
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recovery  # noqa: E402  benchmarks/recovery.py: load and simulate exactly as the recovery benchmark does


def _standardise(z: np.ndarray) -> np.ndarray:
    sd = z.std(0)
    return (z - z.mean(0)) / np.where(sd > 0, sd, 1.0)


def linear_ceiling(z_true: np.ndarray, z_fit: np.ndarray) -> np.ndarray:
    """Correlation of each true latent (N, l) with its least-squares prediction from all fitted latents (N, k)."""
    zt = z_true - z_true.mean(0)
    zf = z_fit - z_fit.mean(0)
    pred = zf @ np.linalg.lstsq(zf, zt, rcond=None)[0]
    return np.array([abs(np.corrcoef(pred[:, i], zt[:, i])[0, 1]) for i in range(zt.shape[1])])


def consensus(zs: list[np.ndarray], ref: int, members: list[int]) -> np.ndarray:
    """The mean of the members' coordinates, expressed as linear maps of the reference's latents (N, l)."""
    from bayes_crl.metrics import match_latents

    zr = _standardise(zs[ref])
    maps = []
    for k in members:
        zk = _standardise(zs[k])
        a = np.linalg.lstsq(zr, zk, rcond=None)[0]
        perm, signs, _ = match_latents(zr, zk)  # zk[:, perm[i]] is the reference's slot i
        a = a[:, perm] * signs
        maps.append(a / (zr @ a).std(0))
    return zr @ np.mean(maps, 0)


def global_search(z_fit: np.ndarray, env: np.ndarray) -> np.ndarray:
    """The final identification with the unmixing's 64 random starts instead of one descent."""
    from bayes_crl import unmix
    from bayes_crl.order import best_order

    zi = z_fit @ unmix.sparse_unmixing(z_fit, env, seed=0, n_starts=64)[0]
    zo = zi[:, best_order(zi, env, shared=True)[0]]
    return zo @ unmix.centring_map(zo, env)


def _ranked(scores: dict[int, dict]) -> list[int]:
    """Warm-up indices in the order the fit's restart rule prefers them (the counted ones only)."""
    from bayes_crl.stages import _select_restart

    r = len(scores)
    agree = np.array([scores[k]["agree"] for k in range(r)])
    loss = [scores[k]["loss_tail"] for k in range(r)]
    unmix_loss = [scores[k]["unmix_loss"] for k in range(r)]
    _, counted = _select_restart(agree, loss, unmix_loss)
    order: list[int] = []
    while len(order) < counted.sum():  # the rule's choice among those not yet ranked (ranked ones score last)
        out = [k in order for k in range(r)]
        k = int(_select_restart(agree, np.where(out, np.inf, loss), np.where(out, np.inf, unmix_loss))[0])
        order.append(k)
    return order


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents-dir", default="runs/kept_latents")
    ap.add_argument("--data-dir", required=True, help="the folder of the outside .npz files")
    ap.add_argument("--scores", default=None, help="warmup_scores.py rows of the same fits (the rule's ranking)")
    ap.add_argument("--global-search", action="store_true", help="also the 64-start final identification")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from bayes_crl.metrics import mpc

    groups: dict[str, dict[int, str]] = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(a.latents_dir, "*_None.npy"))):
        name, forced, _ = os.path.basename(path)[:-4].rsplit("_", 2)
        groups[name][int(forced)] = path
    scores: dict[str, dict[int, dict]] = defaultdict(dict)
    if a.scores:
        with open(a.scores) as fh:
            for r in map(json.loads, fh):
                scores[r["data"]][r["warmup"]] = r
    cols = ["data", "MPC per forced warm-up", "spread", "linear ceiling per warm-up (mean over latents)",
            "rule keeps", "consensus of the counted", "consensus of the rule's first two"]
    if a.global_search:
        cols.append("64-start final identification per warm-up (spread)")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    summary = defaultdict(list)
    for name, paths in sorted(groups.items()):
        r = len(paths)
        if sorted(paths) != list(range(r)) or r < 2:
            continue
        stem, _, rs = name.partition("@")
        source = os.path.join(a.data_dir, stem + ".npz") + (f"@{rs}" if rs else "")
        if not os.path.exists(source.partition("@")[0]):
            continue
        d = recovery.load_source(source)[0]
        zs = [np.load(paths[k]).astype(np.float64) for k in range(r)]
        fits = [mpc(d.z, z) for z in zs]
        ceil = [float(linear_ceiling(d.z, z).mean()) for z in zs]
        row = [name, ", ".join(f"{v:.3f}" for v in fits), f"{np.ptp(fits):.3f}", ", ".join(f"{v:.3f}" for v in ceil)]
        summary["mean"].append(np.mean(fits))
        summary["spread"].append(np.ptp(fits))
        summary["ceiling spread"].append(np.ptp(ceil))
        ranked = _ranked(scores[name]) if len(scores.get(name, {})) == r else []
        if ranked:
            best = ranked[0]
            c_all, c_two = mpc(d.z, consensus(zs, best, ranked)), mpc(d.z, consensus(zs, best, ranked[:2]))
            row += [f"{best} ({fits[best]:.3f})", f"{c_all:.3f}", f"{c_two:.3f}"]
            summary["rule"].append(fits[best])
            summary["consensus all"].append(c_all)
            summary["consensus two"].append(c_two)
        else:
            row += ["", "", ""]
        if a.global_search:
            g = [mpc(d.z, global_search(z, d.env)) for z in zs]
            row.append(", ".join(f"{v:.3f}" for v in g) + f" ({np.ptp(g):.3f})")
            summary["global mean"].append(np.mean(g))
            summary["global spread"].append(np.ptp(g))
        print("| " + " | ".join(row) + " |", flush=True)
    print("\nmeans over the fits: " + ", ".join(f"{k} {np.mean(v):.3f} ({len(v)} fits)" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
