"""Tests for bayes_crl.metrics: sanity triads for latents, hand-checked graph cases."""

import math

import networkx as nx
import numpy as np
import pytest

from bayes_crl._validation import BayesCRLValueError
from bayes_crl.metrics import (
    align_graph,
    align_weights,
    brier,
    edge_auprc,
    edge_auroc,
    expected_calibration_error,
    expected_shd,
    match_latents,
    mpc,
    per_latent_correlation,
    reliability,
    shd,
    strength_coverage,
)

N = 5000


@pytest.fixture(scope="module")
def z():
    return np.random.default_rng(0).normal(size=(N, 4))


# -- latents: sanity triad ----------------------------------------------------------------------
def test_mpc_identity_is_one(z):
    assert mpc(z, z) == pytest.approx(1.0)


def test_mpc_permutation_scaling_sign_shift_is_one(z):
    perm = np.array([2, 0, 3, 1])
    z_hat = np.empty_like(z)
    z_hat[:, perm] = z * np.array([2.0, -0.5, 3.0, -7.0]) + 4.0
    score, p, signs = mpc(z, z_hat, return_matching=True)
    assert score == pytest.approx(1.0)
    np.testing.assert_array_equal(p, perm)
    np.testing.assert_array_equal(signs, [1, -1, 1, -1])


def test_mpc_constant_and_independent_near_zero(z):
    assert mpc(z, np.full((N, 4), 3.7)) == 0.0
    indep = np.random.default_rng(1).normal(size=(N, 4))
    assert mpc(z, indep) < 0.1


def test_mpc_mixed_or_duplicated_code_is_low(z):
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    assert mpc(z, z @ hadamard) == pytest.approx(0.5, abs=0.05)
    duplicated = np.repeat(z[:, :1], 4, axis=1)
    assert mpc(z, duplicated) == pytest.approx(0.25, abs=0.05)


def test_per_latent_correlation_and_matching_details(z):
    z_hat = np.column_stack([z[:, 1], np.random.default_rng(2).normal(size=N), z[:, 0], z[:, 3], z[:, 2]])
    per = per_latent_correlation(z, z_hat)
    np.testing.assert_allclose(per, 1.0)  # extra learned column is left unmatched
    perm, signs, corr = match_latents(z, z_hat)
    np.testing.assert_array_equal(perm, [2, 0, 4, 3])
    assert corr.shape == (4, 5)


def test_match_latents_errors(z):
    with pytest.raises(BayesCRLValueError, match="same number of rows"):
        mpc(z, z[:10])
    with pytest.raises(BayesCRLValueError, match="'z_hat' must have at least as many columns"):
        mpc(z, z[:, :2])
    with pytest.raises(BayesCRLValueError, match="'z_true'.*finite"):
        mpc(np.full((3, 2), np.nan), np.zeros((3, 2)))


# -- SHD -----------------------------------------------------------------------------------------------
CHAIN = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_shd_hand_checked():
    assert shd(CHAIN, CHAIN) == 0
    assert shd(CHAIN, np.zeros((3, 3))) == 2  # two missing edges
    reversed_ = CHAIN.copy()
    reversed_[0, 1], reversed_[1, 0] = 0, 1
    assert shd(CHAIN, reversed_) == 1  # a reversed edge counts once
    extra = CHAIN.copy()
    extra[0, 2] = 1
    assert shd(CHAIN, extra) == 1
    both = CHAIN.copy()
    both[1, 0] = 1
    assert shd(CHAIN, both) == 1
    assert shd(CHAIN, CHAIN.astype(bool)) == 0


def test_shd_threshold_and_networkx():
    probs = np.array([[0, 0.9, 0.2], [0, 0, 0.6], [0.1, 0, 0]])
    assert shd(CHAIN, probs, threshold=0.5) == 0
    with pytest.raises(BayesCRLValueError, match="'a_hat'.*0/1.*threshold=0.5"):
        shd(CHAIN, probs)
    assert shd(nx.DiGraph([(0, 1), (1, 2)]), CHAIN) == 0
    with pytest.raises(BayesCRLValueError, match=r"'a_hat' must have shape \(3, 3\).*align_graph"):
        shd(CHAIN, np.zeros((4, 4)))


