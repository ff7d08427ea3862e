"""Latent additive-noise causal models across environments (the generative model of MODEL.md).

For every environment ``u`` (``E`` of them) and latent ``i`` (``l`` of them), processed in a causal
(topological) order::

    n_i ~ p_family(. | theta_i(u))                       exponential-family noise, params per env
    z_i = g_i^u(pa(z_i)) + n_i                           additive-noise model
    z_i = h_i(g_i^u(pa(z_i)) + n_i)                      instead, when post_nonlinear=True
    x   = f(z) + eps,  eps ~ N(0, obs_noise_std^2 I)     injective mixing (see ``mixing.py``)

The mechanisms act on *standardised* parents ``zt_j = (z_j - m_j) / s_j`` where ``m_j`` and ``s_j``
are the mean and standard deviation of ``z_j`` pooled over all environments, computed once when
``z_j`` has been generated and stored as ``mechanism_params["input_loc"]`` and ``["input_scale"]``.
That fixed affine map is part of each (environment-shared) mechanism, so the equations above are
exact for the stored arrays (``LatentANMData.parent_contribution`` recomputes ``g``) while scales
do not grow along long chains. With ``W = weights`` of shape (E, l, l) (``W[u, parent, child]``):

* ``"linear"``:    ``g_i^u = sum_j W[u, j, i] * zt_j``
* ``"nonlinear"``: ``g_i^u = sum_j W[u, j, i] * h_ji(zt_j)``,
  ``h_ji(t) = t + a_ji * tanh(b_ji * (t - c_ji))`` with ``|a_ji| ~ U(0.5, 1.5)`` (random sign, so
  some edges are non-monotone), ``b_ji ~ U(0.5, 2)``, ``c_ji ~ U(-1, 1)``, fixed per edge and shared
  across environments (``mechanism_params["amplitude"|"frequency"|"offset"]``, (l, l)).
* ``"mlp"``:       ``g_i^u = MLP_i(W[u, :, i] * zt) - MLP_i(0)``, one tanh MLP with 16 hidden units
  per child whose input is the parent vector masked and scaled by that environment's weights (the
  paper's ``g_i(m_i(u) * z)``); ``mechanism_params["mlp_w1"]`` (child, parent, hidden),
  ``["mlp_b1"]`` (child, hidden), ``["mlp_w2"]`` (child, hidden).

In all three a zero weight ``W[u, j, i] = 0`` makes ``d g_i^u / d z_j = 0`` in environment ``u``,
which is condition (iv). Post-nonlinear maps are ``h_i(y) = slope_i * y + softplus(k_i y) / k_i``
(strictly increasing, hence invertible) with ``slope_i ~ U(0.2, 0.5)``, ``k_i ~ U(0.5, 2)``
(``mechanism_params["pnl_slope"]``, ``["pnl_sharpness"]``).

Noise parameters are drawn uniformly per environment and latent from the ranges in
:data:`NOISE_FAMILIES` (documented in :func:`simulate_latent_anm`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import (
    BayesCRLValueError,
    check_adjacency,
    check_bool,
    check_option,
    check_random_state,
    check_scalar,
    topological_order,
)
from .graphs import chain_dag, random_dag
from .mixing import MIXINGS, apply_mixing, random_mixing

__all__ = [
    "MECHANISMS",
    "NOISE_FAMILIES",
    "LatentANMData",
    "condition_iv_holds",
    "simulate_latent_anm",
]

#: Noise families: parameter names and the uniform range each is drawn from, per env and latent.
NOISE_FAMILIES: dict[str, tuple[tuple[str, float, float], tuple[str, float, float]]] = {
    "gaussian": (("loc", -2.0, 2.0), ("scale", 0.1, 3.0)),
    "laplace": (("loc", -2.0, 2.0), ("scale", 0.1, 2.0)),
    "gamma": (("shape", 1.0, 5.0), ("scale", 0.2, 1.5)),
    "beta": (("a", 1.0, 6.0), ("b", 1.0, 6.0)),
    "inverse_gamma": (("shape", 2.5, 6.0), ("scale", 0.5, 3.0)),
}
MECHANISMS = ("linear", "nonlinear", "mlp")
_MLP_HIDDEN = 16
_FORMAT = "bayes_crl.LatentANMData/1"
_OWNER = "simulate_latent_anm"


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------
def _sample_noise(
    family: str, params: dict[str, np.ndarray], env: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw noise of shape (N, l) with per-row parameters ``params[k][env]``."""
    p = {k: v[env] for k, v in params.items()}
    if family == "gaussian":
        return rng.normal(p["loc"], p["scale"])
    if family == "laplace":
        return rng.laplace(p["loc"], p["scale"])
    if family == "gamma":
        return rng.gamma(p["shape"], p["scale"])
    if family == "beta":
        return rng.beta(p["a"], p["b"])
    if family == "inverse_gamma":
        return p["scale"] / rng.gamma(p["shape"], 1.0)
    raise AssertionError(family)  # unreachable: validated by the caller


