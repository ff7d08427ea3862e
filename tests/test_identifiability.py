"""Tests for bayes_crl.identifiability: the rule on hand-built posteriors, then a smoke test on a fit."""

import json

import numpy as np
import pytest
import torch

from bayes_crl import LatentCausalModel, simulate_latent_anm
from bayes_crl._validation import BayesCRLValueError
from bayes_crl.identifiability import IdentifiabilityReport, assess_identifiability, identifiability_report

L, E, S = 3, 30, 200
CHAIN = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=float)


def _draws(weights: np.ndarray, sd: float = 0.05, seed: int = 0) -> np.ndarray:
    """Posterior draws (S, E, l, l) concentrated around ``weights`` (E, l, l)."""
    rng = np.random.default_rng(seed)
    return weights[None] + sd * rng.normal(size=(S, *weights.shape)) * (weights[None] != 0)


@pytest.fixture(scope="module")
def violated():
    # true chain z0 -> z1 -> z2 where the influence of z1 on z2 never vanishes (condition (iv) broken for z2)
    return simulate_latent_anm(n_latents=L, n_envs=E, n_per_env=5, n_obs_dims=4, violate=[2], random_state=0)


def test_violated_node_is_not_identified(violated):
    assert list(violated.condition_iv) == [True, True, False]
    w = violated.weights
    assert (w[:, 0, 1] == 0).any() and (np.abs(w[:, 1, 2]) >= 0.5).all()
    # posterior with draws around the truth; the vanishing env of z0 -> z1 has draws centred at exactly 0
    w_draws = _draws(w)
    w_draws[:, w[:, 0, 1] == 0, 0, 1] = 0.05 * np.random.default_rng(1).normal(size=(S, int((w[:, 0, 1] == 0).sum())))
    rep = assess_identifiability(CHAIN, w_draws, E, ["z0", "z1", "z2"], 0.5)
    assert isinstance(rep, IdentifiabilityReport)
    assert [t.status for t in rep.latents] == ["root", "vanishing", "not_identified"]
    assert rep.identified == ("z0", "z1") and rep.not_identified == ("z2",)
    assert rep["z1"].parent_names == ("z0",)
    assert set(rep["z1"].vanishing_envs["z0"]) == set(np.flatnonzero(w[:, 0, 1] == 0).tolist())
    assert rep["z2"].vanishing_envs == {"z1": ()}
    assert rep["z2"].non_vanishing_parents == ("z1",)
    assert rep.enough_envs and rep.min_envs == 7 and rep.n_envs == E
    assert "z2 is not identified: the influence of z1 on it never vanishes in any of the 30 environments" in str(rep)
    assert "z0 is identified" in rep.summary and "root" in rep["z0"].message


def test_childless_vanishing_latent_gets_the_untestable_caveat():
    # chain z0 -> z1 -> z2, every edge vanishing in one environment: z1 (a child z2) and z2 (no child) both pass
    w = np.zeros((E, L, L))
    w[:, 0, 1], w[:, 1, 2] = 1.0, -0.8
    w[3, 0, 1] = w[5, 1, 2] = 0.0
    rep = assess_identifiability(CHAIN, _draws(w), E)
    assert [t.status for t in rep.latents] == ["root", "vanishing", "vanishing"]
    untestable = [c for c in rep.caveats if "cannot test (iv)" in c]
    assert len(untestable) == 1 and untestable[0].startswith("z2 has no children")
    assert "z1" not in untestable[0].split(" in the graph")[0]
    # a latent that fails (iv) gets no such caveat, and neither does a root
    w[5, 1, 2] = -0.8
    rep = assess_identifiability(CHAIN, _draws(w), E)
    assert rep["z2"].status == "not_identified"
    assert not any("cannot test (iv)" in c for c in rep.caveats)