def test_expected_shd():
    draws = np.stack([CHAIN, np.zeros((3, 3)), CHAIN])
    assert expected_shd(CHAIN, draws) == pytest.approx(2 / 3)
    with pytest.raises(BayesCRLValueError, match="'adjacency_draws'.*draws\\[None\\]"):
        expected_shd(CHAIN, CHAIN)


# -- probabilistic edge metrics ------------------------------------------------------------------
def test_perfect_probabilities():
    p = CHAIN.astype(float)
    assert edge_auroc(CHAIN, p) == 1.0
    assert edge_auprc(CHAIN, p) == 1.0
    assert brier(CHAIN, p) == 0.0
    assert expected_calibration_error(CHAIN, p) == 0.0


def test_uninformative_and_inverted_probabilities():
    assert edge_auroc(CHAIN, np.full((3, 3), 0.5)) == 0.5
    assert edge_auroc(CHAIN, 1.0 - CHAIN) == 0.0
    assert brier(CHAIN, np.full((3, 3), 0.5)) == pytest.approx(0.25)
    # 6 off-diagonal entries, 2 edges, all predicted 0.5: one bin, |2/6 - 0.5| = 1/6.
    assert expected_calibration_error(CHAIN, np.full((3, 3), 0.5)) == pytest.approx(1 / 6)


def test_auroc_undefined_without_both_classes():
    assert math.isnan(edge_auroc(np.zeros((3, 3)), np.full((3, 3), 0.2)))
    assert math.isnan(edge_auprc(np.zeros((3, 3)), np.full((3, 3), 0.2)))


def test_diagonal_ignored():
    p = CHAIN.astype(float)
    np.fill_diagonal(p, 0.7)
    assert brier(CHAIN, p) == 0.0
    with pytest.raises(BayesCRLValueError, match=r"'probs' must hold probabilities in \[0, 1\]"):
        brier(CHAIN, p * 2)
    with pytest.raises(BayesCRLValueError, match="'n_bins'"):
        expected_calibration_error(CHAIN, p, n_bins=0)


# -- alignment ------------------------------------------------------------------------------------------
def test_align_graph_recovers_truth(z):
    # The learned model numbers latents differently: learned k = true inverse_perm[k].
    perm = np.array([2, 0, 1])  # learned column perm[i] matches true latent i
    a_hat = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            a_hat[perm[i], perm[j]] = CHAIN[i, j]
    aligned = align_graph(a_hat, perm)
    np.testing.assert_array_equal(aligned, CHAIN)
    assert shd(CHAIN, aligned) == 0
    w = np.stack([a_hat, 2 * a_hat])
    np.testing.assert_array_equal(align_weights(w, perm), np.stack([CHAIN, 2 * CHAIN]))
    with pytest.raises(BayesCRLValueError, match="'perm'"):
        align_graph(a_hat, [0, 0, 1])
    with pytest.raises(BayesCRLValueError, match="'weights'.*align_graph"):
        align_weights(a_hat, perm)


def test_end_to_end_matching_then_graph(z):
    # A learned representation that permutes and rescales the truth, with its graph in its own order.
    perm_true_to_hat = np.array([1, 2, 0])
    z3 = z[:, :3]
    z_hat = np.empty_like(z3)
    z_hat[:, perm_true_to_hat] = -2.0 * z3
    a_hat = np.zeros((3, 3))
    a_hat[np.ix_(perm_true_to_hat, perm_true_to_hat)] = CHAIN
    score, perm, _ = mpc(z3, z_hat, return_matching=True)
    assert score == pytest.approx(1.0)
    assert shd(CHAIN, align_graph(a_hat, perm)) == 0


