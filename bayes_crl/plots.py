"""Matplotlib figures for fitted models: edge probabilities, graphs, strengths, loss, latents, interventions.

Every function draws with the object-oriented API (no ``pyplot`` state is touched when an ``ax`` is
given), works under the Agg backend, and returns what it drew on so that tests can inspect artists
without rendering: single-panel functions return the ``Axes``, multi-panel ones the ``Figure``.

Conventions: matrices are ``A[parent, child]`` (rows = parents, columns = children); per-environment
arrays are ``(E, l, l)``.
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bayes_crl._validation import BayesCRLValueError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bayes_crl.estimator import LatentCausalModel

__all__ = [
    "plot_edge_probabilities", "plot_reliability", "plot_graph", "plot_strengths", "plot_loss", "plot_latents", "plot_intervention",
    "write_report_figures", "intervene",
]


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _new_axes(ax: "Axes | None", figsize: tuple[float, float] = (4.5, 4.0)) -> "Axes":
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").subplots()


def _square(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise BayesCRLValueError(f"'{name}' must be a square (l, l) matrix [parent, child]. Got shape {arr.shape}.")
    return arr


def _names(names: Sequence[str] | None, l: int) -> list[str]:
    if names is None:
        return [f"z{i}" for i in range(l)]
    names = [str(n) for n in names]
    if len(names) != l:
        raise BayesCRLValueError(f"'names' must have one name per latent ({l}). Got {len(names)}.")
    return names


def _check_fitted(model: Any, owner: str) -> None:
    if not hasattr(model, "result_"):
        raise BayesCRLValueError(
            f"The 'model' argument of {owner} must be a fitted LatentCausalModel. Call 'fit' with appropriate "
            "arguments first.")


def _latent_index(model: Any, latent: int | str, name: str = "latent") -> int:
    names = list(model.latent_names_)
    if isinstance(latent, str):
        if latent not in names:
            raise BayesCRLValueError(f"'{name}' must be one of {names} or an index. Got {latent!r}.")
        return names.index(latent)
    if isinstance(latent, (int, np.integer)) and not isinstance(latent, bool) and 0 <= latent < len(names):
        return int(latent)
    raise BayesCRLValueError(f"'{name}' must be a latent name in {names} or an index in [0, {len(names)}). "
                             f"Got {latent!r}.")


# ----------------------------------------------------------------------------------------------------
# graph
# ----------------------------------------------------------------------------------------------------
def plot_edge_probabilities(probs: Any, names: Sequence[str] | None = None, truth: Any = None,
                            ax: "Axes | None" = None, *, annotate: bool = True) -> "Axes":
    """Heatmap of edge inclusion probabilities, rows = parents, columns = children.

    Parameters
    ----------
    probs : array_like (l, l)
        ``P(parent -> child)`` in [0, 1].
    names : sequence of str, optional
        Latent names (default ``z0..z{l-1}``).
    truth : array_like (l, l), optional
        True adjacency (aligned to ``probs``); a marker is drawn on each true edge (non-zero entry).
    ax : matplotlib Axes, optional
    annotate : bool, default True
        Write the probability in each cell.

    Returns
    -------
    Axes
        With one ``AxesImage`` (the heatmap, ``ax.images[0]``), one ``PathCollection`` of true-edge
        markers when ``truth`` is given (``ax.collections``), ``l * l`` texts when ``annotate``, and a
        colorbar on the same figure.
    """
    p = _square(probs, "probs")
    l = p.shape[0]
    labels = _names(names, l)
    ax = _new_axes(ax)
    im = ax.imshow(p, vmin=0.0, vmax=1.0, cmap="Blues", origin="upper")
    ax.set_xticks(range(l), labels)
    ax.set_yticks(range(l), labels)
    ax.set_xlabel("child")
    ax.set_ylabel("parent")
    ax.set_title("edge inclusion probability", fontsize=9)
    if annotate:
        for j in range(l):
            for i in range(l):
                ax.text(i, j, f"{p[j, i]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if p[j, i] > 0.6 else "black")
    if truth is not None:
        t = _square(truth, "truth")
        if t.shape != p.shape:
            raise BayesCRLValueError(f"'truth' must have the shape of 'probs' {p.shape}. Got {t.shape}.")
        rows, cols = np.nonzero(t)
        ax.scatter(cols, rows, s=260, facecolors="none", edgecolors="crimson", linewidths=2.0, label="true edge")
        ax.set_title("edge inclusion probability (circles: true edges)", fontsize=9)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return ax


def plot_reliability(a_true: Any, probs: Any, ax: "Axes | None" = None, *, n_bins: int = 10,
                     label: str | None = None) -> "Axes":
    """Reliability diagram of edge probabilities: observed fraction of true edges against the mean
    probability per bin, pooled over one or several fits (:func:`bayes_crl.metrics.reliability`).

    Parameters
    ----------
    a_true : array_like (l, l), or list of them
        True adjacency, aligned to ``probs``.
    probs : array_like (l, l), or list of them
    ax : matplotlib Axes, optional
        Draw on this axes (call again with the same ``ax`` to overlay methods).
    n_bins : int, default 10
    label : str, optional
        Legend label; the ECE and the number of entries are appended.

    Returns
    -------
    Axes
        With the diagonal (``ax.lines[0]``, drawn once per axes) and one line with markers per call, marker
        area proportional to the bin count.
    """
    from bayes_crl.metrics import reliability

    rel = reliability(a_true, probs, n_bins=n_bins)
    ax = _new_axes(ax)
    if not ax.lines:
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
    ok = rel["count"] > 0
    n = int(rel["count"].sum())
    text = f"{label + ': ' if label else ''}ECE {rel['ece']:.3f}, Brier {rel['brier']:.3f}, n={n}"
    (line,) = ax.plot(rel["mean_prob"][ok], rel["frac_true"][ok], marker="o", ms=0, lw=1.2, label=text)
    ax.scatter(rel["mean_prob"][ok], rel["frac_true"][ok], s=20 + 200 * rel["count"][ok] / n,
               color=line.get_color(), zorder=3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("edge probability (bin mean)")
    ax.set_ylabel("fraction of true edges")
    ax.set_title("reliability of edge probabilities", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_graph(probs: Any, names: Sequence[str] | None = None, weight: Any = None, threshold: float = 0.0,
               ax: "Axes | None" = None) -> "Axes":
    """Draw the latent graph on a circular layout; edge width and opacity grow with the probability.

    Parameters
    ----------
    probs : array_like (l, l)
        Edge inclusion probabilities ``[parent, child]``.
    names : sequence of str, optional
    weight : array_like (l, l) or (E, l, l), optional
        Strengths; averaged over environments if 3-D. Edges are coloured by sign (blue positive, red
        negative) and labelled with the strength.
    threshold : float, default 0.0
        Draw the edges with ``threshold <= probability`` and probability > 0 (the diagonal is never drawn).
    ax : matplotlib Axes, optional

    Returns
    -------
    Axes
        Edges are ``FancyArrowPatch`` es in ``ax.patches`` (one per drawn edge); nodes one
        ``PathCollection``.
    """
    import networkx as nx
    from matplotlib.colors import to_rgba

    p = _square(probs, "probs")
    l = p.shape[0]
    labels = _names(names, l)
    w = None
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim == 3:
            w = w.mean(0)
        if w.shape != p.shape:
            raise BayesCRLValueError(f"'weight' must have shape (l, l) or (E, l, l) with l = {l}. "
                                     f"Got {np.shape(weight)}.")
    ax = _new_axes(ax)
    g = nx.DiGraph()
    g.add_nodes_from(labels)
    edges, widths, colors, edge_labels = [], [], [], {}
    for j in range(l):
        for i in range(l):
            if i != j and p[j, i] > 0 and p[j, i] >= threshold:
                edges.append((labels[j], labels[i]))
                edge_labels[edges[-1]] = f"{p[j, i]:.2f}" + ("" if w is None else f" / {w[j, i]:+.2f}")
                widths.append(0.5 + 4.0 * p[j, i])
                base = "tab:gray" if w is None else ("tab:blue" if w[j, i] >= 0 else "tab:red")
                colors.append(to_rgba(base, alpha=float(0.15 + 0.85 * p[j, i])))
    g.add_edges_from(edges)
    pos = nx.circular_layout(labels)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color="white", edgecolors="black", node_size=900)
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=10)
    if edges:
        nx.draw_networkx_edges(g, pos, edgelist=edges, ax=ax, width=widths, edge_color=colors, arrows=True,
                               arrowsize=18, node_size=900, connectionstyle="arc3,rad=0.12")
        nx.draw_networkx_edge_labels(g, pos, edge_labels=edge_labels, ax=ax, font_size=7,
                                     connectionstyle="arc3,rad=0.12")
    ax.set_title("latent graph" + (" (probability / mean strength)" if w is not None else " (probability)"),
                 fontsize=9)
    ax.set_axis_off()
    ax.margins(0.15)
    return ax


# ----------------------------------------------------------------------------------------------------
# posterior and fit
# ----------------------------------------------------------------------------------------------------
def plot_strengths(model: "LatentCausalModel", edge: tuple[int | str, int | str] = (0, 1), prob: float = 0.9,
                   ax: "Axes | None" = None) -> "Axes":
    """Posterior strength of one edge in every environment, with equal-tailed credible intervals.

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model (uses its stored draws ``_weight_draws`` (S, E, l, l)).
    edge : (parent, child)
        Latent indices or names, e.g. ``(0, 1)`` or ``("z0", "z1")``.
    prob : float, default 0.9
        Mass of the credible intervals.
    ax : matplotlib Axes, optional

    Returns
    -------
    Axes
        One errorbar container (``ax.containers[0]``) with E points, and a horizontal line at 0. For an edge that
        points against the fitted order, the strengths are those of the fitted direction (the title names it).
    """
    _check_fitted(model, "plot_strengths")
    if not 0 < prob < 1:
        raise BayesCRLValueError(f"'prob' must be in (0, 1). Got {prob!r}.")
    j, i = _latent_index(model, edge[0], "edge[0]"), _latent_index(model, edge[1], "edge[1]")
    # the model holds strengths only in the fitted order's direction; an edge the environment bootstrap reversed
    # (or its reverse) is shown with the strengths of the fitted direction, and the title says so
    fj, fi = (i, j) if bool(model.result_.net.mask[i, j]) else (j, i)
    draws = np.asarray(model._weight_draws)[:, :, fj, fi]  # (S, E)
    a = (1 - prob) / 2
    lo, hi = np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)
    mean = draws.mean(0)
    e = draws.shape[1]
    ax = _new_axes(ax, (max(4.0, 0.3 * e + 2), 3.2))
    xs = np.arange(e)
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    ax.errorbar(xs, mean, yerr=np.vstack([mean - lo, hi - mean]), fmt="o", ms=4, capsize=2, color="tab:blue",
                label=f"mean and {prob:.0%} interval")
    labels = [str(v) for v in model.env_labels_]
    ax.set_xticks(xs, labels, rotation=90 if e > 8 else 0, fontsize=7)
    names = model.latent_names_
    pj = float(np.asarray(model.edge_inclusion_)[j, i])
    title = f"{names[j]} \u2192 {names[i]}  (P = {pj:.2f})"
    if (fj, fi) != (j, i):
        title += f"; strengths of the fitted direction {names[fj]} \u2192 {names[fi]}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("environment")
    ax.set_ylabel("strength W[u, parent, child]")
    return ax


def plot_loss(losses: Any, ax: "Axes | None" = None, *, smooth: int | None = None) -> "Axes":
    """Loss (negative ELBO per row) along the fit.

    Parameters
    ----------
    losses : array_like (num_steps,)
        E.g. ``model.loss_``; ``nan`` entries (rejected steps) are skipped.
    ax : matplotlib Axes, optional
    smooth : int, optional
        Window of a moving average drawn over the raw curve; default ``num_steps // 50`` when that is at
        least 5, otherwise no smoothed line.

    Returns
    -------
    Axes
        One line for the raw loss, plus one for the moving average when drawn.
    """
    y = np.asarray(losses, dtype=np.float64).ravel()
    ax = _new_axes(ax, (5.0, 3.2))
    steps = np.arange(len(y))
    ok = np.isfinite(y)
    ax.plot(steps[ok], y[ok], lw=0.7, color="tab:blue", alpha=0.6, label="loss")
    k = (len(y) // 50 if smooth is None else int(smooth))
    if k >= 5 and ok.sum() >= k:
        ys = y[ok]
        ma = np.convolve(ys, np.ones(k) / k, mode="valid")
        ax.plot(steps[ok][k - 1:], ma, lw=1.5, color="tab:orange", label=f"moving average ({k})")
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO per row")
    ax.set_title("loss", fontsize=9)
    if len(ax.lines) > 1:
        ax.legend(fontsize=7)
    return ax


# ----------------------------------------------------------------------------------------------------
# latents and interventions
# ----------------------------------------------------------------------------------------------------
def plot_latents(z_true: Any, z_hat: Any, ax: Any = None, *, names: Sequence[str] | None = None,
                 max_points: int = 2000, seed: int = 0) -> "Figure":
    """True against learned latents after the best one-to-one matching, one scatter panel per true latent.

    Parameters
    ----------
    z_true : array_like (N, l)
    z_hat : array_like (N, k), k >= l
    ax : sequence of l Axes, optional
        Axes to draw on (one per true latent); by default a new 1 x l figure.
    names : sequence of str, optional
        Names of the true latents.
    max_points : int, default 2000
        Rows drawn (a random subset when N is larger; correlations use all rows).
    seed : int, default 0

    Returns
    -------
    Figure
        Axis ``i`` shows ``sign * z_hat[:, perm[i]]`` against ``z_true[:, i]`` with the absolute Pearson
        correlation in its title (see :func:`bayes_crl.metrics.match_latents`).
    """
    from bayes_crl.metrics import match_latents

    perm, signs, corr = match_latents(z_true, z_hat)
    zt, zh = np.asarray(z_true, dtype=np.float64), np.asarray(z_hat, dtype=np.float64)
    l = zt.shape[1]
    labels = _names(names, l)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.0 * l, 3.0), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, l))
    else:
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != l:
            raise BayesCRLValueError(f"'ax' must hold one Axes per true latent ({l}). Got {len(axes)}.")
        fig = axes[0].figure
    rows = np.arange(zt.shape[0])
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    for i, a in enumerate(axes):
        a.scatter(zt[rows, i], signs[i] * zh[rows, perm[i]], s=3, alpha=0.4, color="tab:blue", rasterized=True)
        a.set_title(f"{labels[i]} vs learned {perm[i]}: |r| = {abs(corr[i, perm[i]]):.3f}", fontsize=8)
        a.set_xlabel(f"true {labels[i]}")
        a.set_ylabel(("-" if signs[i] < 0 else "") + f"learned {perm[i]}")
    return fig


@torch.no_grad()
def plot_intervention(model: "LatentCausalModel", latent: int | str, values: Any, env_label: Hashable,
                      ax: "Axes | None" = None, *, obs_dims: Sequence[int] | None = None) -> "Axes":
    """Effect of ``do(z_latent = v)`` on the observations, decoded through the learned mixing.

    Starting point: the latent "mean" of environment ``env_label``, the forward pass of the learned
    mechanism with every noise at its mean (``noise_loc[u]``) and the posterior-mean strengths
    ``edge_weight_[u]``. Then ``z_latent`` is set to each value ``v``; later slots (the latents are in
    causal order) are recomputed as ``z_k = sum_j W[u, j, k] phi_jk(z_j) + noise_loc[u, k]``, earlier ones
    are unchanged. The result is decoded with ``net.decode`` and mapped back to the user's units
    (``* x_scale_ + x_mean_``).

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    latent : int or str
        Slot index or name (``model.latent_names_``) of the intervened latent.
    values : array_like (V,)
        Intervention values, in the learned latent's scale.
    env_label : hashable
        An environment label seen in ``fit``.
    ax : matplotlib Axes, optional
    obs_dims : sequence of int, optional
        Observed dimensions to draw (default: all).

    Returns
    -------
    Axes
        One line per drawn observed dimension (x_d against v).
    """
    _check_fitted(model, "plot_intervention")
    k = _latent_index(model, latent)
    labels = list(model.env_labels_)
    if env_label not in labels:
        raise BayesCRLValueError(f"'env_label' must be an environment label seen in fit, among {labels[:10]!r}"
                                 f"{'...' if len(labels) > 10 else ''}. Got {env_label!r}.")
    u = labels.index(env_label)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise BayesCRLValueError("'values' must be a non-empty 1-D array of finite numbers.")
    x = intervene(model, k, v, u)  # (V, d)
    d = x.shape[1]
    dims = list(range(d)) if obs_dims is None else [int(t) for t in obs_dims]
    if any(t < 0 or t >= d for t in dims):
        raise BayesCRLValueError(f"'obs_dims' must hold indices in [0, {d}). Got {list(obs_dims)!r}.")
    ax = _new_axes(ax, (5.0, 3.5))
    for t in dims:
        ax.plot(v, x[:, t], marker="." if len(v) < 30 else None, lw=1.2, label=f"x{t}")
    name = model.latent_names_[k]
    ax.set_xlabel(f"do({name} = v)")
    ax.set_ylabel("decoded x")
    ax.set_title(f"intervention on {name} in environment {env_label}", fontsize=9)
    if len(dims) <= 12:
        ax.legend(fontsize=6, ncol=2)
    return ax


@torch.no_grad()
def intervene(model: "LatentCausalModel", latent: int, values: np.ndarray, env_code: int) -> np.ndarray:
    """Decoded observations (V, d), in the user's units, under ``do(z_latent = v)`` in environment
    ``env_code`` (see :func:`plot_intervention` for the recipe)."""
    net = model.result_.net
    w = torch.as_tensor(np.asarray(model.edge_weight_)[env_code], dtype=torch.float32)  # (l, l)
    loc = net.noise_loc[env_code].detach()  # (l,)
    l = w.shape[0]
    vals = torch.as_tensor(values, dtype=torch.float32)
    z = torch.zeros(len(vals), l)
    for s in range(l):  # slots are a topological order
        if s == latent:
            z[:, s] = vals
        else:
            z[:, s] = (w[:, s] * net.features(z)[:, :, s]).sum(-1) + loc[s]
    x = net.decode(z).numpy().astype(np.float64)
    return x * model.x_scale_ + model.x_mean_


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------
def _env_for_model(model: Any, data: Any) -> Any:
    """``data.env`` in the labels the model was fitted with: simulated data hold codes ``env`` and labels
    ``env_labels``; a model fitted on the labels needs ``env_labels[env]``, one fitted on the codes ``env``."""
    known = set(model.env_labels_)
    labels = getattr(data, "env_labels", None)
    if labels is not None and all(v in known for v in labels):
        arr = np.empty(len(labels), dtype=object)
        for k, v in enumerate(labels):  # element-wise: tuple labels stay labels
            arr[k] = v
        return arr[np.asarray(data.env)]
    return data.env


def write_report_figures(model: "LatentCausalModel", out_dir: str | os.PathLike, data: Any = None, *,
                         dpi: int = 110) -> list[str]:
    """Write the standard figures of a fitted model as PNG files.

    Files: ``edge_probabilities.png``, ``graph.png``, ``loss.png``, ``strengths.png`` (the most probable
    allowed edge; skipped with a single latent) and, when ``data`` with ``.z``, ``.x`` and ``.env`` is given
    (e.g. :class:`~bayes_crl.LatentANMData`), ``latents.png``. With such ``data`` the heatmap is aligned to
    the true latents by the MPC matching (:func:`bayes_crl.metrics.mpc` with ``return_matching=True``)
    and true edges (``data.adjacency``) are marked.

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    out_dir : str or path
        Folder (created if missing).
    data : object, optional
        Ground truth with ``x`` (N, d), ``env`` (N,), ``z`` (N, l) and optionally ``adjacency`` (l, l) and
        ``latent_names``.
    dpi : int, default 110

    Returns
    -------
    list of str
        Paths of the files written.
    """
    from bayes_crl import metrics

    _check_fitted(model, "write_report_figures")
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []

    def save(ax_or_fig: Any, fname: str) -> None:
        fig = ax_or_fig if hasattr(ax_or_fig, "savefig") else ax_or_fig.figure
        path = os.path.join(os.fspath(out_dir), fname)
        fig.savefig(path, dpi=dpi)
        paths.append(path)

    probs = np.asarray(model.edge_inclusion_, dtype=np.float64)
    names = list(model.latent_names_)
    z_hat = perm = None
    if data is not None and getattr(data, "z", None) is not None:
        env = _env_for_model(model, data)
        z_hat = model.transform(data.x, env)
        _, perm, _ = metrics.mpc(data.z, z_hat, return_matching=True)
        truth = getattr(data, "adjacency", None)
        true_names = list(getattr(data, "latent_names", [f"z{i}" for i in range(len(perm))]))
        aligned = metrics.align_graph(probs, perm)
        ax = plot_edge_probabilities(aligned, names=[f"{true_names[i]}~{names[perm[i]]}" for i in range(len(perm))],
                                     truth=truth)
        ax.set_title("edge inclusion probability, aligned to the true latents\n(circles: true edges; "
                     "labels true~learned)", fontsize=8)
    else:
        ax = plot_edge_probabilities(probs, names=names)
    save(ax, "edge_probabilities.png")
    save(plot_graph(probs, names, weight=model.edge_weight_), "graph.png")
    save(plot_loss(model.loss_), "loss.png")
    allowed = np.asarray(model.result_.net.mask.numpy(), dtype=bool)
    if allowed.any():
        j, i = np.unravel_index(np.argmax(np.where(allowed, probs, -1.0)), probs.shape)
        save(plot_strengths(model, edge=(int(j), int(i))), "strengths.png")
    if z_hat is not None:
        save(plot_latents(data.z, z_hat, names=getattr(data, "latent_names", None)), "latents.png")
    return paths
