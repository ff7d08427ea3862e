"""Tests for bayes_crl.plots: each function returns what it drew on, with the expected artists."""

import os

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from bayes_crl import LatentCausalModel, simulate_latent_anm  # noqa: E402
from bayes_crl import plots  # noqa: E402
from bayes_crl._validation import BayesCRLValueError  # noqa: E402

L, E, N_PER_ENV, D = 3, 8, 50, 5


@pytest.fixture(scope="module")
def data():
    return simulate_latent_anm(n_latents=L, n_envs=E, n_per_env=N_PER_ENV, n_obs_dims=D, random_state=0)


@pytest.fixture(scope="module")
def model(data):
    torch.set_num_threads(1)
    return LatentCausalModel(n_latents=L, num_steps=30, random_state=0, num_posterior_samples=100).fit(
        data.x, env=data.env)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


PROBS = np.array([[0.0, 0.9, 0.2], [0.0, 0.0, 0.6], [0.0, 0.0, 0.0]])


def test_edge_probabilities_heatmap_and_truth():
    truth = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    ax = plots.plot_edge_probabilities(PROBS, names=["a", "b", "c"], truth=truth)
    assert isinstance(ax, Axes)
    assert len(ax.images) == 1
    np.testing.assert_allclose(ax.images[0].get_array(), PROBS)
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 2  # one marker per true edge
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1, 0], [2, 1]])  # (x = child, y = parent)
    assert len(ax.texts) == 9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_edge_probabilities_on_given_axes_without_truth():
    fig = Figure()
    ax0 = fig.subplots()
    ax = plots.plot_edge_probabilities(PROBS, ax=ax0, annotate=False)
    assert ax is ax0 and len(ax.collections) == 0 and len(ax.texts) == 0


def test_graph_edges_follow_threshold():
    ax = plots.plot_graph(PROBS, ["a", "b", "c"])
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 3
    ax = plots.plot_graph(PROBS, ["a", "b", "c"], weight=np.ones((E, 3, 3)), threshold=0.5)
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 2
    widths = sorted(a.get_linewidth() for a in arrows)
    assert widths[0] < widths[1]  # width grows with probability
    ax = plots.plot_graph(np.zeros((3, 3)), None)
    assert not [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def test_strengths_per_environment(model):
    ax = plots.plot_strengths(model, edge=("z0", "z1"), prob=0.8)
    assert isinstance(ax, Axes)
    assert len(ax.containers) == 1
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), model._weight_draws[:, :, 0, 1].mean(0))
    assert len(line.get_xdata()) == E
    with pytest.raises(BayesCRLValueError, match="edge"):
        plots.plot_strengths(model, edge=("z0", "nope"))
    # the reversed edge (against the fitted order) shows the fitted direction's strengths and says so
    rev = plots.plot_strengths(model, edge=("z1", "z0"))
    np.testing.assert_allclose(rev.containers[0].lines[0].get_ydata(), model._weight_draws[:, :, 0, 1].mean(0))
    assert "fitted direction z0" in rev.get_title()


def test_loss_lines():
    ax = plots.plot_loss(np.r_[np.linspace(10, 1, 30), np.nan])
    assert len(ax.lines) == 1
    assert len(ax.lines[0].get_xdata()) == 30  # nan (rejected step) skipped
    ax = plots.plot_loss(np.linspace(10, 1, 500))
    assert len(ax.lines) == 2  # raw + moving average


def test_latents_grid_titles():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    z_hat = -2 * z[:, [2, 0, 1]] + 1
    fig = plots.plot_latents(z, z_hat)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert all("|r| = 1.000" in a.get_title() for a in fig.axes)
    assert all(len(a.collections) == 1 for a in fig.axes)
    # matched and sign-corrected: increasing with the truth
    x, y = fig.axes[0].collections[0].get_offsets().T
    assert np.corrcoef(x, y)[0, 1] > 0.99


def test_intervention_lines(model):
    values = np.linspace(-2, 2, 5)
    ax = plots.plot_intervention(model, "z0", values, model.env_labels_[3])
    assert isinstance(ax, Axes) and len(ax.lines) == D
    np.testing.assert_allclose(ax.lines[0].get_xdata(), values)
    x = plots.intervene(model, 0, values, 3)
    np.testing.assert_allclose(ax.lines[2].get_ydata(), x[:, 2])
    ax = plots.plot_intervention(model, 1, values, model.env_labels_[0], obs_dims=[0, 4])
    assert len(ax.lines) == 2
    with pytest.raises(BayesCRLValueError, match="env_label"):
        plots.plot_intervention(model, 0, values, "not an env")


def test_intervention_only_changes_descendants(model):
    # do() on the last slot leaves earlier slots alone: x changes with v only through the last latent
    x_last = plots.intervene(model, L - 1, np.array([-1.0, 1.0]), 0)
    x_first = plots.intervene(model, 0, np.array([-1.0, 1.0]), 0)
    assert x_last.shape == x_first.shape == (2, D)
    assert np.isfinite(x_last).all() and not np.allclose(x_first[0], x_first[1])


def test_write_report_figures(model, data, tmp_path):
    paths = plots.write_report_figures(model, tmp_path / "report", data=data)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["edge_probabilities.png", "graph.png", "latents.png", "loss.png", "strengths.png"]
    for p in paths:
        assert os.path.getsize(p) > 1000
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    paths = plots.write_report_figures(model, tmp_path / "no_truth")
    assert len(paths) == 4


def test_plot_reliability_overlays_methods_on_one_axes():
    chain = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    good = chain * 0.9 + 0.05
    flat = np.full((3, 3), 0.5)
    ax = plots.plot_reliability([chain, chain], [good, good], label="ours")
    ax = plots.plot_reliability(chain, flat, ax=ax, label="flat")
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 3  # diagonal once, one line per call
    x, y = ax.lines[1].get_data()
    np.testing.assert_allclose(x, [0.05, 0.95])
    np.testing.assert_allclose(y, [0.0, 1.0])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0].startswith("ours: ECE 0.050") and texts[1].startswith("flat: ECE 0.167")
    with pytest.raises(BayesCRLValueError, match="'probs' must be a list"):
        plots.plot_reliability([chain], good)
