import numpy as np
import pytest

from bayes_crl._validation import BayesCRLValueError
from bayes_crl.datasets import (
    SACHS_CONDITIONS,
    SACHS_CONSENSUS_EDGES,
    SACHS_VARIABLES,
    load_sachs,
    sachs_latent_data,
)


def test_sachs_full_table_conditions_and_consensus_dag():
    d = load_sachs(log=False)
    assert d.values.shape == (7466, 11) and d.names == SACHS_VARIABLES
    assert d.values.min() >= 1.0 and np.isfinite(d.values).all()
    labels, counts = np.unique(d.env, return_counts=True)
    assert dict(zip(labels, counts)) == {name: n for name, n, _ in SACHS_CONDITIONS}
    # conditions are contiguous blocks in file order
    assert d.env[0] == "cd3cd28" and d.env[853] == "cd3cd28+icam2" and d.env[-1] == "b2camp"
    assert d.adjacency.sum() == len(SACHS_CONSENSUS_EDGES) == 17
    import networkx as nx

    assert nx.is_directed_acyclic_graph(nx.DiGraph(d.adjacency))
    # first cell of the file: praf 26.4, pmek 13.2, ..., pjnk 40.0
    np.testing.assert_allclose(d.values[0, [0, 1, 10]], [26.4, 13.2, 40.0])


def test_sachs_subset_reorders_columns_and_graph():
    d = load_sachs(["Akt", "Erk", "Mek"])
    full = load_sachs()
    np.testing.assert_array_equal(d.values[:, 0], full.values[:, SACHS_VARIABLES.index("Akt")])
    # consensus: Mek -> Erk, Erk -> Akt
    assert d.adjacency.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("bad, msg", [(["Raf", "Foo"], "unknown: \\['Foo'\\]"), ("Raf", "must be a sequence"),
                                      (["Raf", "Raf"], "distinct names")])
def test_sachs_rejects_bad_variables(bad, msg):
    with pytest.raises(BayesCRLValueError, match=msg):
        load_sachs(bad)


def test_sachs_latent_data_is_a_deterministic_injective_problem():
    a = sachs_latent_data(random_state=3)
    b = sachs_latent_data(random_state=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (7466, 10) and a.z.shape == (7466, 4)
    assert a.latent_names == ("Raf", "Mek", "Erk", "Akt")
    np.testing.assert_allclose(a.z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(a.z.std(0), 1)
    assert a.adjacency.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    # the mixing is injective: without observation noise the latents are recovered exactly from x
    from bayes_crl.simulate.mixing import invert_mixing

    clean = sachs_latent_data(random_state=3, obs_noise_std=0.0)
    np.testing.assert_allclose(invert_mixing(clean.mixing_params, clean.x), clean.z, atol=1e-8)
    assert 0.008 < np.std(a.x - clean.x) < 0.012
    with pytest.raises(BayesCRLValueError, match="n_obs_dims"):
        sachs_latent_data(n_obs_dims=2)
