"""Shared input checks and the library's error and warning classes.

Every check raises :class:`BayesCRLValueError` (a :class:`ValueError`) with a message that names the
argument, says what was expected and what was given, and, where there is one, the fix. Parameter checks
follow scikit-learn's wording, e.g.::

    The 'noise' parameter of simulate_latent_anm must be one of {'beta', 'gamma', ...}.
    Got 'gausian' instead. Did you mean 'gaussian'?

Conventions used across the package: adjacency matrices are ``A[parent, child]`` with 0/1 entries;
environment labels may be any hashable values and are encoded to integer codes by :func:`check_env`.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Collection, Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BayesCRLValueError",
    "IdentifiabilityWarning",
    "as_adjacency_array",
    "check_adjacency",
    "check_array_2d",
    "check_bool",
    "check_env",
    "check_option",
    "check_random_state",
    "check_seen_inputs",
    "check_scalar",
    "find_cycle",
    "topological_order",
]


class BayesCRLValueError(ValueError):
    """Bad input to a bayes_crl function: the single error class for invalid arguments.

    Messages name the argument, what was expected, what was given and, where there is one, the fix.
    """


class IdentifiabilityWarning(UserWarning):
    """The data or configuration violates an assumption of the identifiability theory.

    Raised, for example, when there are fewer than ``2 * n_latents + 1`` environments (condition (iii))
    or when some edge never vanishes in any environment (condition (iv)); results for the affected
    latents are then only partially identified.
    """


# ----------------------------------------------------------------------------------------------------
# Scalars and options
# ----------------------------------------------------------------------------------------------------
def _owner_prefix(name: str, owner: str | None) -> str:
    return f"The '{name}' parameter of {owner}" if owner else f"The '{name}' parameter"


def check_option(value: Any, name: str, options: Collection[str], owner: str | None = None) -> str:
    """Check that ``value`` is one of the string ``options`` and return it.

    Parameters
    ----------
    value : Any
        The value given.
    name : str
        Name of the argument, used in the message.
    options : collection of str
        Allowed values.
    owner : str, optional
        Name of the function or class the argument belongs to, used in the message.

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    BayesCRLValueError
        If ``value`` is not one of ``options``; suggests the closest option when there is one.
    """
    opts = sorted(options)
    if isinstance(value, str) and value in options:
        return value
    shown = "{" + ", ".join(repr(o) for o in opts) + "}"
    msg = f"{_owner_prefix(name, owner)} must be one of {shown}. Got {value!r} instead."
    if isinstance(value, str):
        close = difflib.get_close_matches(value, opts, n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
    raise BayesCRLValueError(msg)


def check_bool(value: Any, name: str, owner: str | None = None) -> bool:
    """Check that ``value`` is a bool (Python or numpy) and return it as a Python bool.

    Raises
    ------
    BayesCRLValueError
        If ``value`` is not a bool; 0/1 integers are refused so that typos such as ``2`` surface.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise BayesCRLValueError(
        f"{_owner_prefix(name, owner)} must be an instance of 'bool'. Got {value!r} "
        f"of type {type(value).__name__} instead. Pass True or False."
    )


def check_scalar(
    value: Any,
    name: str,
    kind: type = float,
    owner: str | None = None,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
) -> int | float:
    """Check a numeric scalar's type and range (scikit-learn's ``check_scalar``, our error class).

    Parameters
    ----------
    value : Any
        The value given.
    name : str
        Name of the argument, used in the message.
    kind : {int, numbers.Integral, float, numbers.Real}
        ``int`` (or ``numbers.Integral``) accepts Python and numpy integers (not bools); ``float`` accepts any real number
        (not bools) and returns a Python float (any other ``kind`` is treated as ``float``).
    owner : str, optional
        Name of the function or class the argument belongs to.
    min_val, max_val : float, optional
        Bounds; ``include_min`` / ``include_max`` say whether they are allowed.

    Returns
    -------
    int or float
        ``value`` as a Python int or float.
    """
    prefix = _owner_prefix(name, owner)
    is_int = isinstance(kind, type) and issubclass(kind, (numbers.Integral, np.integer))
    if is_int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        type_name = "int"
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        type_name = "float"
    if not ok:
        raise BayesCRLValueError(
            f"{prefix} must be an instance of '{type_name}'. Got {value!r} of type "
            f"{type(value).__name__} instead."
        )
    out: int | float = int(value) if is_int else float(value)
    if not is_int and not np.isfinite(out):
        raise BayesCRLValueError(f"{prefix} must be a finite number. Got {value!r} instead.")
    low_bad = min_val is not None and (out < min_val or (not include_min and out == min_val))
    high_bad = max_val is not None and (out > max_val or (not include_max and out == max_val))
    if low_bad or high_bad:
        lo = "-inf" if min_val is None else f"{min_val}"
        hi = "inf" if max_val is None else f"{max_val}"
        lb = "[" if (include_min and min_val is not None) else "("
        rb = "]" if (include_max and max_val is not None) else ")"
        raise BayesCRLValueError(
            f"{prefix} must be in the range {lb}{lo}, {hi}{rb}. Got {value!r} instead."
        )
    return out


