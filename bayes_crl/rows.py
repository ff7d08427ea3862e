"""Observations larger than memory: rows of an array-like read on demand, standardised, as float32 tensors.

``LatentCausalModel.fit`` accepts, besides in-memory arrays, any 2-D array-like with ``shape`` and row slicing
(a memory-mapped ``.npy`` from ``numpy.load(path, mmap_mode="r")``, an h5py dataset, any array-like whose rows can be
read by a slice and by a sorted integer array). Such data are never copied whole into memory: the column means and scales are computed in chunks, every SVI minibatch reads its
rows, the searches read a bounded random subset (:data:`bayes_crl.stages.MAX_SEARCH_ROWS`) and the posterior
summaries read chunks of :data:`CHUNK_ROWS` rows. Memory then stays flat in the number of rows (BENCHMARKS.md,
"Memory").

A ``numpy.memmap`` of a file (``mode`` ``"r"``, ``"r+"`` or ``"w+"``, C order, not a view of another memmap) is read
with ``os.pread`` from its file rather than through the mapping: reading scattered rows through a mapping brings
the kernel's readahead window of each row into the process (measured: about 600 KiB a row, so 512 rows mapped
300 MB), and the resident memory of the process would grow to the file's size. The file's reads are coherent with
a shared mapping, so rows changed through the memmap are read as changed. Other array-likes (a copy-on-write
memmap, a view, h5py) are read by indexing them.
"""
from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from bayes_crl._errors import BayesCRLValueError

__all__ = ["ArrayRows", "is_out_of_core", "check_out_of_core", "column_moments", "row_subset", "CHUNK_ROWS"]

CHUNK_ROWS = 16384
def is_out_of_core(x) -> bool:
    """Whether ``x`` is read on demand rather than converted to an in-memory array: a ``numpy.memmap``, or an
    array-like with ``shape`` and ``__getitem__`` that is not a numpy array, a torch tensor, a pandas object, a
    list or a tuple."""
    if isinstance(x, np.memmap):
        return True
    if isinstance(x, (np.ndarray, list, tuple)) or torch.is_tensor(x) or hasattr(x, "columns") or hasattr(x, "iloc"):
        return False
    shape = getattr(x, "shape", None)
    return shape is not None and hasattr(x, "__getitem__")


def row_subset(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` distinct row indices out of ``n`` (sorted, int64), drawn without an ``n``-long permutation (numpy's
    ``Generator.choice`` without replacement), so memory is O(k) however many rows there are."""
    idx = np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)
    return torch.as_tensor(np.sort(idx).astype(np.int64))


def check_out_of_core(x, name: str = "x") -> None:
    """Check that an out-of-core array-like is 2-D, numeric and not empty.

    Raises
    ------
    BayesCRLValueError
        Naming ``name``, what was expected and what was given.
    """
    shape = tuple(x.shape)
    kind = np.dtype(getattr(x, "dtype", np.float64)).kind
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise BayesCRLValueError(f"'{name}' must be a 2-D array-like of shape (n_samples, n_features) with at least "
                                 f"one row and column. Got shape {shape}.")
    if kind not in "biuf":
        raise BayesCRLValueError(f"'{name}' must hold numbers (bool, integer or float). Got dtype "
                                 f"{getattr(x, 'dtype', None)!r}.")


class _Reader:
    """Rows of ``data`` as float64 arrays: ``block(start, stop)`` and ``rows(sorted_unique_indices)``."""

    def __init__(self, data):
        self.data = data
        self.fd = None
        if (isinstance(data, np.memmap) and isinstance(data.base, mmap.mmap) and getattr(data, "filename", None)
                and data.mode in ("r", "r+", "w+") and data.flags.c_contiguous):
            self.dtype = data.dtype
            self.row_bytes = data.dtype.itemsize * data.shape[1]
            self.offset = int(data.offset)
            self.d = data.shape[1]
            self.fd = os.open(data.filename, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def _pread(self, start: int, count: int) -> np.ndarray:
        buf = os.pread(self.fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(buf, dtype=self.dtype).reshape(count, self.d)

    def block(self, start: int, stop: int) -> np.ndarray:
        if self.fd is None:
            return np.asarray(self.data[start:stop], dtype=np.float64)
        return self._pread(start, stop - start).astype(np.float64)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        if self.fd is None:
            return np.asarray(self.data[idx], dtype=np.float64)
        if len(idx) == 0:
            return np.zeros((0, self.d))
        # one read per run of consecutive rows
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(idx)]])
        parts = [self._pread(int(idx[a]), int(b - a)) for a, b in zip(starts, stops)]
        return np.concatenate(parts).astype(np.float64)


def column_moments(data, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (population, as ``numpy.std``) of an array-like (N, d), read in chunks
    of :data:`CHUNK_ROWS` rows (Chan et al.'s pairwise update, float64).

    Raises
    ------
    BayesCRLValueError
        When a value is not finite (the message gives the first (row, column)), or ``data`` is empty.
    """
    n, d = data.shape
    if n == 0 or d == 0:
        raise BayesCRLValueError(f"'{name}' must have at least one row and one column. Got shape {tuple(data.shape)}.")
    mean, m2, count = np.zeros(d), np.zeros(d), 0
    reader = _Reader(data)
    for start in range(0, n, CHUNK_ROWS):
        block = reader.block(start, min(start + CHUNK_ROWS, n))
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise BayesCRLValueError(f"'{name}' holds NaN or infinite values; the first is at row {start + r}, "
                                     f"column {c}. Remove or impute them before fitting.")
        k = len(block)
        bm = block.mean(0)
        delta = bm - mean
        tot = count + k
        mean = mean + delta * k / tot
        m2 = m2 + ((block - bm) ** 2).sum(0) + delta**2 * count * k / tot
        count = tot
    return mean, np.sqrt(m2 / count)


class ArrayRows:
    """Rows of an array-like ``data`` (N, d), standardised as ``(x - mean) / scale`` and returned as float32
    tensors.

    ``rows[i:j]`` reads a contiguous block; ``rows[idx]`` with an integer tensor or array of any shape reads those
    rows (in increasing order, as h5py requires, then put back in the order asked) and returns
    ``(*idx.shape, d)``. ``len(rows)`` and ``rows.shape`` are those of ``data``. Everything in the fit that reads
    observations does so through indexing, so this object stands in for the in-memory tensor.

    Parameters
    ----------
    data : array-like (N, d)
    mean, scale : ndarray (d,)
    """

    def __init__(self, data, mean: np.ndarray, scale: np.ndarray):
        self.data = data
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = torch.float32
        self._reader = _Reader(data)

    def __len__(self) -> int:
        return self.shape[0]

    def _finish(self, block: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(((block - self.mean) / self.scale).astype(np.float32))

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.shape[0])
            if step != 1:
                raise IndexError("ArrayRows supports slices with step 1 only")
            return self._finish(self._reader.block(start, max(start, stop)))
        flat = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64)
        shape = flat.shape
        flat = flat.reshape(-1)
        uniq, inverse = np.unique(flat, return_inverse=True)
        if len(uniq) and (uniq[0] < 0 or uniq[-1] >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        block = self._reader.rows(uniq)[inverse]
        return self._finish(block).reshape(*shape, self.shape[1])