def _mechanism_params(
    mechanism: str, adjacency: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    l = adjacency.shape[0]
    edges = adjacency.astype(np.float64)
    if mechanism == "linear":
        return {}
    if mechanism == "nonlinear":
        amp = rng.uniform(0.5, 1.5, (l, l)) * rng.choice([-1.0, 1.0], (l, l))
        return {
            "amplitude": amp * edges,
            "frequency": rng.uniform(0.5, 2.0, (l, l)) * edges,
            "offset": rng.uniform(-1.0, 1.0, (l, l)) * edges,
        }
    # mlp: weights into hidden units only from actual parents.
    w1 = rng.standard_normal((l, l, _MLP_HIDDEN)) * edges.T[:, :, None]
    return {
        "mlp_w1": w1,
        "mlp_b1": rng.uniform(-1.0, 1.0, (l, _MLP_HIDDEN)),
        "mlp_w2": rng.standard_normal((l, _MLP_HIDDEN)) * (2.0 / np.sqrt(_MLP_HIDDEN)),
    }


def _contribution(
    mechanism: str, params: dict[str, np.ndarray], w_in: np.ndarray, zt: np.ndarray, i: int
) -> np.ndarray:
    """``g_i^u`` for every row: ``w_in`` (N, l) = ``W[env, :, i]``, ``zt`` (N, l) standardised z."""
    if mechanism == "linear":
        return np.einsum("nj,nj->n", w_in, zt)
    if mechanism == "nonlinear":
        a, b, c = params["amplitude"][:, i], params["frequency"][:, i], params["offset"][:, i]
        h = zt + a * np.tanh(b * (zt - c))
        return np.einsum("nj,nj->n", w_in, h)
    w1, b1, w2 = params["mlp_w1"][i], params["mlp_b1"][i], params["mlp_w2"][i]
    return np.tanh((w_in * zt) @ w1 + b1) @ w2 - np.tanh(b1) @ w2


def _post_nonlinear(y: np.ndarray, slope: float, sharpness: float) -> np.ndarray:
    return slope * y + np.logaddexp(0.0, sharpness * y) / sharpness


def condition_iv_holds(weights: np.ndarray, adjacency: np.ndarray, *, atol: float = 0.0) -> np.ndarray:
    """Per latent, whether every incoming edge vanishes in at least one environment.

    Condition (iv) of the identifiability theory: for each edge ``z_j -> z_i`` there is an
    environment ``u`` with ``d g_i^u / d z_j = 0``, here ``|weights[u, j, i]| <= atol``.

    Parameters
    ----------
    weights : numpy.ndarray, shape (E, l, l)
        Causal strengths per environment, ``weights[u, parent, child]``.
    adjacency : array_like, shape (l, l), or networkx.DiGraph
        0/1 DAG, ``adjacency[parent, child]``.
    atol : float, default 0.0
        A weight counts as vanished when its absolute value is at most ``atol``.

    Returns
    -------
    numpy.ndarray of bool, shape (l,)
        True for latents whose incoming edges all vanish somewhere (always True for roots).
    """
    a = check_adjacency(adjacency, name="adjacency")
    w = np.asarray(weights, dtype=np.float64)
    l = a.shape[0]
    if w.ndim != 3 or w.shape[1:] != (l, l):
        raise BayesCRLValueError(
            f"'weights' must have shape (n_envs, {l}, {l}) to match adjacency of shape {a.shape}. "
            f"Got shape {w.shape} instead."
        )
    tol = check_scalar(atol, "atol", float, "condition_iv_holds", min_val=0.0)
    vanishes = (np.abs(w) <= tol).any(axis=0)  # (l, l): edge j->i vanishes somewhere
    return np.all(vanishes | (a == 0), axis=0)


# ----------------------------------------------------------------------------------------------------
# The data container
# ----------------------------------------------------------------------------------------------------
def _flatten(prefix: str, d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": np.asarray(v) for k, v in d.items()}


@dataclass(frozen=True, eq=False, repr=False)
class LatentANMData:
    """A simulated data set and the ground truth that generated it.

    Attributes
    ----------
    x : numpy.ndarray, shape (N, d)
        Observations ``f(z) + eps``.
    env : numpy.ndarray, shape (N,), int64
        Environment code of each row, in ``0 .. E-1`` (index into ``env_labels``).
    z : numpy.ndarray, shape (N, l)
        True latent causal variables.
    noise : numpy.ndarray, shape (N, l)
        Exogenous noise ``n``.
    adjacency : numpy.ndarray, shape (l, l), int64
        True DAG, ``adjacency[parent, child] = 1``.
    weights : numpy.ndarray, shape (E, l, l)
        Causal strengths per environment, ``weights[u, parent, child]``; 0 off the graph and where
        an edge vanishes.
    noise_params : dict of str to numpy.ndarray, each (E, l)
        The noise family's parameters per environment and latent (e.g. ``loc``, ``scale``).
    noise_family : str
        One of ``NOISE_FAMILIES``.
    mechanism : str
        One of ``"linear"``, ``"nonlinear"``, ``"mlp"``.
    latent_names : tuple of str
        ``("z0", "z1", ...)``.
    env_labels : tuple
        Environment labels; ``env_labels[env[n]]`` labels row n.
    condition_iv : numpy.ndarray of bool, shape (l,)
        Whether condition (iv) holds for each latent (see :func:`condition_iv_holds`).
    mechanism_params : dict of str to numpy.ndarray
        Everything the mechanisms used (standardisation constants, per-edge parameters,
        post-nonlinear parameters); see the module docstring.
    mixing_params : dict of str to numpy.ndarray
        The mixing (see :func:`bayes_crl.simulate.mixing.apply_mixing`).
    mixing : str
        ``"mlp"`` or ``"linear"``.
    post_nonlinear : bool
        Whether ``z_i = h_i(g_i + n_i)``.
    obs_noise_std : float
        Standard deviation of the Gaussian observation noise.
    """

    x: np.ndarray
    env: np.ndarray
    z: np.ndarray
    noise: np.ndarray
    adjacency: np.ndarray
    weights: np.ndarray
    noise_params: dict[str, np.ndarray]
    noise_family: str
    mechanism: str
    latent_names: tuple[str, ...]
    env_labels: tuple
    condition_iv: np.ndarray
    mechanism_params: dict[str, np.ndarray]
    mixing_params: dict[str, np.ndarray]
    mixing: str
    post_nonlinear: bool
    obs_noise_std: float

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Number of rows N."""
        return int(self.x.shape[0])

    @property
    def n_obs_dims(self) -> int:
        """Observed dimension d."""
        return int(self.x.shape[1])

    @property
    def n_latents(self) -> int:
        """Latent dimension l."""
        return int(self.z.shape[1])

    @property
    def n_envs(self) -> int:
        """Number of environments E."""
        return int(self.weights.shape[0])

    @property
    def causal_order(self) -> np.ndarray:
        """A topological order of the latents, shape (l,), int64 (parents first)."""
        order = topological_order(self.adjacency)
        assert order is not None  # adjacency is a DAG by construction
        return order

    def __repr__(self) -> str:
        return (
            f"LatentANMData(n_samples={self.n_samples}, n_obs_dims={self.n_obs_dims}, "
            f"n_latents={self.n_latents}, n_envs={self.n_envs}, "
            f"n_edges={int(self.adjacency.sum())}, noise_family={self.noise_family!r}, "
            f"mechanism={self.mechanism!r}, post_nonlinear={self.post_nonlinear}, "
            f"mixing={self.mixing!r}, condition_iv={self.condition_iv.tolist()})"
        )

    # -- ground truth -------------------------------------------------------------------------------
    def parent_contribution(self) -> np.ndarray:
        """Recompute ``g_i^u(pa(z_i))`` for every row from the stored parameters.

        Returns
        -------
        numpy.ndarray, shape (N, l)
            ``z == g + noise`` (or ``h(g + noise)`` when ``post_nonlinear``) up to float rounding.
        """
        loc = self.mechanism_params["input_loc"]
        scale = self.mechanism_params["input_scale"]
        zt = (self.z - loc) / scale
        g = np.zeros_like(self.z)
        for i in range(self.n_latents):
            if self.adjacency[:, i].any():
                g[:, i] = _contribution(
                    self.mechanism, self.mechanism_params, self.weights[self.env, :, i], zt, i
                )
        return g

    def to_networkx(self) -> Any:
        """The true latent graph as a :class:`networkx.DiGraph`.

        Nodes are ``latent_names`` (node attribute ``index``). Each edge carries ``weight`` (the
        mean strength over environments), ``weights`` (shape (E,), one per environment) and
        ``vanishing_envs`` (labels of the environments where the strength is exactly 0).
        """
        import networkx as nx

        g = nx.DiGraph(
            env_labels=self.env_labels, noise_family=self.noise_family, mechanism=self.mechanism
        )
        for k, name in enumerate(self.latent_names):
            g.add_node(name, index=k)
        for j, i in zip(*np.nonzero(self.adjacency)):
            w = self.weights[:, j, i].copy()
            g.add_edge(
                self.latent_names[j],
                self.latent_names[i],
                weight=float(w.mean()),
                weights=w,
                vanishing_envs=tuple(self.env_labels[u] for u in np.flatnonzero(w == 0.0)),
            )
        return g

    # -- I/O ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> str:
        """Write everything to one compressed ``.npz`` file (no pickled objects).

        Parameters
        ----------
        path : str or path-like
            Target file; ``.npz`` is appended when missing.
        overwrite : bool, default False
            Replace an existing file. Otherwise an existing file raises :class:`FileExistsError`.

        Returns
        -------
        str
            The path written.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        labels = np.asarray(self.env_labels)
        if labels.dtype == object:
            raise BayesCRLValueError(
                "env_labels must be all numbers or all strings to be saved without pickle. Got "
                f"{self.env_labels!r}."
            )
        arrays: dict[str, np.ndarray] = {
            "__format__": np.asarray(_FORMAT),
            "x": self.x,
            "env": self.env,
            "z": self.z,
            "noise": self.noise,
            "adjacency": self.adjacency,
            "weights": self.weights,
            "condition_iv": self.condition_iv,
            "noise_family": np.asarray(self.noise_family),
            "mechanism": np.asarray(self.mechanism),
            "mixing": np.asarray(self.mixing),
            "post_nonlinear": np.asarray(self.post_nonlinear),
            "obs_noise_std": np.asarray(self.obs_noise_std, dtype=np.float64),
            "latent_names": np.asarray(self.latent_names, dtype=str),
            "env_labels": labels,
            **_flatten("noise_params", self.noise_params),
            **_flatten("mechanism_params", self.mechanism_params),
            **_flatten("mixing_params", self.mixing_params),
        }
        mode = "wb" if overwrite else "xb"
        try:
            with open(path, mode) as fh:
                np.savez_compressed(fh, **arrays)
        except FileExistsError:
            raise FileExistsError(
                f"'path' {path!r} already exists. Pass overwrite=True to replace it, or choose "
                f"another path."
            ) from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentANMData:
        """Read a file written by :meth:`save` (``np.load`` with ``allow_pickle=False``).

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        LatentANMData
        """
        path = os.fspath(path)
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        if str(data.get("__format__", "")) != _FORMAT:
            raise BayesCRLValueError(
                f"'path' {path!r} is not a LatentANMData file written by LatentANMData.save "
                f"(expected key '__format__' = {_FORMAT!r}). For your own observations use "
                f"bayes_crl.simulate.load_observations."
            )

        def sub(prefix: str) -> dict[str, np.ndarray]:
            return {k.split(".", 1)[1]: v for k, v in data.items() if k.startswith(prefix + ".")}

        return cls(
            x=data["x"],
            env=data["env"],
            z=data["z"],
            noise=data["noise"],
            adjacency=data["adjacency"],
            weights=data["weights"],
            noise_params=sub("noise_params"),
            noise_family=str(data["noise_family"]),
            mechanism=str(data["mechanism"]),
            latent_names=tuple(str(s) for s in data["latent_names"]),
            env_labels=tuple(data["env_labels"].tolist()),
            condition_iv=data["condition_iv"],
            mechanism_params=sub("mechanism_params"),
            mixing_params=sub("mixing_params"),
            mixing=str(data["mixing"]),
            post_nonlinear=bool(data["post_nonlinear"]),
            obs_noise_std=float(data["obs_noise_std"]),
        )


# ----------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------
def _check_sizes(n_per_env: Any, n_envs: int) -> np.ndarray:
    if isinstance(n_per_env, (int, np.integer)) and not isinstance(n_per_env, (bool, np.bool_)):
        size = check_scalar(n_per_env, "n_per_env", int, _OWNER, min_val=1)
        return np.full(n_envs, size, dtype=np.int64)
    if isinstance(n_per_env, (Sequence, np.ndarray)) and not isinstance(n_per_env, str):
        sizes = list(np.asarray(n_per_env).reshape(-1).tolist()) if len(n_per_env) else []
        if len(sizes) != n_envs:
            raise BayesCRLValueError(
                f"The 'n_per_env' parameter of {_OWNER} must be an int or a sequence of n_envs="
                f"{n_envs} sizes. Got a sequence of length {len(sizes)} instead."
            )
        return np.asarray(
            [check_scalar(s, f"n_per_env[{k}]", int, _OWNER, min_val=1) for k, s in enumerate(sizes)],
            dtype=np.int64,
        )
    raise BayesCRLValueError(
        f"The 'n_per_env' parameter of {_OWNER} must be an int or a sequence of n_envs={n_envs} "
        f"ints. Got {n_per_env!r} of type {type(n_per_env).__name__} instead."
    )


def _check_weight_range(weight_range: Any) -> tuple[float, float]:
    msg = (
        f"The 'weight_range' parameter of {_OWNER} must be a pair (low, high) of finite numbers "
        f"with 0 < low <= high. Got {weight_range!r} instead."
    )
    try:
        low, high = (float(v) for v in weight_range)
    except (TypeError, ValueError):
        raise BayesCRLValueError(msg) from None
    if not (np.isfinite(low) and np.isfinite(high) and 0.0 < low <= high):
        raise BayesCRLValueError(msg)
    return low, high


def _check_violate(violate: Any, n_latents: int) -> list[int]:
    names = [f"z{k}" for k in range(n_latents)]
    items: Iterable[Any] = [violate] if isinstance(violate, (str, int, np.integer)) else violate
    try:
        items = list(items)
    except TypeError:
        raise BayesCRLValueError(
            f"The 'violate' parameter of {_OWNER} must be a sequence of latent indices or names "
            f"(e.g. [2] or ['z2']). Got {violate!r} instead."
        ) from None
    out: list[int] = []
    for v in items:
        if isinstance(v, str) and v in names:
            out.append(names.index(v))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= v < n_latents:
            out.append(int(v))
        else:
            raise BayesCRLValueError(
                f"The 'violate' parameter of {_OWNER} must hold latent indices in [0, {n_latents}) "
                f"or names in {names}. Got {v!r} instead."
            )
    return sorted(set(out))


def _check_graph(graph: Any, n_latents: int) -> str | np.ndarray:
    if isinstance(graph, str):
        if graph not in ("chain", "random"):
            check_option(graph, "graph", ("chain", "random"), _OWNER)
        return graph
    try:
        return check_adjacency(graph, n_latents, name="graph")
    except BayesCRLValueError as exc:
        raise BayesCRLValueError(
            f"The 'graph' parameter of {_OWNER} must be 'chain', 'random' or an "
            f"(n_latents, n_latents) 0/1 DAG adjacency with graph[parent, child] = 1. {exc}"
        ) from None


# ----------------------------------------------------------------------------------------------------
# The simulator
# ----------------------------------------------------------------------------------------------------
def simulate_latent_anm(
    *,
    n_latents: int = 3,
    n_envs: int = 30,
    n_per_env: int | Sequence[int] = 1000,
    n_obs_dims: int = 10,
    graph: str | np.ndarray = "chain",
    expected_degree: float = 1.0,
    noise: str = "gaussian",
    mechanism: str = "linear",
    weight_range: tuple[float, float] = (0.5, 2.0),
    random_sign: bool = True,
    vanish_envs: int = 1,
    violate: Iterable[int | str] = (),
    violate_one_sign: bool = False,
    post_nonlinear: bool = False,
    mixing: str = "mlp",
    mixing_layers: int = 3,
    obs_noise_std: float = 0.01,
    random_state: Any = None,
) -> LatentANMData:
    """Simulate a latent additive-noise causal model observed through an injective mixing.

    See the module docstring for the exact generative equations and what is stored.

    Parameters
    ----------
    n_latents : int, default 3
        Number of latent causal variables l (>= 1).
    n_envs : int, default 30
        Number of environments E (>= 1). The theory asks for at least ``2 * l + 1``.
    n_per_env : int or sequence of int, default 1000
        Rows per environment: one size for all, or one per environment (length ``n_envs``).
    n_obs_dims : int, default 10
        Observed dimension d (>= n_latents).
    graph : {"chain", "random"} or array_like of shape (l, l)
        ``"chain"``: ``z0 -> z1 -> ...``; ``"random"``: Erdos-Renyi DAG with ``expected_degree``
        in a random order (index order is *not* the causal order, see
        :func:`~bayes_crl.simulate.random_dag`); or a user 0/1 DAG with ``graph[parent, child]``.
    expected_degree : float, default 1.0
        Expected neighbours per node for ``graph="random"``.
    noise : {"gaussian", "laplace", "gamma", "beta", "inverse_gamma"}, default "gaussian"
        Noise family; its parameters are drawn uniformly per environment and latent from:
        gaussian loc ~ U(-2, 2), scale ~ U(0.1, 3); laplace loc ~ U(-2, 2), scale ~ U(0.1, 2);
        gamma shape ~ U(1, 5), scale ~ U(0.2, 1.5) (support (0, inf)); beta a, b ~ U(1, 6)
        (support (0, 1)); inverse_gamma shape ~ U(2.5, 6), scale ~ U(0.5, 3) (support (0, inf),
        finite variance).
    mechanism : {"linear", "nonlinear", "mlp"}, default "linear"
        Form of ``g_i^u``, see the module docstring.
    weight_range : (float, float), default (0.5, 2.0)
        ``|W[u, j, i]| ~ U(low, high)`` for each edge and environment (``0 < low <= high``).
    random_sign : bool, default True
        Give each edge in each environment a random sign; otherwise all strengths are positive.
    vanish_envs : int, default 1
        Condition (iv): each edge's strength is exactly 0 in this many environments, chosen at
        random and, as far as ``n_envs`` allows, different environments for different edges.
        ``1 <= vanish_envs < n_envs``.
    violate : sequence of int or str, default ()
        Latents (indices or names ``"z2"``) for which condition (iv) is broken: the strengths of
        the edges into them never vanish (``|W| >= low`` in every environment).
    violate_one_sign : bool, default False
        Make the strengths of the edges into the ``violate`` latents positive in every environment
        (whatever ``random_sign``). With random signs their mean over environments is near 0, so a
        model that resolves the flat direction ``z_i - c h(z_j)`` by centring the strengths lands on
        the truth by the symmetry of the simulator; with one sign it cannot, which is what Theorem
        2.5 (the violated node is not identified) predicts. Uses no extra random draws.
    post_nonlinear : bool, default False
        Use ``z_i = h_i(g_i + n_i)`` with an invertible ``h_i``.
    mixing : {"mlp", "linear"}, default "mlp"
        Injective leaky-ReLU MLP (slope 0.2) or a full-column-rank linear map, see
        :mod:`bayes_crl.simulate.mixing`.
    mixing_layers : int, default 3
        Number of layers of the MLP mixing (>= 1).
    obs_noise_std : float, default 0.01
        Standard deviation of the Gaussian observation noise (>= 0).
    random_state : None, int or numpy.random.Generator
        Same seed, same arrays.

    Returns
    -------
    LatentANMData
        ``x`` (N, d), ``env`` (N,), ``z`` and ``noise`` (N, l), ``adjacency`` (l, l),
        ``weights`` (E, l, l), noise parameters (E, l) and the rest of the ground truth.

    Raises
    ------
    BayesCRLValueError
        For any invalid argument; the message names it.

    Examples
    --------
    >>> data = simulate_latent_anm(n_latents=2, n_envs=5, n_per_env=10, random_state=0)
    >>> data.x.shape, data.z.shape, data.weights.shape
    ((50, 10), (50, 2), (5, 2, 2))
    """
    o = _OWNER
    l = check_scalar(n_latents, "n_latents", int, o, min_val=1)
    n_e = check_scalar(n_envs, "n_envs", int, o, min_val=1)
    sizes = _check_sizes(n_per_env, n_e)
    d = check_scalar(n_obs_dims, "n_obs_dims", int, o, min_val=1)
    if d < l:
        raise BayesCRLValueError(
            f"The 'n_obs_dims' parameter of {o} must be >= n_latents={l} so that the mixing can "
            f"be injective. Got {d} instead. Increase n_obs_dims or decrease n_latents."
        )
    graph_spec = _check_graph(graph, l)
    deg = check_scalar(expected_degree, "expected_degree", float, o, min_val=0.0)
    check_option(noise, "noise", NOISE_FAMILIES, o)
    check_option(mechanism, "mechanism", MECHANISMS, o)
    low, high = _check_weight_range(weight_range)
    signed = check_bool(random_sign, "random_sign", o)
    n_vanish = check_scalar(vanish_envs, "vanish_envs", int, o, min_val=1)
    violated = _check_violate(violate, l)
    one_sign = check_bool(violate_one_sign, "violate_one_sign", o)
    pnl = check_bool(post_nonlinear, "post_nonlinear", o)
    check_option(mixing, "mixing", MIXINGS, o)
    n_layers = check_scalar(mixing_layers, "mixing_layers", int, o, min_val=1)
    obs_std = check_scalar(obs_noise_std, "obs_noise_std", float, o, min_val=0.0)
    rng = check_random_state(random_state)

    # Graph.
    if isinstance(graph_spec, np.ndarray):
        adjacency = graph_spec
    elif graph_spec == "chain":
        adjacency = chain_dag(l)
    else:
        adjacency = random_dag(l, deg, permute=True, random_state=rng)
    order = topological_order(adjacency)
    assert order is not None

    # Strengths per environment, and where they vanish (condition (iv)).
    edges = [(int(j), int(i)) for j, i in zip(*np.nonzero(adjacency))]
    vanishing = [(j, i) for j, i in edges if i not in violated]
    if vanishing and n_vanish >= n_e:
        raise BayesCRLValueError(
            f"The 'vanish_envs' parameter of {o} must be < n_envs={n_e} so that every edge is "
            f"active somewhere. Got {n_vanish} instead. Increase n_envs, or list the children in "
            f"'violate' to keep their edges from vanishing."
        )
    magnitude = rng.uniform(low, high, (n_e, l, l))
    sign = rng.choice([-1.0, 1.0], (n_e, l, l)) if signed else np.ones((n_e, l, l))
    weights = magnitude * sign * adjacency[None, :, :]
    perm = rng.permutation(n_e)
    for k, (j, i) in enumerate(vanishing):
        envs = perm[(k * n_vanish + np.arange(n_vanish)) % n_e]
        weights[envs, j, i] = 0.0
    if one_sign:
        for j, i in edges:
            if i in violated:
                weights[:, j, i] = np.abs(weights[:, j, i])

    # Noise parameters and noise.
    (name1, lo1, hi1), (name2, lo2, hi2) = NOISE_FAMILIES[noise]
    noise_params = {
        name1: rng.uniform(lo1, hi1, (n_e, l)),
        name2: rng.uniform(lo2, hi2, (n_e, l)),
    }
    env = np.repeat(np.arange(n_e, dtype=np.int64), sizes)
    noise_values = _sample_noise(noise, noise_params, env, rng)

    # Mechanisms, in causal order.
    mech = _mechanism_params(mechanism, adjacency, rng)
    if pnl:
        mech["pnl_slope"] = rng.uniform(0.2, 0.5, l)
        mech["pnl_sharpness"] = rng.uniform(0.5, 2.0, l)
    n = env.shape[0]
    z = np.zeros((n, l))
    zt = np.zeros((n, l))
    loc = np.zeros(l)
    scale = np.ones(l)
    for i in order:
        y = noise_values[:, i].copy()
        if adjacency[:, i].any():
            y += _contribution(mechanism, mech, weights[env, :, i], zt, int(i))
        z[:, i] = _post_nonlinear(y, mech["pnl_slope"][i], mech["pnl_sharpness"][i]) if pnl else y
        loc[i] = z[:, i].mean()
        std = z[:, i].std()
        scale[i] = std if std > 0 else 1.0
        zt[:, i] = (z[:, i] - loc[i]) / scale[i]
    mech["input_loc"] = loc
    mech["input_scale"] = scale

    # Mixing and observation noise.
    mix = random_mixing(mixing, l, d, n_layers=n_layers, random_state=rng)
    x = apply_mixing(mix, z)
    if obs_std > 0:
        x = x + rng.normal(0.0, obs_std, x.shape)

    return LatentANMData(
        x=x,
        env=env,
        z=z,
        noise=noise_values,
        adjacency=adjacency.astype(np.int64),
        weights=weights,
        noise_params=noise_params,
        noise_family=noise,
        mechanism=mechanism,
        latent_names=tuple(f"z{k}" for k in range(l)),
        env_labels=tuple(range(n_e)),
        condition_iv=condition_iv_holds(weights, adjacency),
        mechanism_params=mech,
        mixing_params=mix,
        mixing=mixing,
        post_nonlinear=pnl,
        obs_noise_std=obs_std,
    )
