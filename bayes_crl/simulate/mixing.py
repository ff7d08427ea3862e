"""Injective mixing functions ``x = f(z)`` from latents (l) to observations (d >= l).

A mixing is stored as a plain dict of numpy arrays (so it round-trips through ``.npz`` without
pickle)::

    {"weight_0": (d, l), "weight_1": (d, d), ..., "negative_slope": ()}

and applied as ``h_0 = W_0 z``, ``h_k = W_k leaky_relu(h_{k-1})`` for ``k >= 1``, ``x = h_{K-1}``
(no activation after the last layer). Every ``W_k`` is built as ``c U diag(s) V^T`` with ``U`` having
orthonormal columns, ``V`` orthogonal and singular values ``s ~ U(1, 2)``, so each layer has full
column rank and condition number at most 2; leaky ReLU with a positive slope is a bijection of R^d, so
the composite is injective (assumption (ii)) and :func:`invert_mixing` recovers ``z`` exactly on its
image. The constant ``c`` keeps scales O(1): ``sqrt(d / l)`` for the first layer (so a unit-variance
latent vector gives roughly unit-variance coordinates) and the He gain ``sqrt(2 / (1 + slope^2))``
for the later ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import BayesCRLValueError, check_option, check_random_state, check_scalar

__all__ = ["apply_mixing", "invert_mixing", "random_mixing"]

MIXINGS = ("mlp", "linear")
_MAX_CONDITION = 2.0


def _leaky_relu(h: np.ndarray, slope: float) -> np.ndarray:
    return np.where(h >= 0.0, h, slope * h)


def _well_conditioned(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix, rows >= cols, condition number <= 2, RMS singular value 1."""
    u, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    u = u * np.sign(np.diag(r))  # Haar-distributed orthonormal columns
    v, r2 = np.linalg.qr(rng.standard_normal((cols, cols)))
    v = v * np.sign(np.diag(r2))
    s = rng.uniform(1.0, _MAX_CONDITION, size=cols)
    s /= np.sqrt(np.mean(s**2))  # unit root-mean-square gain, condition number still <= 2
    return (u * s) @ v.T


def random_mixing(
    kind: str,
    n_latents: int,
    n_obs_dims: int,
    *,
    n_layers: int = 3,
    negative_slope: float = 0.2,
    random_state: Any = None,
) -> dict[str, np.ndarray]:
    """Draw a random injective mixing.

    Parameters
    ----------
    kind : {"mlp", "linear"}
        ``"mlp"``: ``n_layers`` layers with leaky ReLU between them; ``"linear"``: one full-rank
        matrix (``n_layers`` is ignored).
    n_latents : int
        Latent dimension l (>= 1).
    n_obs_dims : int
        Observed dimension d (>= l).
    n_layers : int, default 3
        Number of weight matrices for ``"mlp"`` (>= 1; 1 is linear).
    negative_slope : float, default 0.2
        Slope of the leaky ReLU for negative inputs, in (0, 1].
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    dict of str to numpy.ndarray
        ``"weight_k"`` arrays (d, l) for k = 0 and (d, d) after, and ``"negative_slope"`` (0-d).
    """
    owner = "random_mixing"
    check_option(kind, "kind", MIXINGS, owner)
    l = check_scalar(n_latents, "n_latents", int, owner, min_val=1)
    d = check_scalar(n_obs_dims, "n_obs_dims", int, owner, min_val=1)
    if d < l:
        raise BayesCRLValueError(
            f"The 'n_obs_dims' parameter of {owner} must be >= n_latents={l} for an injective "
            f"mixing. Got {d} instead."
        )
    k = check_scalar(n_layers, "n_layers", int, owner, min_val=1)
    slope = check_scalar(negative_slope, "negative_slope", float, owner, min_val=0.0,
                         max_val=1.0, include_min=False)
    rng = check_random_state(random_state)
    if kind == "linear":
        k = 1
    gain = np.sqrt(2.0 / (1.0 + slope**2))
    params: dict[str, np.ndarray] = {"weight_0": np.sqrt(d / l) * _well_conditioned(rng, d, l)}
    for layer in range(1, k):
        params[f"weight_{layer}"] = gain * _well_conditioned(rng, d, d)
    params["negative_slope"] = np.asarray(slope, dtype=np.float64)
    return params


def _weights(params: dict[str, np.ndarray]) -> list[np.ndarray]:
    n = sum(1 for key in params if key.startswith("weight_"))
    try:
        return [np.asarray(params[f"weight_{i}"], dtype=np.float64) for i in range(n)]
    except KeyError as exc:
        raise BayesCRLValueError(
            f"'params' must hold weight_0 ... weight_{n - 1} without gaps. Missing {exc}."
        ) from None


def apply_mixing(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Apply a mixing from :func:`random_mixing`.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
    z : numpy.ndarray, shape (N, l)

    Returns
    -------
    numpy.ndarray, shape (N, d)
        Noise-free observations ``f(z)``.
    """
    ws = _weights(params)
    slope = float(params["negative_slope"])
    h = np.asarray(z, dtype=np.float64) @ ws[0].T
    for w in ws[1:]:
        h = _leaky_relu(h, slope) @ w.T
    return h


def invert_mixing(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Invert a mixing: exact on its image, least squares for the first layer otherwise.

    Parameters
    ----------
    params : dict of str to numpy.ndarray
    x : numpy.ndarray, shape (N, d)

    Returns
    -------
    numpy.ndarray, shape (N, l)
    """
    ws = _weights(params)
    slope = float(params["negative_slope"])
    h = np.asarray(x, dtype=np.float64)
    for w in ws[:0:-1]:
        h = np.linalg.solve(w, h.T).T
        h = np.where(h >= 0.0, h, h / slope)
    return np.linalg.lstsq(ws[0], h.T, rcond=None)[0].T
