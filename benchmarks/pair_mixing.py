"""Where the linear identification of saved benchmark fits goes wrong: mixed pairs of latents.

For each saved fit of ``benchmarks/recovery.py`` (``--results`` rows, ``--models`` its ``--save-dir``) the data set
is regenerated from the row's simulator settings and seed, and the script prints:

- ``matched``: each true latent's correlation with its matched fitted latent (what MPC averages);
- ``linear``: its correlation with the best linear combination of *all* fitted latents (the ceiling of a linear
  re-identification of the fitted latents);
- the worst mixing: the fitted latents as linear combinations of the standardised true ones (least squares,
  normalised to 1 on the diagonal); the largest off-diagonal entry, in both directions of that pair, and whether
  the pair is an edge of the true graph;
- the whole loss of :func:`bayes_crl.unmix.sparse_unmixing` (smoothed L1 of the per-environment partial
  correlations over all pairs, per environment; lower is "better") on the fitted latents, on the fitted latents
  with that pair's 2 x 2 mixing undone (least squares onto the true pair, other latents untouched) and on the true
  latents;
  and the model-class likelihood score of the best DAG (:func:`bayes_crl.order.local_scores` with ``shared=True``,
  on 10 000 rows, with the Jacobian of the map; higher is better) of the pair-corrected latents minus that of the
  fitted ones.

    python benchmarks/pair_mixing.py --results benchmarks/results/recovery_default.jsonl --models runs/models \\
        --settings random5-gauss

Needs the models saved by the run that wrote the rows (``recovery.py --save-dir``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np


def _pcorr_l1(z: np.ndarray, env: np.ndarray) -> float:
    import torch

    from bayes_crl.unmix import env_covariances, partial_correlation_loss

    zs = (z - z.mean(0)) / z.std(0)
    cov = torch.as_tensor(env_covariances(zs, env), dtype=torch.float64)
    eye = torch.eye(z.shape[1], dtype=torch.float64)[None]
    return float(partial_correlation_loss(eye, cov, 0.01)[0]) / cov.shape[0]


def _dag_score(z: np.ndarray, env: np.ndarray) -> float:
    from bayes_crl.order import best_order_from_scores, local_scores

    ls = local_scores(z, env, shared=True) - len(z) * np.log(z.std(0))[:, None]
    return float(best_order_from_scores(ls)[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="JSON lines of benchmarks/recovery.py")
    ap.add_argument("--models", required=True, help="the --save-dir of that run")
    ap.add_argument("--settings", default=None, help="comma-separated setting names (the part before any '/')")
    ap.add_argument("--score-rows", type=int, default=10_000, help="rows for the likelihood score")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from bayes_crl import LatentCausalModel, metrics, simulate_latent_anm

    keep = set(a.settings.split(",")) if a.settings else None
    print("| setting | seed | matched | linear | worst mixing (fitted k = true k + b true j) | edge | "
          "criterion fitted / pair undone / true | score gain of undoing |")
    print("|---|---|---|---|---|---|---|---|")
    for line in open(a.results):
        r = json.loads(line)
        if keep is not None and r["setting"].split("/")[0] not in keep:
            continue
        path = os.path.join(a.models, f"{r['setting'].replace('/', '_')}_seed{r['seed']}")
        if not os.path.exists(path):
            print(f"skipped {r['setting']} seed {r['seed']}: no saved model at {path}", file=sys.stderr, flush=True)
            continue
        d = simulate_latent_anm(random_state=r["seed"], **r["sim"])
        env = np.unique(d.env, return_inverse=True)[1]
        m = LatentCausalModel.load(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zh = m.transform(d.x, env=d.env).astype(np.float64)
        _, perm, _ = metrics.mpc(d.z, zh, return_matching=True)
        zm = zh[:, np.asarray(perm)]
        zm = (zm - zm.mean(0)) / zm.std(0)
        zt = (d.z - d.z.mean(0)) / d.z.std(0)
        l = zt.shape[1]
        matched = [abs(np.corrcoef(zm[:, k], zt[:, k])[0, 1]) for k in range(l)]
        f = np.c_[zm, np.ones(len(zm))]
        linear = [np.corrcoef(f @ np.linalg.lstsq(f, zt[:, k], rcond=None)[0], zt[:, k])[0, 1] for k in range(l)]
        b = np.linalg.lstsq(zt, zm, rcond=None)[0]
        b = b / np.diag(b)
        off = np.abs(b - np.diag(np.diag(b)))
        j, k = np.unravel_index(int(np.argmax(off)), off.shape)  # fitted k contains b[j, k] of true j
        pair = [int(j), int(k)]
        fix = np.eye(l)
        fix[np.ix_(pair, pair)] = np.linalg.lstsq(zm[:, pair], zt[:, pair], rcond=None)[0]
        sub = np.random.default_rng(0).choice(len(zm), min(len(zm), a.score_rows), replace=False)
        gain = (_dag_score(zm[sub] @ fix, env[sub]) + len(sub) * np.log(abs(np.linalg.det(fix)))
                - _dag_score(zm[sub], env[sub]))
        adj = np.asarray(r["truth"])
        edge = "yes" if adj[j, k] or adj[k, j] else "no"
        crit = f"{_pcorr_l1(zm, env):.2f} / {_pcorr_l1(zm @ fix, env):.2f} / {_pcorr_l1(zt, env):.2f}"
        print(f"| {r['setting']} | {r['seed']} | {' '.join(f'{v:.3f}' for v in matched)} | "
              f"{' '.join(f'{v:.3f}' for v in linear)} | z{k} = z{k} {b[j, k]:+.2f} z{j}; z{j} = z{j} {b[k, j]:+.2f} z{k} | "
              f"{edge} | {crit} | {gain:+.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
