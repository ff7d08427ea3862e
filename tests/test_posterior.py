"""Edge indicators per posterior draw: adjacency from the prior's rule with bootstrap-reweighted environments,
orientation from the paired bootstrap order (posterior.edge_indicator_draws)."""
from types import SimpleNamespace

import numpy as np
import torch

from bayes_crl.posterior import edge_inclusion, edge_indicator_draws, edge_orientation
from bayes_crl.priors import LaplacePrior

E, L = 10, 2


class _PointGuide:
    """A point-mass 'posterior' of the strengths: every draw is the same W."""

    def __init__(self, w):
        self.w = torch.as_tensor(w, dtype=torch.float32)

    def draws(self, num_samples):
        return {"edge_weight": self.w.expand(num_samples, *self.w.shape).clone()}


def _result(w):
    mask = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    return SimpleNamespace(global_guide=_PointGuide(w), prior=LaplacePrior(), net=SimpleNamespace(mask=mask))


def _context(orders=None, env_draws=None):
    ctx = {"snr_env": torch.ones(E, L, L), "env_weight": torch.full((E, L), 1.0 / E), "n_per_env": 100.0,
           "snr": torch.ones(L, L)}
    if orders is not None:
        ctx["order_draws"] = torch.as_tensor(orders)
        ctx["env_draws"] = torch.as_tensor(env_draws, dtype=torch.float32)
    return ctx


def test_without_order_draws_the_fitted_order_is_fixed():
    w = np.zeros((E, L, L))
    w[:, 0, 1] = 1.0
    p = edge_inclusion(_result(w), _context(), num_samples=20)
    np.testing.assert_array_equal(p, [[0, 1], [0, 0]])
    np.testing.assert_array_equal(edge_orientation(_context()), [[0, 1], [0, 0]])


def test_orientation_follows_the_paired_order():
    w = np.zeros((E, L, L))
    w[:, 0, 1] = 1.0  # a strong edge in every environment
    orders = np.array([[0, 1], [1, 0], [0, 1], [0, 1]])  # reversed in one of four bootstrap draws
    ctx = _context(orders, np.ones((4, E)))
    ind = edge_indicator_draws(_result(w), ctx, num_samples=8).numpy()
    np.testing.assert_array_equal(ind[:, 0, 1], [1, 0, 1, 1, 1, 0, 1, 1])  # draw s uses order s mod 4
    np.testing.assert_array_equal(ind[:, 1, 0], 1 - ind[:, 0, 1])
    np.testing.assert_allclose(edge_inclusion(_result(w), ctx, num_samples=8), [[0, 0.75], [0.25, 0]])
    np.testing.assert_allclose(edge_orientation(ctx), [[0, 0.75], [0.25, 0]])


def test_an_effect_that_rests_on_one_environment_depends_on_its_weight():
    w = np.zeros((E, L, L))
    w[0, 0, 1] = 0.8  # only environment 0: pooled share 0.064 / 1.064 = 0.06 >= min_effect 0.05 at equal weights
    orders = np.tile([0, 1], (3, 1))
    env_draws = np.ones((3, E))
    env_draws[1, 0] = 0.2  # environment 0 down-weighted: its share falls below 0.05
    env_draws[2, 0] = 3.0
    ind = edge_indicator_draws(_result(w), _context(orders, env_draws), num_samples=3).numpy()
    np.testing.assert_array_equal(ind[:, 0, 1], [1, 0, 1])
