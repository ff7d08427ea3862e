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
    shd,
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
