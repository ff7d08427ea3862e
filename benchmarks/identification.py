"""Diagnose what a recovery run identified: per fit, the causal order the search finds on the final latents,
and how each learned latent decomposes into the true ones.

Reads the JSON lines of ``benchmarks/recovery.py --results R`` and the models it saved with ``--save-dir D``:

    python benchmarks/identification.py --results R --models D

or, with ``--oracle``, works on the simulator's true latents alone (no fit):

    python benchmarks/identification.py --oracle [--seeds 20]

which prints (1) how well each convention for the flat direction ``z_i - c phi_ji(z_j)`` keeps every child,
``corr(z_i, z_i - c h_ji(z_j))`` for ``c`` = 0 (the truth), the mean of the strengths over environments (the
centred choice of the default horseshoe), their median (L1, the paper's penalty) and the strength nearest to
each; and (2) the MPC of :func:`bayes_crl.unmix.sparse_unmixing` applied to a random linear mixing of the true
latents, before and after :func:`bayes_crl.unmix.centring_map` in the true causal order.

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


def oracle(n_seeds: int) -> None:
    import torch

    torch.set_num_threads(1)
    from bayes_crl import metrics, simulate_latent_anm
    from bayes_crl.simulate.latent_anm import _contribution
    from bayes_crl.unmix import centring_map, sparse_unmixing

    print(f"(1) child's correlation with the truth under each convention, chains l=3, {n_seeds} seeds x 2 edges")
    for label, kw in [("random sign, vanishes in 1 env", {}), ("random sign, vanishes in 3 envs", {"vanish_envs": 3}),
                      ("positive strengths, vanishes in 1 env", {"random_sign": False})]:
        res = {k: [] for k in ("mean", "pooled", "median", "nearest to mean", "nearest to median")}
        for seed in range(n_seeds):
            d = simulate_latent_anm(n_latents=3, graph="chain", n_envs=30, n_per_env=300, mechanism="nonlinear",
                                    random_state=seed, **kw)
            zt = (d.z - d.mechanism_params["input_loc"]) / d.mechanism_params["input_scale"]
            for j, i in [(0, 1), (1, 2)]:
                w = d.weights[:, j, i]
                one = np.zeros((d.n_envs, 3))
                one[:, j] = 1.0
                h = _contribution(d.mechanism, d.mechanism_params, one[d.env], zt, i)
                vj = np.array([d.z[d.env == u, j].var() for u in range(d.n_envs)])
                cands = {"mean": w.mean(), "pooled": (w * vj).sum() / vj.sum(), "median": np.median(w),
                         "nearest to mean": w[np.argmin(abs(w - w.mean()))],
                         "nearest to median": w[np.argmin(abs(w - np.median(w)))]}
                for k, c in cands.items():
                    res[k].append(abs(np.corrcoef(d.z[:, i], d.z[:, i] - c * h)[0, 1]))
        print(f"  {label}: " + "; ".join(f"{k} median {np.median(v):.3f} min {np.min(v):.3f}" for k, v in res.items()))
    print("(2) sparse_unmixing of a random linear mixing of the true latents, then centring_map in the true order")
    for graph, l in [("chain", 3), ("random", 5)]:
        for seed in range(min(n_seeds, 5)):
            extra = {"expected_degree": 1.0} if graph == "random" else {}
            d = simulate_latent_anm(n_latents=l, graph=graph, n_envs=30, n_per_env=1000, mechanism="nonlinear",
                                    random_state=seed, **extra)
            mix = np.eye(l) + 0.4 * np.random.default_rng(seed).standard_normal((l, l))
            a, b, _ = sparse_unmixing(d.z @ mix, d.env, seed=seed)
            zu = d.z @ mix @ a + b
            m0, perm, _ = metrics.mpc(d.z, zu, return_matching=True)
            order = np.array([perm[k] for k in d.causal_order])
            zo = zu[:, order]
            zc, zp = np.empty_like(zu), np.empty_like(zu)
            zc[:, order] = zo @ centring_map(zo, d.env, pooled=False)
            zp[:, order] = zo @ centring_map(zo, d.env, pooled=True)
            print(f"  {graph} l={l} seed {seed}: unmixed MPC {m0:.3f} -> centred (mean) {metrics.mpc(d.z, zc):.3f}, "
                  f"(pooled) {metrics.mpc(d.z, zp):.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results")
    ap.add_argument("--models")
    ap.add_argument("--oracle", action="store_true", help="conventions and unmixing on the true latents (no fit)")
    ap.add_argument("--seeds", type=int, default=20)
    a = ap.parse_args(argv)
    if a.oracle:
        oracle(a.seeds)
        return 0
    if not (a.results and a.models):
        ap.error("--results and --models are required without --oracle")
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
