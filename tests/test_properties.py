"""Property-based checks of the input validators (hypothesis)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_crl._validation import BayesCRLValueError, check_array_2d, check_env

labels = st.one_of(st.integers(-5, 5), st.sampled_from(["day 1", "day 2", "lab A", "b"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(labels, min_size=1, max_size=40))
def test_env_codes_round_trip_to_labels(env):
    codes, labs = check_env(np.array(env, dtype=object), len(env))
    assert codes.shape == (len(env),) and codes.dtype == np.int64
    assert [labs[c] for c in codes] == env
    assert len(set(labs)) == len(labs) == len(set(env))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.data())
def test_nonfinite_entries_are_counted_and_located(n, d, data):
    x = np.zeros((n, d))
    cells = data.draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, d - 1)), min_size=1, max_size=n * d))
    for i, j in cells:
        x[i, j] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(BayesCRLValueError, match=rf"Got {len(cells)} NaN or infinite value\(s\)") as err:
        check_array_2d(x)
    first = min(cells)
    assert f"({first[0]}, {first[1]})" in str(err.value) or f"[{first[0]}, {first[1]}]" in str(err.value)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10))
def test_finite_arrays_pass_unchanged(n, d):
    x = np.arange(n * d, dtype=float).reshape(n, d)
    np.testing.assert_array_equal(check_array_2d(x), x)