def test_threshold_decides_parents():
    w = np.ones((E, L, L))
    draws = _draws(np.triu(w, 1))
    p = np.array([[0, 0.4, 0], [0, 0, 0.6], [0, 0, 0]])
    rep = assess_identifiability(p, draws, E, threshold=0.5)
    assert [t.status for t in rep.latents] == ["root", "root", "not_identified"]
    rep = assess_identifiability(p, draws, E, threshold=0.7)
    assert all(t.status == "root" for t in rep.latents)
    rep = assess_identifiability(p, draws, E, threshold=0.3)
    assert rep["z1"].status == "not_identified" and rep["z1"].parents[0].inclusion == pytest.approx(0.4)


def test_vanish_tol_and_point_estimates():
    w = np.zeros((E, L, L))
    w[:, 0, 1] = 1.0
    w[4, 0, 1] = 0.01  # small but not zero
    point = w[None]  # a point estimate: intervals have zero width
    rep = assess_identifiability(CHAIN, point, E)
    assert rep["z1"].status == "not_identified"
    assert rep["z1"].parents[0].min_abs_mean == pytest.approx(0.01)
    assert rep["z1"].parents[0].min_abs_mean_env == 4
    rep = assess_identifiability(CHAIN, point, E, vanish_tol=0.05)
    assert rep["z1"].status == "vanishing" and rep["z1"].vanishing_envs == {"z0": (4,)}
    # z2's parent z1 has strength exactly 0 everywhere: it vanishes (the 'edge' is included but inert)
    assert rep["z2"].status == "vanishing"


def test_multiple_parents_one_never_vanishes():
    w = np.zeros((E, L, L))
    w[:, 0, 2] = 1.5
    w[:, 1, 2] = -1.0
    w[7, 1, 2] = 0.0
    p = np.array([[0, 0, 0.9], [0, 0, 0.9], [0, 0, 0]])
    rep = assess_identifiability(p, _draws(w), E, env_labels=[f"day {k}" for k in range(E)])
    z2 = rep["z2"]
    assert z2.status == "not_identified" and z2.non_vanishing_parents == ("z0",)
    assert z2.vanishing_envs["z1"] == ("day 7",)
    assert "the influence of z0 on it never vanishes" in z2.message


def test_too_few_environments_flags_everything():
    e = 4
    w = np.zeros((e, L, L))
    rep = assess_identifiability(np.zeros((L, L)), w, e)
    assert not rep.enough_envs and rep.identified == ()
    assert [t.status for t in rep.latents] == ["root"] * L
    assert rep.summary.startswith("Only 4 environments for 3 latents")


def test_to_dict_is_json_serialisable():
    w = np.zeros((E, L, L))
    rep = assess_identifiability(CHAIN, _draws(w), E, env_labels=[("site", k) for k in range(E)])
    d = rep.to_dict()
    json.dumps(d)
    assert d["latents"][1]["parents"][0]["vanishing_envs"][0] == "('site', 0)"
    assert d["identified"] == ["z0", "z1", "z2"]
    with pytest.raises(Exception):
        rep.threshold = 0.1  # frozen


def test_input_errors():
    with pytest.raises(BayesCRLValueError, match="weight_draws"):
        assess_identifiability(CHAIN, np.zeros((5, E, 2, 2)), E)
    with pytest.raises(BayesCRLValueError, match="n_envs"):
        assess_identifiability(CHAIN, np.zeros((5, E, L, L)), E + 1)
    with pytest.raises(BayesCRLValueError, match="threshold"):
        assess_identifiability(CHAIN, np.zeros((5, E, L, L)), E, threshold=1.5)
    with pytest.raises(BayesCRLValueError, match="names"):
        assess_identifiability(CHAIN, np.zeros((5, E, L, L)), E, ["a"])
    with pytest.raises(BayesCRLValueError, match="linear_gaussian"):
        assess_identifiability(CHAIN, np.zeros((5, E, L, L)), E, linear_gaussian="yes")