def check_random_state(random_state: Any, name: str = "random_state") -> np.random.Generator:
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    Parameters
    ----------
    random_state : None, int or numpy.random.Generator
        ``None`` gives fresh OS entropy; an int (>= 0) seeds a new generator; a Generator is returned
        as is (so draws advance its state).

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    BayesCRLValueError
        For any other type (including the legacy ``numpy.random.RandomState``) or a negative seed.
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        if random_state < 0:
            raise BayesCRLValueError(
                f"The '{name}' parameter must be a non-negative int. Got {random_state!r} instead."
            )
        return np.random.default_rng(int(random_state))
    fix = ""
    if isinstance(random_state, np.random.RandomState):
        fix = " Pass an int seed or np.random.default_rng(seed) instead of a legacy RandomState."
    raise BayesCRLValueError(
        f"The '{name}' parameter must be None, an int or a numpy.random.Generator. Got "
        f"{random_state!r} of type {type(random_state).__name__} instead.{fix}"
    )


# ----------------------------------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------------------------------
def check_array_2d(x: Any, name: str = "x") -> np.ndarray:
    """Check and convert a 2-D numeric array.

    Parameters
    ----------
    x : array_like, shape (N, D)
        Numeric data; converted to float64.
    name : str, default "x"
        Name of the argument, used in the message.

    Returns
    -------
    numpy.ndarray, shape (N, D), float64
        A float64 array (a copy only when conversion needs one).

    Raises
    ------
    BayesCRLValueError
        If ``x`` is not numeric, not 2-D, empty, or holds NaN/inf (the message gives how many and
        the (row, column) index of the first).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor: avoid importing torch here
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BayesCRLValueError(
            f"'{name}' must be a numeric 2-D array of shape (n_samples, n_features). Could not "
            f"convert the {type(x).__name__} given to float64: {exc}. Convert non-numeric columns "
            f"(for example environment labels) out of '{name}' first."
        ) from None
    if arr.ndim != 2:
        fix = f" Use {name}.reshape(-1, 1) for a single feature." if arr.ndim == 1 else ""
        raise BayesCRLValueError(
            f"'{name}' must be a 2-D array of shape (n_samples, n_features). Got an array with "
            f"{arr.ndim} dimension(s) and shape {arr.shape} instead.{fix}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BayesCRLValueError(
            f"'{name}' must be non-empty. Got shape {arr.shape} instead; it needs at least one row "
            f"and one column."
        )
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)
        r, c = (int(v) for v in bad[0])
        raise BayesCRLValueError(
            f"'{name}' must contain only finite values. Got {len(bad)} NaN or infinite value(s); "
            f"the first is {float(arr[r, c])!r} at index ({r}, {c}). Drop or impute those rows first."
        )
    return arr


def _is_missing(label: Any) -> bool:
    if label is None:
        return True
    if isinstance(label, (float, np.floating)):
        return bool(np.isnan(label))
    return False


def _native_labels(arr: np.ndarray) -> np.ndarray:
    """Give an object array of labels a native dtype when all labels are ints, floats or strs."""
    vals = arr.tolist()
    if all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return np.asarray(vals, dtype=np.int64)
    if all(isinstance(v, str) for v in vals):
        return np.asarray(vals, dtype=str)
    if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return np.asarray(vals, dtype=np.float64)
    return arr


def check_env(env: Any, n_rows: int, name: str = "env") -> tuple[np.ndarray, list[Hashable]]:
    """Encode environment labels to integer codes.

    Parameters
    ----------
    env : array_like, shape (N,) or (N, 1)
        One label per row. Any hashable labels are accepted: ints, floats, strings such as
        ``"day 3"``, tuples, or a mix.
    n_rows : int
        Number of rows the labels must match (``x.shape[0]``).
    name : str, default "env"
        Name of the argument, used in the message.

    Returns
    -------
    codes : numpy.ndarray, shape (N,), int64
        ``codes[n]`` is the position of ``env[n]`` in ``labels``.
    labels : list
        The distinct labels, sorted when they are mutually comparable, otherwise in order of first
        appearance. Numpy scalars are converted to Python scalars.

    Raises
    ------
    BayesCRLValueError
        On the wrong length or dimensionality, missing labels (NaN or None), or unhashable labels.
    """
    if hasattr(env, "detach") and hasattr(env, "cpu"):
        env = env.detach().cpu().numpy()
    if isinstance(env, np.ndarray) or (hasattr(env, "__array__") and not isinstance(env, Sequence)):
        arr = np.asarray(env)
    elif isinstance(env, (Sequence, Collection)) and not isinstance(env, (str, bytes)):
        items = list(env)
        arr = np.empty(len(items), dtype=object)
        for k, v in enumerate(items):  # element-wise: keeps tuples as labels, mixes un-coerced
            arr[k] = v[0] if isinstance(v, list) and len(v) == 1 else v
        arr = _native_labels(arr)
    else:
        raise BayesCRLValueError(
            f"'{name}' must be an array or sequence with one environment label per row. Got "
            f"{type(env).__name__} instead."
        )
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise BayesCRLValueError(
            f"'{name}' must be a 1-D array with one environment label per row. Got shape "
            f"{arr.shape} instead."
        )
    if arr.shape[0] != n_rows:
        raise BayesCRLValueError(
            f"'{name}' must have one label per row of x: expected length {n_rows}, got length "
            f"{arr.shape[0]}. Pass the labels aligned with the rows of x."
        )
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64), []
    kind = arr.dtype.kind
    if kind in "iubfUS":
        if kind == "f":
            nan = np.isnan(arr)
            if nan.any():
                first = int(np.argmax(nan))
                raise BayesCRLValueError(
                    f"'{name}' must not contain missing labels. Got {int(nan.sum())} NaN label(s); "
                    f"the first at index {first}. Drop those rows or give them a label."
                )
        if kind in "iu" and n_rows > 0:
            lo, hi = int(arr.min()), int(arr.max())
            if hi - lo < max(n_rows, 1024):  # integer labels in a small range: a lookup table, no sort of N rows
                shifted = (arr - lo if lo else arr).astype(np.intp, copy=False)
                present = np.bincount(shifted, minlength=hi - lo + 1) > 0
                lut = np.cumsum(present) - 1
                return lut[shifted].astype(np.int64, copy=False), [int(v) + lo for v in np.flatnonzero(present)]
        uniq, codes = np.unique(arr, return_inverse=True)
        return codes.reshape(-1).astype(np.int64), list(uniq.tolist())
    # General path: arbitrary hashable Python objects.
    index: dict[Hashable, int] = {}
    raw = np.empty(n_rows, dtype=np.int64)
    for n, label in enumerate(arr.tolist()):
        if _is_missing(label):
            n_missing = sum(_is_missing(v) for v in arr.tolist())
            raise BayesCRLValueError(
                f"'{name}' must not contain missing labels. Got {n_missing} missing (NaN or None) "
                f"label(s); the first at index {n}. Drop those rows or give them a label."
            )
        try:
            code = index.setdefault(label, len(index))
        except TypeError:
            raise BayesCRLValueError(
                f"'{name}' labels must be hashable (int, str, tuple, ...). Got {label!r} of type "
                f"{type(label).__name__} at index {n}."
            ) from None
        raw[n] = code
    labels = list(index)
    try:
        order = sorted(range(len(labels)), key=lambda k: labels[k])
    except TypeError:
        return raw, labels
    remap = np.empty(len(labels), dtype=np.int64)
    remap[np.asarray(order, dtype=np.int64)] = np.arange(len(labels))
    return remap[raw], [labels[k] for k in order]


# ----------------------------------------------------------------------------------------------------
# Graphs
# ----------------------------------------------------------------------------------------------------
def as_adjacency_array(graph: Any, name: str = "adjacency") -> np.ndarray:
    """Return a float64 (n, n) array from an array-like or a :class:`networkx.DiGraph`.

    A DiGraph is read in its node order (``list(graph.nodes)``) with every edge as 1 (edge weights
    are ignored). Values are not checked here; see :func:`check_adjacency`.
    """
    if hasattr(graph, "succ") and hasattr(graph, "nodes"):
        import networkx as nx

        return nx.to_numpy_array(graph, nodelist=list(graph.nodes), weight=None, dtype=np.float64)
    if hasattr(graph, "detach") and hasattr(graph, "cpu"):
        graph = graph.detach().cpu().numpy()
    try:
        arr = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BayesCRLValueError(
            f"'{name}' must be a numeric (n, n) array or a networkx.DiGraph. Could not convert the "
            f"{type(graph).__name__} given: {exc}."
        ) from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise BayesCRLValueError(
            f"'{name}' must be a square (n, n) matrix with {name}[parent, child]. Got shape "
            f"{arr.shape} instead."
        )
    return arr


def topological_order(adjacency: np.ndarray) -> np.ndarray | None:
    """Kahn's algorithm on ``A[parent, child]``; ties broken by smallest index.

    Returns
    -------
    numpy.ndarray of int64, shape (n,), or None
        A topological order (parents before children), or ``None`` if the graph has a cycle.
    """
    a = np.asarray(adjacency) != 0
    n = a.shape[0]
    indeg = a.sum(axis=0).astype(np.int64)
    order: list[int] = []
    ready = sorted(int(i) for i in np.flatnonzero(indeg == 0))
    while ready:
        i = ready.pop(0)
        order.append(i)
        for c in np.flatnonzero(a[i]):
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(int(c))
        ready.sort()
    return np.asarray(order, dtype=np.int64) if len(order) == n else None


def find_cycle(adjacency: np.ndarray) -> list[int] | None:
    """Return one directed cycle as a node list ``[i0, i1, ..., i0]``, or ``None`` if acyclic."""
    a = np.asarray(adjacency) != 0
    if topological_order(a) is not None:
        return None
    # Peel off sources and sinks repeatedly; what remains all lies on or between cycles.
    alive = np.ones(a.shape[0], dtype=bool)
    changed = True
    while changed:
        sub = a & alive[:, None] & alive[None, :]
        keep = alive & sub.any(axis=0) & sub.any(axis=1)
        changed = bool((keep != alive).any())
        alive = keep
    start = int(np.flatnonzero(alive)[0])
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        nxt = int(np.flatnonzero(a[node] & alive)[0])
        if nxt in seen:
            return path[seen[nxt] :] + [nxt]
        seen[nxt] = len(path)
        path.append(nxt)
        node = nxt


def check_adjacency(a: Any, n: int | None = None, name: str = "adjacency") -> np.ndarray:
    """Check a DAG adjacency matrix ``A[parent, child]``.

    Parameters
    ----------
    a : array_like, shape (n, n), or networkx.DiGraph
        0/1 (or bool) entries, ``a[j, i] = 1`` for an edge ``z_j -> z_i``.
    n : int, optional
        Required size; not checked when None.
    name : str, default "adjacency"
        Name of the argument, used in the message.

    Returns
    -------
    numpy.ndarray, shape (n, n), int64

    Raises
    ------
    BayesCRLValueError
        If ``a`` is not square, has the wrong size, has entries other than 0/1, or has a cycle
        (including self-loops); the message shows one cycle.
    """
    arr = as_adjacency_array(a, name)
    if n is not None and arr.shape[0] != n:
        raise BayesCRLValueError(
            f"'{name}' must be of shape ({n}, {n}) to match n_latents={n}. Got shape {arr.shape} "
            f"instead."
        )
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise BayesCRLValueError(
            f"'{name}' must contain only 0/1 entries ({name}[parent, child] = 1 for an edge). Got "
            f"{int(bad.sum())} other value(s); the first is {float(arr[r, c])!r} at index ({r}, {c}). "
            f"Threshold probabilities first, e.g. (probs > 0.5).astype(int)."
        )
    out = arr.astype(np.int64)
    cycle = find_cycle(out)
    if cycle is not None:
        shown = " -> ".join(str(i) for i in cycle)
        raise BayesCRLValueError(
            f"'{name}' must be acyclic (a DAG). Got a graph with the cycle {shown}. Remove one of "
            f"its edges."
        )
    return out


def check_seen_inputs(x: Any, env: Any, env_labels: Sequence[Hashable],
                      n_features_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``x``/``env`` for a fitted estimator and map the labels to the codes seen in fit.

    Returns ``x`` (N, d) float64 and ``codes`` (N,) int64 indexing ``env_labels``. Raises
    :class:`BayesCRLValueError` for unseen labels or a different number of columns.
    """
    x = check_array_2d(x, "x")
    return x, check_seen_env(env, x.shape, env_labels, n_features_in)


def check_seen_env(env: Any, x_shape: tuple, env_labels: Sequence[Hashable], n_features_in: int) -> np.ndarray:
    """The codes (N,) int64 of ``env`` among the labels seen in fit, for observations of shape ``x_shape``.

    Raises :class:`BayesCRLValueError` for unseen labels or a different number of columns.
    """
    codes_new, labels_new = check_env(env, x_shape[0], "env")
    lookup = {lab: k for k, lab in enumerate(env_labels)}
    unknown = [lab for lab in labels_new if lab not in lookup]
    if unknown:
        raise BayesCRLValueError(
            f"The 'env' argument holds labels not seen in fit: {unknown[:5]!r}. Expected labels among "
            f"{list(env_labels)[:10]!r}{'...' if len(env_labels) > 10 else ''}.")
    if x_shape[1] != n_features_in:
        raise BayesCRLValueError(f"The 'x' argument has {x_shape[1]} columns; this model was fitted on "
                                 f"{n_features_in}.")
    lut = np.asarray([lookup[lab] for lab in labels_new], dtype=np.int64)
    return lut[codes_new]

