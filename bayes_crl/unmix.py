"""Linear identification of learned latents by sparse per-environment partial correlations.

Why
---
An amortized VAE fit of the latent causal model learns the *span* of the true latents very well (a linear
map of the learned latents reaches correlations of 0.97-0.999 with every true latent on the benchmark), but
which linear coordinates inside that span it settles on is decided by its random initialisation: the ELBO is
nearly flat along invertible linear maps ``z -> z A`` (with per-environment strengths free, a linear-Gaussian
latent model fits any such map equally well). This is where most of the lost MPC went (measured; see
BENCHMARKS.md).

What identifies the coordinates is the sparsity the theory relies on: in the true coordinates the
per-environment *partial correlations* ``rho_u(i, j | rest)`` vanish for every non-adjacent pair in every
environment (the Markov property of the DAG) and for every edge in the environments where its influence
vanishes (condition (iv)). Mixed coordinates have dense partial correlations. So we choose the unmixing
``B`` (l, l) that makes the environment-wise partial correlations of ``z B`` sparsest,

    minimise  sum_u sum_{i<j} sqrt(rho_u(i, j)^2 + eps^2)     over B with unit-norm columns,

an L1 penalty on partial correlations (a smoothed ``|rho|``), which is invariant to the scale of each
coordinate. Its minimum is at the truth up to permutation and scaling where the latent model is linear and
the theory's conditions hold; among the maps that leave the sparsity pattern unchanged (a sink node shifted
by its parent, ``z_i - c z_j``, which moves the vanishing environment) the L1 penalty picks the median
strength, as the paper's L1 penalty does. It is solved from many random starts at once (the problem is
small: one ``l x l`` covariance per environment).

:func:`centring_map` settles the flat direction ``z_i - c z_j`` (``j`` a parent of ``i``) that the likelihood
leaves open by a convention (strengths centred on zero across environments).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["env_covariances", "partial_correlation_loss", "sparse_unmixing", "centring_map", "residual_scale"]


def env_covariances(z: np.ndarray, env: np.ndarray, n_envs: int | None = None, ridge: float = 1e-6) -> np.ndarray:
    """Per-environment covariance matrices of ``z``.

    Parameters
    ----------
    z : ndarray (N, l)
    env : ndarray (N,) int codes in ``0..E-1``
    n_envs : int, optional
    ridge : float
        Added to the diagonal (environments with fewer than ``l + 1`` rows stay invertible).

    Returns
    -------
    ndarray (E', l, l)
        One matrix per environment with at least 2 rows.
    """
    e = int(env.max()) + 1 if n_envs is None else n_envs
    out = []
    for u in range(e):
        zu = z[env == u]
        if len(zu) < 2:
            continue
        c = np.atleast_2d(np.cov(zu.T))
        out.append(c + ridge * np.eye(z.shape[1]))
    return np.stack(out)


def partial_correlation_loss(b: torch.Tensor, cov: torch.Tensor, eps: float) -> torch.Tensor:
    """Smoothed L1 norm of the partial correlations of ``z B``, summed over environments and pairs.

    ``b`` (K, l, l) candidate maps, ``cov`` (E, l, l) covariances of ``z`` -> (K,) losses.
    """
    c = b.transpose(-1, -2).unsqueeze(1) @ cov.unsqueeze(0) @ b.unsqueeze(1)  # (K, E, l, l)
    prec = torch.linalg.inv(c)
    d = torch.sqrt(torch.diagonal(prec, dim1=-2, dim2=-1).clamp(min=1e-12))
    rho = prec / (d.unsqueeze(-1) * d.unsqueeze(-2))
    l = cov.shape[-1]
    iu = torch.triu_indices(l, l, 1)
    p = rho[..., iu[0], iu[1]]
    return torch.sqrt(p**2 + eps**2).sum((-1, -2))


def sparse_unmixing(z: np.ndarray, env: np.ndarray, *, n_starts: int = 64, steps: int = 400, eps: float = 0.01,
                    lr: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Find the linear coordinates of ``z`` with the sparsest per-environment partial correlations.

    Parameters
    ----------
    z : ndarray (N, l)
        Learned latents.
    env : ndarray (N,) int codes
    n_starts : int
        Random starting maps optimised together (the first is the identity).
    steps : int
        Adam steps.
    eps : float
        Smoothing of ``|rho|`` (partial correlations below ~eps count as zero).
    lr : float
    seed : int

    Returns
    -------
    a : ndarray (l, l)
        Map such that the identified latents are ``z @ a + b`` (standardisation included).
    b : ndarray (l,)
        Offset (the identified latents have mean zero).
    loss : float
        The minimised loss per environment (comparable between fits on the same environments).
    """
    z = np.asarray(z, dtype=np.float64)
    n, l = z.shape
    mean, sd = z.mean(0), z.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    zs = (z - mean) / sd
    cov = torch.as_tensor(env_covariances(zs, np.asarray(env)), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    b0 = torch.eye(l, dtype=torch.float64) + 0.5 * torch.randn(n_starts, l, l, generator=g, dtype=torch.float64)
    b0[0] = torch.eye(l, dtype=torch.float64)
    b = torch.nn.Parameter(b0)
    opt = torch.optim.Adam([b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            bn = b / b.norm(dim=-2, keepdim=True)
            loss = partial_correlation_loss(bn, cov, eps)
            loss = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))
            loss.sum().backward()
            opt.step()
    with torch.no_grad():
        bn = b / b.norm(dim=-2, keepdim=True)
        loss = partial_correlation_loss(bn, cov, eps)
        loss = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, float("inf")))
        k = int(torch.argmin(loss))
        best = bn[k].numpy()
    a = best / sd[:, None]
    # scale each identified coordinate to unit variance
    s = (zs @ best).std(0)
    s = np.where(s > 0, s, 1.0)
    a = a / s
    return a, -(mean @ a), float(loss[k]) / cov.shape[0]