def test_smoke_on_fitted_model():
    torch.set_num_threads(1)
    data = simulate_latent_anm(n_latents=L, n_envs=8, n_per_env=50, n_obs_dims=5, violate=[2], random_state=0)
    labels = np.array([f"day {k}" for k in range(8)])
    model = LatentCausalModel(n_latents=L, num_steps=30, random_state=0, num_posterior_samples=100).fit(
        data.x, env=labels[data.env])
    rep = identifiability_report(model, threshold=0.5)
    assert rep.n_envs == 8 and rep.n_latents == L and rep.enough_envs
    assert [t.name for t in rep.latents] == list(model.latent_names_)
    assert all(t.status in ("root", "vanishing", "not_identified") for t in rep.latents)
    # an edge against the fitted order (reversed by the environment bootstrap) is judged by the strengths of
    # the fitted direction, never by the zeros the model holds for the reversed one
    model.edge_inclusion_ = np.zeros((L, L))
    model.edge_inclusion_[1, 0] = 1.0
    rev = identifiability_report(model, threshold=0.5)
    (par,) = rev.latents[0].parents
    assert par.parent == "z1" and rev.latents[1].status == "root"
    w = np.asarray(model._weight_draws)[:, :, 0, 1].mean(0)
    assert np.isclose(par.min_abs_mean, np.abs(w).min())
    for t in rep.latents:
        for par in t.parents:
            assert set(par.vanishing_envs) <= set(labels)
    assert str(rep) == rep.summary and rep.summary.count("\n") == L + len(rep.caveats)
    json.dumps(rep.to_dict())
    with pytest.raises(BayesCRLValueError, match="fitted"):
        identifiability_report(LatentCausalModel())


def test_linear_gaussian_caveat_names_the_edges():
    w = np.zeros((E, L, L))
    rep = assess_identifiability(CHAIN, _draws(w), E, linear_gaussian=True)
    assert [t.status for t in rep.latents] == ["root", "vanishing", "vanishing"]  # (iv) itself is unchanged
    vanish, childless, caveat = rep.caveats
    assert "linear mechanisms and Gaussian noise" in caveat and "(z0 -> z1 and z1 -> z2)" in caveat
    assert vanish.startswith("Condition (iv) is judged from the fitted strengths: z1 and z2 pass because some "
                             "environment's 90% interval")
    assert childless.startswith("z2 has no children in the graph")
    assert rep.summary.endswith("Caveat: " + caveat)
    assert rep.to_dict()["caveats"] == [vanish, childless, caveat]
    # no linear-Gaussian caveat without the linear-Gaussian model, nor without edges
    assert assess_identifiability(CHAIN, _draws(w), E).caveats == (vanish, childless)
    assert assess_identifiability(np.zeros((L, L)), _draws(w), E, linear_gaussian=True).caveats == ()
    # no caveat on (iv) where no latent passes it by a vanishing strength
    strong = np.ones((E, L, L)) * CHAIN[None]
    rep = assess_identifiability(CHAIN, _draws(strong), E)
    assert [t.status for t in rep.latents] == ["root", "not_identified", "not_identified"]
    assert rep.caveats == () and "Caveat" not in rep.summary


@pytest.mark.parametrize("mechanism, noise, expected", [("linear", "gaussian", 1), ("linear", "laplace", 0),
                                                        ("nonlinear", "gaussian", 0)])
def test_report_of_a_linear_gaussian_fit_has_the_caveat(mechanism, noise, expected):
    torch.set_num_threads(1)
    data = simulate_latent_anm(n_latents=L, n_envs=8, n_per_env=30, n_obs_dims=5, random_state=0)
    model = LatentCausalModel(n_latents=L, mechanism=mechanism, noise=noise, num_steps=10, random_state=0,
                              num_posterior_samples=50).fit(data.x, env=data.env)
    model.edge_inclusion_ = CHAIN.copy()  # a graph to report on, whatever the 10-step fit found
    rep = identifiability_report(model)
    assert sum("linear mechanisms and Gaussian noise" in c for c in rep.caveats) == expected
    assert ("Caveat: With linear mechanisms and Gaussian noise" in rep.summary) == bool(expected)
