"""Reading a user's own observations: ``.npz`` or ``.csv`` (numpy and the csv module only)."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from .._validation import BayesCRLValueError, check_array_2d, check_env

__all__ = ["load_observations"]


def _parse_env_strings(values: list[str]) -> np.ndarray:
    """Labels read as text become int64 when all are integers, float64 when all are numbers."""
    for dtype in (np.int64, np.float64):
        try:
            return np.asarray([dtype(v) for v in values], dtype=dtype)
        except ValueError:
            continue
    return np.asarray(values, dtype=str)


def _load_csv(path: str, env_column: str, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BayesCRLValueError(f"'path' {path!r} is empty; expected a header row.") from None
        rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    if env_column not in header:
        raise BayesCRLValueError(
            f"'env_column' {env_column!r} is not a column of {path!r}. Columns found: {header}. "
            f"Pass env_column='<name of the environment column>'."
        )
    if header.count(env_column) > 1:
        raise BayesCRLValueError(f"Column {env_column!r} appears more than once in {path!r}.")
    k_env = header.index(env_column)
    x_cols = [k for k in range(len(header)) if k != k_env]
    if not x_cols:
        raise BayesCRLValueError(f"{path!r} has no columns besides {env_column!r}; x would be empty.")
    if not rows:
        raise BayesCRLValueError(f"{path!r} has a header but no data rows.")
    x = np.empty((len(rows), len(x_cols)))
    env: list[str] = []
    for r, row in enumerate(rows):
        line = r + 2  # 1-based, after the header
        if len(row) != len(header):
            raise BayesCRLValueError(
                f"Line {line} of {path!r} has {len(row)} fields; the header has {len(header)}."
            )
        env.append(row[k_env].strip())
        for c, k in enumerate(x_cols):
            cell = row[k].strip()
            try:
                x[r, c] = float(cell)
            except ValueError:
                raise BayesCRLValueError(
                    f"Column {header[k]!r} of {path!r} must be numeric: line {line} holds "
                    f"{cell!r}. Only the environment column ({env_column!r}) may hold text; "
                    f"set env_column if the labels are in another column."
                ) from None
    return x, _parse_env_strings(env)


def load_observations(
    path: str | os.PathLike, env_column: str = "env", *, delimiter: str = ","
) -> tuple[np.ndarray, np.ndarray]:
    """Read observations and environment labels from a ``.npz`` or ``.csv`` file.

    Parameters
    ----------
    path : str or path-like
        ``.npz`` with arrays ``x`` (N, d) and ``env_column`` (N,) (read with
        ``allow_pickle=False``), or ``.csv`` with a header row: the ``env_column`` column holds the
        labels (text such as ``"day 3"`` is fine), every other column is numeric and becomes a
        column of ``x`` in file order.
    env_column : str, default "env"
        Name of the environment column (csv) or key (npz).
    delimiter : str, default ","
        Field separator for csv files.

    Returns
    -------
    x : numpy.ndarray, shape (N, d), float64
    env : numpy.ndarray, shape (N,)
        The labels as read: int64 when all are integers, float64 when all are numbers, str
        otherwise. Encode them with :func:`bayes_crl._validation.check_env`.

    Raises
    ------
    BayesCRLValueError
        Unknown extension, missing keys or columns, non-numeric cells, NaN/inf in ``x``, missing
        labels or mismatched lengths.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", env_column) if k not in f.files]
            if missing:
                raise BayesCRLValueError(
                    f"{path!r} lacks the key(s) {missing}; keys found: {sorted(f.files)}. Save with "
                    f"np.savez(path, x=x, {env_column}=env), or pass env_column='<key>'."
                )
            x_raw: Any = f["x"]
            env = f[env_column]
    elif ext in (".csv", ".tsv", ".txt"):
        x_raw, env = _load_csv(path, env_column, "\t" if ext == ".tsv" and delimiter == "," else delimiter)
    else:
        raise BayesCRLValueError(
            f"'path' must end in .npz or .csv (also .tsv, .txt). Got {path!r}. Convert the file, "
            f"e.g. np.savez('data.npz', x=x, env=env)."
        )
    x = check_array_2d(x_raw, name="x")
    env = np.asarray(env)
    if env.ndim == 2 and env.shape[1] == 1:
        env = env[:, 0]
    check_env(env, x.shape[0], name=env_column)
    return x, env