def _env_groups(env: np.ndarray, min_rows: int) -> list[np.ndarray]:
    """Row indices of every environment with at least ``min_rows`` rows."""
    groups = [np.flatnonzero(env == u) for u in np.unique(env)]
    return [g for g in groups if len(g) >= min_rows]


def centring_map(z: np.ndarray, env: np.ndarray, *, pooled: bool = True, min_rows: int = 10) -> np.ndarray:
    """The unit-triangular map that centres every latent's per-environment strengths on zero.

    The likelihood cannot tell ``z_i`` from ``z_i - c z_j`` for an earlier latent ``z_j`` (a parent's share moved
    into the child): the strengths become ``W[u, j, i] - c`` and, when ``c`` is one of them, still vanish in some
    environment (condition (iv) holds for every such ``c``). :func:`sparse_unmixing` picks the median (L1); this
    picks the representative whose strengths are centred on zero, the choice of the default horseshoe prior:
    in slot order (a causal order), each ``z_i`` is regressed on ``z_<i`` within every environment and the
    average coefficient over environments is taken out, ``z_i <- z_i - z_<i @ c``. Non-parents have
    coefficients near zero in every environment, so they are left alone. On the simulator's chains (strengths of
    either sign) this takes the unmixed true latents from MPC 0.928-0.992 to 0.979-0.999 (measured with
    ``benchmarks/identification.py --oracle``).

    Parameters
    ----------
    z : ndarray (N, l)
        Latents, columns in a causal order.
    env : ndarray (N,) int codes
    pooled : bool
        How the per-environment coefficients are averaged. ``True``: weighted by ``n_u det(Cov_u(z_<i))^(1/i)``,
        the rows times the geometric mean of the regressors' variances in environment ``u`` (for one parent: its
        variance, the precision of the slope up to the noise variance). One weight per environment, invariant
        to unit-triangular maps, so a child still moves only along its parents. ``False``: the plain mean.
        With estimated latents the plain mean is fragile: in an environment where a parent's variance is tiny
        its slope is set by the encoder's error (slopes of -8 next to 0.2 elsewhere, measured on the null
        benchmark), and one such environment moves the mean; pooling gives it the little weight its variance
        carries.
    min_rows : int
        Environments with fewer rows are left out of the average.

    Returns
    -------
    a : ndarray (l, l)
        Unit upper-triangular map: the centred latents are ``z @ a``.
    """
    z = np.asarray(z, dtype=np.float64)
    env = np.asarray(env)
    n, l = z.shape
    a = np.eye(l)
    groups = _env_groups(env, max(min_rows, l + 1))
    if not groups:
        return a
    for i in range(1, l):
        zc = z @ a[:, :i]  # the already-centred earlier latents
        coefs, prec = [], []
        for g in groups:
            xg = zc[g] - zc[g].mean(0)
            s_u = xg.T @ xg
            coefs.append(np.linalg.lstsq(s_u, xg.T @ (z[g, i] - z[g, i].mean()), rcond=None)[0])
            # one weight per environment: rows x the geometric mean of the regressors' variances (the determinant
            # of their covariance to the power 1/i), unchanged by the unit-triangular maps the centring applies
            sign, logdet = np.linalg.slogdet(s_u / len(g))
            prec.append(len(g) * np.exp(logdet / i) if sign > 0 else 0.0)
        prec = np.array(prec) if pooled else np.ones(len(groups))
        c = (prec[:, None] * np.array(coefs)).sum(0) / max(prec.sum(), 1e-300)
        a[:, i] -= a[:, :i] @ c
    return a


def residual_scale(z: np.ndarray, env: np.ndarray, *, min_rows: int = 10) -> np.ndarray:
    """Each latent's noise scale as the model normalises it: the geometric mean over environments of the
    standard deviation of ``z_i`` left after a per-environment linear regression on the earlier latents.

    :class:`~bayes_crl.models.LatentCausalNet` fixes the scale of each latent by giving its per-environment
    noise scales a geometric mean of 1 (every noise family is parameterised by its standard deviation). A
    linear re-expression of the latents (unmixing, centring) changes their scale; dividing column ``i`` by
    ``residual_scale(z, env)[i]`` would put them back on the model's scale. ``fit_svi`` does *not* do this: it
    made the final refit's noise match the latents exactly, and their small errors then came out as edges
    (random l=5 SHD 4, 8, 5 against 2, 1, 1 without it; BENCHMARKS.md). This function measures how far the
    fitted latents are from that scale. Nonlinear parents leave a slightly smaller residual than the linear
    regression sees.

    Parameters
    ----------
    z : ndarray (N, l)
        Latents, columns in a causal order.
    env : ndarray (N,) int codes
    min_rows : int
        Environments with fewer rows are left out.

    Returns
    -------
    s : ndarray (l,) positive
    """
    z = np.asarray(z, dtype=np.float64)
    env = np.asarray(env)
    n, l = z.shape
    groups = _env_groups(env, max(min_rows, l + 1))
    if not groups:
        sd = z.std(0)
        return np.where(sd > 0, sd, 1.0)
    logs = np.zeros((len(groups), l))
    for k, g in enumerate(groups):
        for i in range(l):
            xg = np.c_[z[g, :i], np.ones(len(g))]
            res = z[g, i] - xg @ np.linalg.lstsq(xg, z[g, i], rcond=None)[0]
            logs[k, i] = np.log(max(res.std(), 1e-8))
    return np.exp(logs.mean(0))
