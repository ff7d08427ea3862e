"""Tests for bayes_crl._validation: every check raises BayesCRLValueError naming the argument."""

import numpy as np
import pytest

from bayes_crl._validation import (
    BayesCRLValueError,
    IdentifiabilityWarning,
    check_adjacency,
    check_array_2d,
    check_bool,
    check_env,
    check_option,
    check_random_state,
    check_scalar,
    find_cycle,
)


def test_error_classes():
    assert issubclass(BayesCRLValueError, ValueError)
    assert issubclass(IdentifiabilityWarning, UserWarning)


# -- random state -------------------------------------------------------------------------------------
def test_check_random_state_accepts_none_int_generator():
    assert isinstance(check_random_state(None), np.random.Generator)
    a = check_random_state(3).normal(size=4)
    b = check_random_state(np.int64(3)).normal(size=4)
    np.testing.assert_array_equal(a, b)
    g = np.random.default_rng(1)
    assert check_random_state(g) is g


@pytest.mark.parametrize("bad", [1.5, "0", -1, True, np.random.RandomState(0)])
def test_check_random_state_rejects(bad):
    with pytest.raises(BayesCRLValueError, match="random_state"):
        check_random_state(bad)


# -- scalars and options ---------------------------------------------------------------------------
def test_check_option_suggests_fix():
    msg = r"The 'noise' parameter of f must be one of \{.*'gaussian'.*\}\. Got 'gausian' instead\. Did you mean 'gaussian'\?"
    with pytest.raises(BayesCRLValueError, match=msg):
        check_option("gausian", "noise", ("gaussian", "laplace"), "f")
    assert check_option("laplace", "noise", ("gaussian", "laplace")) == "laplace"


def test_check_scalar_and_bool():
    assert check_scalar(np.int32(3), "n", int, min_val=1) == 3
    with pytest.raises(BayesCRLValueError, match=r"'n' parameter .* range \[1, inf\).*Got 0"):
        check_scalar(0, "n", int, min_val=1)
    with pytest.raises(BayesCRLValueError, match="'n' parameter .* instance of 'int'"):
        check_scalar(2.0, "n", int)
    with pytest.raises(BayesCRLValueError, match="'n' parameter .* instance of 'int'"):
        check_scalar(True, "n", int)
    with pytest.raises(BayesCRLValueError, match="finite"):
        check_scalar(float("nan"), "s", float)
    assert check_bool(np.bool_(True), "flag") is True
    with pytest.raises(BayesCRLValueError, match="'flag'.*bool"):
        check_bool(1, "flag")


# -- arrays ---------------------------------------------------------------------------------------------
def test_check_array_2d_converts():
    out = check_array_2d([[1, 2], [3, 4]])
    assert out.dtype == np.float64 and out.shape == (2, 2)


def test_check_array_2d_reports_nonfinite():
    x = np.zeros((5, 3))
    x[2, 1] = np.nan
    x[4, 0] = np.inf
    with pytest.raises(BayesCRLValueError, match=r"'data'.*2 NaN or infinite.*index \(2, 1\)"):
        check_array_2d(x, name="data")


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros(3), "2-D.*reshape"), (np.zeros((0, 2)), "non-empty"), ([["a", "b"]], "numeric")],
)
def test_check_array_2d_rejects(bad, match):
    with pytest.raises(BayesCRLValueError, match=match):
        check_array_2d(bad)


# -- environments ----------------------------------------------------------------------------------
def test_check_env_strings_sorted():
    codes, labels = check_env(["day 3", "day 1", "day 3", "day 2"], 4)
    assert labels == ["day 1", "day 2", "day 3"]
    np.testing.assert_array_equal(codes, [2, 0, 2, 1])
    assert codes.dtype == np.int64


def test_check_env_ints_and_column_vector():
    codes, labels = check_env(np.array([[5], [2], [5]]), 3)
    assert labels == [2, 5] and all(type(v) is int for v in labels)
    np.testing.assert_array_equal(codes, [1, 0, 1])


def test_check_env_unsortable_first_appearance():
    codes, labels = check_env(["b", 1, ("t", 2), "b"], 4)
    assert labels == ["b", 1, ("t", 2)]
    np.testing.assert_array_equal(codes, [0, 1, 2, 0])


def test_check_env_errors():
    with pytest.raises(BayesCRLValueError, match="'env'.*expected length 3, got length 2"):
        check_env([0, 1], 3)
    with pytest.raises(BayesCRLValueError, match=r"'env'.*1 NaN label.*index 1"):
        check_env([0.0, np.nan, 1.0], 3)
    with pytest.raises(BayesCRLValueError, match="missing.*index 2"):
        check_env(["a", "b", None], 3)
    with pytest.raises(BayesCRLValueError, match="hashable"):
        check_env([[1, 2], "a"], 2)


# -- adjacency ---------------------------------------------------------------------------------------
def test_check_adjacency_ok():
    a = check_adjacency([[0, 1], [0, 0]], 2)
    assert a.dtype == np.int64


@pytest.mark.parametrize(
    "a, n, match",
    [
        (np.zeros((2, 3)), None, "square"),
        (np.zeros((2, 2)), 3, r"shape \(3, 3\)"),
        (np.array([[0, 0.5], [0, 0]]), 2, "0/1.*first is 0.5.*Threshold"),
        (np.array([[0, 1], [1, 0]]), 2, "acyclic.*cycle 0 -> 1 -> 0"),
        (np.eye(2), 2, "acyclic"),
    ],
)
def test_check_adjacency_rejects(a, n, match):
    with pytest.raises(BayesCRLValueError, match=match):
        check_adjacency(a, n, name="adjacency")


def test_find_cycle_longer():
    a = np.zeros((5, 5), dtype=int)
    a[0, 1] = a[1, 2] = a[2, 3] = a[3, 1] = a[3, 4] = 1
    cyc = find_cycle(a)
    assert cyc[0] == cyc[-1] and set(cyc) == {1, 2, 3}
    assert find_cycle(np.triu(np.ones((4, 4)), 1)) is None


def test_check_scalar_accepts_abstract_integral():
    import numbers

    assert check_scalar(np.int64(4), "n", numbers.Integral, min_val=1) == 4
    with pytest.raises(BayesCRLValueError, match="'n' parameter of M must be an instance of 'int'"):
        check_scalar(2.5, "n", numbers.Integral, "M")
