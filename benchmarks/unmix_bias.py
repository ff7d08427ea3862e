"""Where the sparse-unmixing criterion puts its optimum on the *true* latents.

:func:`bayes_crl.unmix.sparse_unmixing` chooses the linear coordinates of learned latents whose per-environment
partial correlations are sparsest. Its minimum is at the truth for a linear latent model; with nonlinear
mechanisms it is not. This script measures how far off it is, with no fitted model involved: for each seed of
a simulated setting it runs the criterion on the true latents

- from the identity only (``n_starts=1``: one descent, what the fit's unmixings after the warm-ups do), and
- from 64 starts on a random linear mixing of them (the global search of the warm-ups),

and prints the MPC of each optimum against the truth (1 = the criterion's optimum is the truth).

    python benchmarks/unmix_bias.py --seeds 5 --graph chain --latents 3 --mechanism nonlinear
    python benchmarks/unmix_bias.py --data-dir ../shared/outside    # the true latents of outside data files
    python benchmarks/unmix_bias.py --data-dir ../shared/outside --penalty log --eps 0.03   # other penalties

With ``--data-dir`` every ``.npz`` file of the folder (keys ``z``, ``env``) is used instead of simulated data, and
the criterion's value at the truth is printed beside its value at the optimum found: an optimum with a lower
value than the truth means the criterion itself prefers wrong coordinates, not that the search missed.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from bayes_crl import metrics, simulate_latent_anm
    from bayes_crl.unmix import sparse_unmixing

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--latents", type=int, default=3)
    ap.add_argument("--graph", default="chain")
    ap.add_argument("--mechanism", default="nonlinear")
    ap.add_argument("--data-dir", default=None, help="folder of .npz files with the true latents 'z' and 'env'")
    ap.add_argument("--penalty", default="l1", choices=("l1", "log", "grouplog"),
                    help="penalty on the partial correlations: the library's smoothed L1, a log penalty "
                         "(closer to counting non-zeros) or a log of the mean square over environments per pair")
    ap.add_argument("--eps", type=float, default=0.01, help="smoothing of the penalty (the library's default 0.01)")
    a = ap.parse_args(argv)
    if a.penalty != "l1":
        import bayes_crl.unmix as um

        def penalty(b, cov, eps, kind=a.penalty):
            c = b.transpose(-1, -2).unsqueeze(1) @ cov.unsqueeze(0) @ b.unsqueeze(1)
            prec = torch.linalg.inv(c)
            d = torch.sqrt(torch.diagonal(prec, dim1=-2, dim2=-1).clamp(min=1e-12))
            rho = prec / (d.unsqueeze(-1) * d.unsqueeze(-2))
            iu = torch.triu_indices(cov.shape[-1], cov.shape[-1], 1)
            p = rho[..., iu[0], iu[1]]  # (K, E, pairs)
            if kind == "log":
                return 0.5 * torch.log(p**2 + eps**2).sum((-1, -2))
            return 0.5 * torch.log((p**2).mean(-2) + eps**2).sum(-1)

        um.partial_correlation_loss = penalty
        sparse_unmixing = um.sparse_unmixing
    if a.data_dir:
        import os

        print("| data | MPC of the local optimum | MPC of the global optimum | loss at the truth | loss at the global "
              "optimum |")
        print("|---|---|---|---|---|")
        for f in sorted(f for f in os.listdir(a.data_dir) if f.endswith(".npz")):
            with np.load(os.path.join(a.data_dir, f), allow_pickle=False) as npz:
                z, env = npz["z"].astype(np.float64), npz["env"].astype(np.int64)
            l = z.shape[1]
            al, bl, loss_truth = sparse_unmixing(z, env, seed=0, n_starts=1, steps=1, eps=a.eps)  # value at the truth
            al, bl, _ = sparse_unmixing(z, env, seed=0, n_starts=1, eps=a.eps)
            mix = z @ np.random.default_rng(0).normal(size=(l, l))
            ag, bg, loss_glob = sparse_unmixing(mix, env, seed=0, eps=a.eps)
            print(f"| {f[:-4]} | {metrics.mpc(z, z @ al + bl):.3f} | {metrics.mpc(z, mix @ ag + bg):.3f} | "
                  f"{loss_truth:.3f} | {loss_glob:.3f} |", flush=True)
        return 0
    print("| seed | MPC of the local optimum (from the truth) | MPC of the global optimum (from a random mixing) |")
    print("|---|---|---|")
    loc, glo = [], []
    for seed in range(a.seeds):
        d = simulate_latent_anm(n_latents=a.latents, graph=a.graph, mechanism=a.mechanism, noise="gaussian",
                                n_envs=30, n_per_env=1000, n_obs_dims=10, random_state=seed)
        al, bl, _ = sparse_unmixing(d.z, d.env, seed=0, n_starts=1)
        mix = d.z @ np.random.default_rng(seed).normal(size=(a.latents, a.latents))
        ag, bg, _ = sparse_unmixing(mix, d.env, seed=0)
        loc.append(metrics.mpc(d.z, d.z @ al + bl))
        glo.append(metrics.mpc(d.z, mix @ ag + bg))
        print(f"| {seed} | {loc[-1]:.3f} | {glo[-1]:.3f} |", flush=True)
    print(f"| median | {np.median(loc):.3f} | {np.median(glo):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
