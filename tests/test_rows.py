"""Observations read on demand (bayes_crl.rows): memory maps and other array-likes are never loaded whole."""
import warnings

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel, simulate_latent_anm
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.rows import CHUNK_ROWS, ArrayRows, column_moments, is_out_of_core


class CountingArray:
    """A 2-D array-like (shape, dtype, __getitem__) that records how many rows each read asked for."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, []

    def __getitem__(self, idx):
        out = self.a[idx]
        self.reads.append(len(out))
        return out


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=2, n_envs=6, n_per_env=100, n_obs_dims=4, random_state=0)


def test_what_is_read_on_demand(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    assert is_out_of_core(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert is_out_of_core(CountingArray(np.zeros((5, 2))))
    assert not is_out_of_core(np.zeros((5, 2))) and not is_out_of_core([[1.0, 2.0]])
    assert not is_out_of_core(torch.zeros(5, 2)) and is_out_of_core(CountingArray(np.zeros(5)))  # refused later, by its shape


def test_column_moments_in_chunks_are_numpys(monkeypatch):
    import bayes_crl.rows as rows

    monkeypatch.setattr(rows, "CHUNK_ROWS", 7)  # many uneven chunks
    x = np.random.default_rng(0).normal(3.0, [1.0, 10.0, 0.01], size=(50, 3))
    mean, sd = rows.column_moments(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sd, x.std(0), rtol=1e-10)
    x[23, 2] = np.nan
    with pytest.raises(BayesCRLValueError, match="'x' holds NaN or infinite values; the first is at row 23, column 2"):
        rows.column_moments(x)


def test_array_rows_reads_the_rows_asked_for_in_their_order():
    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    mean, scale = x.mean(0), x.std(0)
    r = ArrayRows(CountingArray(x), mean, scale)
    expect = torch.as_tensor(((x - mean) / scale).astype(np.float32))
    assert len(r) == 10 and r.shape == (10, 4)
    torch.testing.assert_close(r[2:5], expect[2:5])
    idx = torch.tensor([[7, 1, 7], [0, 9, 3]])  # unsorted, repeated, two-dimensional (the batched warm-ups)
    out = r[idx]
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out, expect[idx])
    assert r.data.reads[-1] == 5  # each distinct row read once
    with pytest.raises(IndexError, match="out of range for 10 rows"):
        r[torch.tensor([3, 10])]


def test_fit_on_an_array_like_reads_bounded_blocks_and_matches_the_in_memory_fit(data):
    x = CountingArray(data.x.copy())
    kw = dict(n_latents=2, num_steps=20, n_restarts=2, random_state=0, num_posterior_samples=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = LatentCausalModel(**kw).fit(x, env=data.env)
        eager = LatentCausalModel(**kw).fit(data.x, env=data.env)
    np.testing.assert_array_equal(x.a, data.x)  # nothing written back
    # reads are minibatches, chunks or the search subset: never more than a chunk unless the data are that small
    assert max(x.reads) <= max(CHUNK_ROWS, len(data.x))
    assert len(x.reads) >= 20  # every SVI step reads its own minibatch (the two warm-ups in one read)
    np.testing.assert_allclose(lazy.x_mean_, eager.x_mean_, rtol=1e-12)
    z_lazy, z_eager = lazy.transform(x, data.env), eager.transform(data.x, data.env)
    assert z_lazy.shape == (len(data.x), 2)
    # the same fit up to float rounding of the column moments
    np.testing.assert_allclose(z_lazy, z_eager, atol=1e-3)


def test_memory_mapped_npy_fit_and_clear_errors(tmp_path, data):
    path = tmp_path / "x.npy"
    np.save(path, data.x.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LatentCausalModel(n_latents=2, num_steps=5, random_state=0, num_posterior_samples=20).fit(mm, env=data.env)
    assert m.transform(mm, data.env).shape == (len(data.x), 2)
    np.testing.assert_array_equal(np.load(path), data.x.astype(np.float32))  # the file is unchanged
    with pytest.raises(BayesCRLValueError, match="'x' must be a 2-D array-like .* Got shape \\(600, 2, 2\\)"):
        LatentCausalModel(n_latents=2).fit(CountingArray(np.zeros((600, 2, 2))), env=data.env)
    with pytest.raises(BayesCRLValueError, match="'x' must hold numbers .* Got dtype"):
        LatentCausalModel(n_latents=2).fit(CountingArray(np.full((600, 4), "a")), env=data.env)
    with pytest.raises(BayesCRLValueError, match="has 3 columns; this model was fitted on 4"):
        m.transform(CountingArray(np.zeros((600, 3))), data.env)


def test_checkpoint_fingerprint_is_the_same_for_rows_read_on_demand(data):
    from bayes_crl.stages import _fingerprint

    x = data.x.astype(np.float64)
    mean, scale = x.mean(0), x.std(0)
    tensor = torch.as_tensor((x - mean) / scale, dtype=torch.float32)
    env = torch.as_tensor(data.env)
    assert _fingerprint(ArrayRows(CountingArray(x), mean, scale), env) == _fingerprint(tensor, env)


def test_a_memory_mapped_file_is_read_from_the_file_not_through_the_map(tmp_path):
    """Rows of a memmap come from ``os.pread`` (scattered reads through the map would make the file resident);
    the values are those of the map, changes through a shared map included; a view falls back to indexing."""
    from bayes_crl.rows import _Reader

    x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r+")
    mm[5, 1] = 42.0  # written through the shared map, not flushed
    r = ArrayRows(mm, np.zeros(3), np.ones(3))
    assert r._reader.fd is not None
    idx = torch.tensor([999, 5, 6, 7, 0, 500, 5])
    torch.testing.assert_close(r[idx], torch.as_tensor(np.asarray(mm)[idx.numpy()]))
    torch.testing.assert_close(r[100:300], torch.as_tensor(np.asarray(mm)[100:300]))
    assert float(r[torch.tensor([5])][0, 1]) == 42.0
    assert _Reader(mm[10:]).fd is None and _Reader(np.load(tmp_path / "x.npy", mmap_mode="c")).fd is None
    np.testing.assert_allclose(column_moments(mm)[0], np.asarray(mm, dtype=np.float64).mean(0), rtol=1e-12)


def test_fit_reads_an_h5py_dataset(tmp_path, data):
    """h5py reads a list of rows only in increasing order: the rows are read sorted and put back in order."""
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=data.x)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        ds = f["x"]
        assert is_out_of_core(ds)
        r = ArrayRows(ds, np.zeros(4), np.ones(4))
        torch.testing.assert_close(r[torch.tensor([9, 2, 2, 5])], torch.as_tensor(data.x[[9, 2, 2, 5]], dtype=torch.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = LatentCausalModel(n_latents=2, num_steps=5, random_state=0, num_posterior_samples=20).fit(ds, env=data.env)
        assert m.transform(ds, data.env).shape == (len(data.x), 2)
