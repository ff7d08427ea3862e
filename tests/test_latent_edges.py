"""The edge machinery alone, given latents (bayes_crl.latent_edges)."""
import numpy as np
import pytest

from bayes_crl._validation import BayesCRLValueError
from bayes_crl.latent_edges import fit_latent_edges
from bayes_crl.simulate import simulate_spike_slab_latents


@pytest.fixture(scope="module")
def strong():
    """l = 3, strong edges (standardised strength 0.5 in every environment), 6 x 150 rows."""
    return simulate_spike_slab_latents(3, 6, 150, prior_inclusion=0.5, effect=0.5, random_state=3)


@pytest.mark.parametrize("prior", ["spike_slab", "horseshoe", "laplace"])
def test_strong_edges_found_and_absent_edges_not(strong, prior):
    r = fit_latent_edges(strong.z, strong.env, prior, num_steps=400)
    iu = np.triu_indices(3, 1)
    truth = strong.adjacency[iu]
    assert truth.sum() >= 1 and (truth == 0).sum() >= 1  # the fixture has both kinds
    np.testing.assert_array_less(0.9, r.inclusion[iu][truth == 1])
    np.testing.assert_array_less(r.inclusion[iu][truth == 0], 0.1)
    assert np.all(np.tril(r.inclusion) == 0)
    if prior != "spike_slab":
        assert r.weight.shape == (6, 3, 3) and len(r.losses) == 400
        assert r.losses[-1] < r.losses[0]  # SVI from the least-squares start still improves the ELBO


def test_order_is_respected(strong):
    r = fit_latent_edges(strong.z, strong.env, "spike_slab", order=[2, 1, 0])
    assert np.all(np.triu(r.inclusion) == 0)
    rh = fit_latent_edges(strong.z, strong.env, "laplace", order=[2, 1, 0], num_steps=50)
    assert np.all(np.triu(rh.inclusion) == 0) and np.all(rh.weight[:, 0, 1] == 0)


def test_bad_input_is_named(strong):
    with pytest.raises(BayesCRLValueError, match="'order'.*permutation"):
        fit_latent_edges(strong.z, strong.env, order=[0, 0, 1])
    with pytest.raises(BayesCRLValueError, match="'env'.*integer codes"):
        fit_latent_edges(strong.z, strong.env.astype(float))
    with pytest.raises(BayesCRLValueError, match="'z'.*finite 2-D"):
        fit_latent_edges(strong.z[:, 0], strong.env)