def test_reliability_pools_fits_and_matches_ece_and_brier():
    p1 = np.array([[0, 0.9, 0.1], [0.1, 0, 0.7], [0.0, 0.2, 0]])
    t5 = np.zeros((5, 5))
    t5[0, 1] = 1
    p5 = np.full((5, 5), 0.05)
    p5[0, 1] = 0.95
    rel = reliability([CHAIN, t5], [p1, p5], n_bins=10)
    assert rel["count"].sum() == 6 + 20
    # off-diagonal entries, row-major: 0.9, 0.1, 0.1, 0.7, 0.0, 0.2 (chain), then 0.95 and 19 x 0.05
    assert rel["count"][0] == 1 + 19
    assert rel["count"][1] == 2 and rel["count"][9] == 2 and rel["count"][7] == 1
    assert rel["frac_true"][9] == 1.0 and rel["frac_true"][7] == 1.0 and rel["frac_true"][1] == 0.0
    assert np.isnan(rel["frac_true"][5])
    ys = np.r_[[1, 0, 0, 1, 0, 0], np.r_[1, np.zeros(19)]]
    ss = np.r_[[0.9, 0.1, 0.1, 0.7, 0.0, 0.2], np.r_[0.95, np.full(19, 0.05)]]
    assert rel["brier"] == pytest.approx(np.mean((ss - ys) ** 2))
    assert reliability(CHAIN, p1)["ece"] == pytest.approx(expected_calibration_error(CHAIN, p1))


def test_reliability_rejects_mismatched_lists():
    with pytest.raises(BayesCRLValueError, match="'probs' must be a list with one"):
        reliability([CHAIN, CHAIN], [np.eye(3)])
    with pytest.raises(BayesCRLValueError, match="at least one"):
        reliability([], [])


def _coverage_case(rng, e=40, s=400, sd=0.1, scale=2.0, offset=0.3):
    """True chain strengths; draws centred on an affine image of the truth plus noise of sd ``sd``."""
    w = np.zeros((e, 3, 3))
    w[:, 0, 1] = rng.uniform(-2, 2, e)
    w[:, 1, 2] = rng.uniform(-2, 2, e)
    centre = np.zeros((e, 3, 3))
    centre[:, 0, 1] = offset + scale * w[:, 0, 1]
    centre[:, 1, 2] = -scale * w[:, 1, 2]
    centre[:, 0, 2] = 0.0
    draws = centre[None] + sd * rng.standard_normal((s, e, 3, 3))
    mask = np.triu(np.ones((3, 3)), 1)  # the learned order 0, 1, 2 allows j < i only
    return w, draws * mask


def test_strength_coverage_is_nominal_for_calibrated_draws_and_low_for_overconfident_ones():
    rng = np.random.default_rng(0)
    w, draws = _coverage_case(rng)
    # calibrated: the posterior mean is itself noisy with the posterior's sd around the truth
    shifted = draws + 0.1 * rng.standard_normal((1, *draws.shape[1:])) * np.triu(np.ones((3, 3)), 1)
    c = strength_coverage(w, shifted, CHAIN, [0, 1, 2])
    assert c["edges_scored"] == 2 and c["edges_unscored"] == 0 and c["edge_n"] == 80 and c["null_n"] == 40
    assert 0.8 <= c["edge_hits"] / c["edge_n"] <= 0.97
    assert 0.75 <= c["null_hits"] / c["null_n"] <= 1.0
    # overconfident: same centres, posterior sd 10 times too small
    narrow = (shifted - shifted.mean(0)) / 10 + shifted.mean(0)
    c2 = strength_coverage(w, narrow, CHAIN, [0, 1, 2])
    assert c2["edge_hits"] / c2["edge_n"] < 0.3


def test_strength_coverage_counts_edges_the_order_cannot_express():
    rng = np.random.default_rng(1)
    w, draws = _coverage_case(rng)
    # learned latents in reversed order: learned k matches true 2 - k, so the true edges point backwards
    perm = [2, 1, 0]
    rev = draws[:, :, ::-1][:, :, :, ::-1]
    c = strength_coverage(w, rev, CHAIN, perm)
    assert c["edges_scored"] == 2  # reversing both orders keeps every edge expressible
    c = strength_coverage(w, draws, CHAIN, perm)
    assert c["edges_scored"] == 0 and c["edges_unscored"] == 2 and c["edge_n"] == 0
    with pytest.raises(BayesCRLValueError, match="'draws' must have shape"):
        strength_coverage(w, draws[0], CHAIN, [0, 1, 2])
