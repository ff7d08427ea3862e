"""Random and fixed DAGs over the latent causal variables.

Convention: ``A[parent, child] = 1`` for an edge ``z_parent -> z_child``; matrices are int64 0/1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_random_state, check_scalar, topological_order

__all__ = ["chain_dag", "is_dag", "random_dag", "topological_order"]


def chain_dag(n_nodes: int) -> np.ndarray:
    """The chain ``z0 -> z1 -> ... -> z_{n-1}``.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (>= 1).

    Returns
    -------
    numpy.ndarray, shape (n_nodes, n_nodes), int64
        ``A[i, i + 1] = 1``, every other entry 0.
    """
    n = check_scalar(n_nodes, "n_nodes", int, "chain_dag", min_val=1)
    a = np.zeros((n, n), dtype=np.int64)
    idx = np.arange(n - 1)
    a[idx, idx + 1] = 1
    return a


def random_dag(
    n_nodes: int,
    expected_degree: float = 1.0,
    *,
    permute: bool = True,
    random_state: Any = None,
) -> np.ndarray:
    """An Erdos-Renyi random DAG.

    Each of the ``n (n - 1) / 2`` pairs of a random causal order is joined independently with
    probability ``p = min(1, expected_degree / (n - 1))``, so the expected number of neighbours
    (parents plus children) of a node is ``expected_degree`` and the expected number of edges is
    ``n * expected_degree / 2``.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (>= 1).
    expected_degree : float, default 1.0
        Expected number of neighbours per node (>= 0).
    permute : bool, default True
        If True the node indices are randomly permuted, so index order is *not* the causal order
        (an estimator must not be able to read the order off the indices). If False the result is
        strictly upper triangular.
    random_state : None, int or numpy.random.Generator
        Seed or generator.

    Returns
    -------
    numpy.ndarray, shape (n_nodes, n_nodes), int64
        Acyclic 0/1 adjacency, ``A[parent, child]``.
    """
    n = check_scalar(n_nodes, "n_nodes", int, "random_dag", min_val=1)
    deg = check_scalar(expected_degree, "expected_degree", float, "random_dag", min_val=0.0)
    rng = check_random_state(random_state)
    p = 0.0 if n == 1 else min(1.0, deg / (n - 1))
    upper = np.triu(rng.random((n, n)) < p, k=1).astype(np.int64)
    if not permute:
        return upper
    perm = rng.permutation(n)
    # Node k of the output is node perm[k] of the upper-triangular graph.
    return upper[np.ix_(perm, perm)]


def is_dag(adjacency: np.ndarray) -> bool:
    """True if the 0/1 matrix ``A[parent, child]`` has no directed cycle (self-loops included)."""
    return topological_order(np.asarray(adjacency)) is not None
