"""Compare edge priors on the same data: held-out ELBO, PSIS-LOO, expected edges, edge probabilities.

:func:`compare_priors` fits one :class:`~bayes_crl.LatentCausalModel` per prior on the same training
split (same seed, same settings) and scores each on the held-out rows. The result,
:class:`PriorComparison`, holds one row per prior (``.rows``, a list of dicts), the same as an
``xarray.Dataset`` (``.table``, with the edge probabilities and the pairwise agreement matrices), a
Markdown rendering (``.to_markdown()``) and a figure (``.plot()``).

Why a held-out bound rather than the training ELBO: the priors differ in what they put into the global
KL term (a point-estimate Laplace prior has none, a horseshoe has one per strength), so training ELBOs
are not on a common footing; the held-out bound below scores only how well each fitted posterior predicts
new rows.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from bayes_crl._validation import (BayesCRLValueError, as_adjacency_array, check_array_2d, check_env,
                                   check_random_state, check_scalar)
from bayes_crl.heldout import heldout_elbo
from bayes_crl.priors import get_prior

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from matplotlib.figure import Figure

    from bayes_crl.estimator import LatentCausalModel
    from bayes_crl.priors import EdgePrior

__all__ = ["compare_priors", "PriorComparison", "heldout_elbo"]

_OWNER = "compare_priors"
_RESERVED = ("n_latents", "edge_prior", "random_state")


def _loo(model: "LatentCausalModel", x: np.ndarray, env: np.ndarray, num_draws: int, seed: int) -> dict[str, Any]:
    """PSIS-LOO (``arviz_stats.loo``) per row on the tree of ``x``; failures are recorded in ``loo_note``.

    A point-estimate prior (``EdgePrior.point_estimate``: ``"laplace"``, ``"none"``, MAP strengths) gives
    draws that differ only by rounding, where PSIS has nothing to smooth; LOO then equals the in-sample log
    predictive density, which is what is reported (with a note, and ``nan`` Pareto k). Which case applies is
    decided from the prior, never from comparing floating-point draws, so the branch cannot depend on the
    machine.
    """
    out: dict[str, Any] = {"loo_elpd": float("nan"), "loo_se": float("nan"), "loo_pareto_k_max": float("nan"),
                           "loo_note": ""}
    try:
        import arviz_stats

        dt = model.to_datatree(x, env, num_samples=num_draws, num_log_lik_draws=num_draws, seed=seed)
        ll = np.asarray(dt["log_likelihood"]["x"].values, dtype=np.float64).reshape(-1, x.shape[0])  # (S, N)
        if get_prior(model.edge_prior).point_estimate:  # decided by the prior, never by comparing float draws
            n = ll.shape[1]
            out.update(loo_elpd=float(ll[0].mean()), loo_se=float(ll[0].std(ddof=1) / np.sqrt(n)) if n > 1 else
                       float("nan"), loo_note="point-estimate posterior: in-sample lpd (p_loo = 0)")
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto-k warnings are expected with variational draws
            res = arviz_stats.loo(dt)
        n = int(res.n_data_points)
        k = np.asarray(getattr(res.pareto_k, "values", res.pareto_k), dtype=np.float64)
        out.update(loo_elpd=float(res.elpd) / n, loo_se=float(res.se) / n, loo_pareto_k_max=float(np.nanmax(k)))
    except Exception as exc:  # a diagnostic: record why it did not run and keep the comparison
        out["loo_note"] = f"failed: {type(exc).__name__}: {exc}"
    return out


# ----------------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------------
_SCALARS = (
    ("heldout_elbo", "held-out ELBO / row"), ("heldout_elbo_se", "se"), ("loo_elpd", "LOO elpd / row"),
    ("loo_pareto_k_max", "max Pareto k"), ("expected_edges", "E[#edges]"), ("final_loss", "final loss"),
    ("fit_seconds", "fit s"),
)
_TRUTH = (("mpc", "MPC"), ("shd", "SHD"), ("expected_shd", "E[SHD]"), ("brier", "Brier"), ("edge_auroc", "AUROC"))


@dataclass(frozen=True, eq=False)
class PriorComparison:
    """Outcome of :func:`compare_priors`.

    Attributes
    ----------
    priors : tuple of str
        Prior names, in the order fitted.
    rows : list of dict
        One per prior: ``prior``, ``heldout_elbo`` (mean over held-out rows of the importance-weighted
        bound of :func:`heldout_elbo`), ``heldout_elbo_se`` (its standard error over rows), ``loo_elpd`` and
        ``loo_se`` (PSIS-LOO elpd per row on a training subsample; ``loo_note`` says when it is the in-sample
        value of a point-estimate prior, or why it failed (then ``nan``)), ``loo_pareto_k_max``,
        ``expected_edges`` (sum of ``edge_inclusion_``),
        ``final_loss`` (negative ELBO per row, mean of the last 5 % of training steps), ``fit_seconds``,
        ``n_train``, ``n_heldout``; with ``z_true`` also ``mpc`` and, with ``adjacency``, ``shd`` (threshold
        0.5), ``expected_shd`` (sum over the off-diagonal entries of ``|p - truth|``), ``brier`` (their mean
        squared difference) and ``edge_auroc``. These and the held-out scores are the quantities every prior
        can be compared on: the probabilities themselves mean different things for priors with an edge indicator
        (the spike-and-slab: posterior probability of the indicator) and without (the horseshoe, Laplace and
        flat priors: probability that the effect reaches ``min_effect``).
    edge_inclusion : ndarray (P, l, l)
        Each prior's inclusion probabilities ``[parent, child]`` aligned to the reference latents
        (``reference``): the true latents when ``z_true`` was given, else the first prior's fit.
    pairwise_difference : ndarray (P, P)
        Mean absolute difference of the off-diagonal inclusion probabilities of two fits, after matching the
        second fit's latents to the first's (:func:`bayes_crl.metrics.match_latents` on their transforms of
        the held-out rows). 0 = the same graph posterior. ``nan`` between a prior with an edge indicator and
        one without (:attr:`~bayes_crl.priors.EdgePrior.exact_inclusion` differs): their probabilities are
        different quantities.
    latent_agreement : ndarray (P, P)
        MPC between the two fits' latents on the held-out rows (1 = the same latents up to permutation and
        scaling).
    latent_names : tuple of str
        Names of the reference latents (coords of ``parent``/``child``).
    reference : str
        ``"truth"`` or the name of the first prior.
    models : dict of str to LatentCausalModel
        The fitted models.
    """

    priors: tuple[str, ...]
    rows: list[dict[str, Any]]
    edge_inclusion: np.ndarray
    pairwise_difference: np.ndarray
    latent_agreement: np.ndarray
    latent_names: tuple[str, ...]
    reference: str
    models: dict[str, Any] = field(repr=False)
    heldout_pointwise: np.ndarray | None = field(default=None, repr=False)
    """(P, N_heldout): each prior's held-out ELBO of every held-out row (the same rows for every prior)."""

    def compare(self) -> "Any":
        """The priors ranked by held-out predictive fit, in the layout of ``arviz_stats.compare``.

        ``elpd`` is the sum over held-out rows of the importance-weighted held-out ELBO (a lower bound on each
        row's log predictive density, :func:`heldout_elbo`), ``se`` its standard error
        (``sqrt(N) sd``), ``elpd_diff`` the difference to the best prior and ``dse`` the standard error of that
        difference from the paired per-row differences (as ``arviz_stats.compare`` does for ELPD); ``weight``
        is the softmax of ``elpd`` (pseudo-BMA without the bootstrap), ``rank`` 0 for the best.

        Returns
        -------
        pandas.DataFrame
            Indexed by prior, best first; columns ``rank, elpd, se, elpd_diff, dse``.
        """
        import pandas as pd

        if self.heldout_pointwise is None:
            raise BayesCRLValueError("This PriorComparison holds no per-row held-out values (made without "
                                     "compare_priors); compare() needs them.")
        ll = np.asarray(self.heldout_pointwise, dtype=np.float64)
        n = ll.shape[1]
        elpd = ll.sum(1)
        best = int(np.argmax(elpd))
        se = np.sqrt(n) * ll.std(1, ddof=1) if n > 1 else np.full(len(elpd), np.nan)
        dse = np.array([np.sqrt(n) * (ll[best] - ll[k]).std(ddof=1) if n > 1 else np.nan for k in range(len(elpd))])
        df = pd.DataFrame({"elpd": elpd, "se": se, "elpd_diff": elpd[best] - elpd, "dse": dse},
                          index=pd.Index(list(self.priors), name="prior"))
        df = df.sort_values("elpd", ascending=False)
        df.insert(0, "rank", np.arange(len(df)))
        return df

    @property
    def table(self) -> "xr.Dataset":
        """The comparison as an ``xarray.Dataset``: dims ``prior``, ``parent``, ``child``, ``other_prior``;
        one variable per scalar column of :attr:`rows` plus ``edge_inclusion (prior, parent, child)``,
        ``pairwise_difference`` and ``latent_agreement (prior, other_prior)``. ``.to_dataframe()`` on a
        selection gives a pandas table."""
        import xarray as xr

        data: dict[str, Any] = {}
        for key in self.rows[0]:
            if key == "prior":
                continue
            vals = [r[key] for r in self.rows]
            if all(v is None or isinstance(v, str) for v in vals):
                data[key] = ("prior", np.asarray(["" if v is None else v for v in vals], dtype=str))
            else:
                data[key] = ("prior", np.asarray(vals, dtype=np.float64))
        data["edge_inclusion"] = (("prior", "parent", "child"), self.edge_inclusion)
        data["pairwise_difference"] = (("prior", "other_prior"), self.pairwise_difference)
        data["latent_agreement"] = (("prior", "other_prior"), self.latent_agreement)
        names = list(self.latent_names)
        return xr.Dataset(data, coords={"prior": list(self.priors), "other_prior": list(self.priors),
                                        "parent": names, "child": names},
                          attrs={"reference": self.reference,
                                 "edge_inclusion": f"aligned to the latents of: {self.reference}"})

    def to_markdown(self, digits: int = 3) -> str:
        """Markdown tables: scores per prior, edge probabilities side by side, pairwise difference.

        Parameters
        ----------
        digits : int, default 3

        Returns
        -------
        str
        """
        def fmt(v: Any) -> str:
            if v is None:
                return "-"
            if isinstance(v, float) and not math.isfinite(v):
                return "nan"
            return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

        cols = [c for c in _SCALARS + _TRUTH if c[0] in self.rows[0]]
        out = ["| prior | " + " | ".join(h for _, h in cols) + " |", "|---|" + "---:|" * len(cols)]
        for r in self.rows:
            out.append(f"| {r['prior']} | " + " | ".join(fmt(r[k]) for k, _ in cols) + " |")
        notes = [f"- {r['prior']}: LOO {r['loo_note']}" for r in self.rows if r.get("loo_note")]
        if notes:
            out += [""] + notes
        names = self.latent_names
        out += ["", f"Edge inclusion probabilities (latents aligned to: {self.reference})", "",
                "| edge | " + " | ".join(self.priors) + " |", "|---|" + "---:|" * len(self.priors)]
        l = len(names)
        for j in range(l):
            for i in range(l):
                if i != j:
                    out.append(f"| {names[j]} -> {names[i]} | "
                               + " | ".join(f"{p[j, i]:.2f}" for p in self.edge_inclusion) + " |")
        out += ["", "Pairwise mean absolute difference of inclusion probabilities (after matching latents; blank "
                "between a prior with an edge indicator and one without: different quantities)", "",
                "| | " + " | ".join(self.priors) + " |", "|---|" + "---:|" * len(self.priors)]
        for a, name in enumerate(self.priors):
            out.append(f"| {name} | " + " | ".join("" if np.isnan(v) else f"{v:.{digits}f}"
                                                   for v in self.pairwise_difference[a]) + " |")
        return "\n".join(out) + "\n"

    def plot(self, *, figsize: tuple[float, float] | None = None) -> "Figure":
        """Edge-probability heatmaps side by side (one per prior, aligned latents) above held-out ELBO bars.

        Returns
        -------
        matplotlib.figure.Figure
            Axes: one heatmap per prior (``fig.axes[:P]``, in prior order), the bar chart of held-out ELBOs
            (``fig.axes[P]``, label ``"heldout_elbo"``), then the heatmaps' colorbars.
        """
        from matplotlib.figure import Figure

        from bayes_crl.plots import plot_edge_probabilities

        p = len(self.priors)
        fig = Figure(figsize=figsize or (3.4 * p, 6.4), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1.0])
        heat = np.atleast_1d(top.subplots(1, p))
        bar = bottom.subplots()
        bar.set_label("heldout_elbo")
        for ax, name, probs, row in zip(heat, self.priors, self.edge_inclusion, self.rows):
            plot_edge_probabilities(probs, names=self.latent_names, ax=ax)
            ax.set_title(f"{name}\nE[#edges] = {row['expected_edges']:.2f}", fontsize=9)
        y = np.asarray([r["heldout_elbo"] for r in self.rows], dtype=np.float64)
        se = np.asarray([r["heldout_elbo_se"] for r in self.rows], dtype=np.float64)
        xs = np.arange(p)
        finite = y[np.isfinite(y)]
        top_err = float(np.nanmax(se, initial=0.0)) if np.isfinite(se).any() else 0.0
        if finite.size:  # bars rise from a floor below the lowest bound (the values are log densities, < 0)
            span = max(float(finite.max() - finite.min()), 1e-3)
            floor = float(finite.min()) - top_err - 0.5 * span
            bar.bar(xs, np.where(np.isfinite(y), y - floor, 0.0), bottom=floor, yerr=np.where(np.isfinite(se), se, 0.0),
                    color="tab:blue", alpha=0.8, capsize=3)
            bar.set_ylim(floor, float(finite.max()) + top_err + 0.3 * span)
        bar.set_xticks(xs, list(self.priors))
        bar.set_ylabel("held-out ELBO per row\n(importance-weighted)")
        bar.set_title("held-out fit (higher is better); error bars: standard error over rows", fontsize=9)
        top.suptitle(f"edge inclusion probability [parent, child], latents aligned to: {self.reference}", fontsize=9)
        return fig

    def __repr__(self) -> str:
        return f"PriorComparison(priors={self.priors!r}, reference={self.reference!r})\n" + self.to_markdown()


# ----------------------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------------------
def _split(codes: np.ndarray, n_envs: int, holdout: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified by environment: each environment keeps >= 1 training row; >= 1 row is held out overall."""
    train, test = [], []
    for u in range(n_envs):
        rows = rng.permutation(np.flatnonzero(codes == u))
        k = min(int(round(holdout * len(rows))), len(rows) - 1)
        test.append(rows[:k])
        train.append(rows[k:])
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    if te.size == 0:
        raise BayesCRLValueError(f"The 'holdout' parameter of {_OWNER} leaves no held-out rows with these "
                                 f"environment sizes. Got holdout={holdout!r}; increase it or pass more rows.")
    return tr, te


def _env_array(env: Any, codes: np.ndarray, labels: Sequence[Hashable]) -> np.ndarray:
    if isinstance(env, np.ndarray) and env.ndim == 1:
        return env
    arr = np.empty(len(labels), dtype=object)
    for k, v in enumerate(labels):  # element-wise: tuple labels stay labels
        arr[k] = v
    return arr[codes]


def _prior_name(prior: "str | EdgePrior") -> str:
    return prior if isinstance(prior, str) else str(getattr(prior, "name", type(prior).__name__))


def _offdiag_mad(a: np.ndarray, b: np.ndarray) -> float:
    off = ~np.eye(a.shape[0], dtype=bool)
    return float(np.abs(a[off] - b[off]).mean()) if off.any() else 0.0


def compare_priors(x: Any, env: Any, priors: Sequence["str | EdgePrior"] = ("horseshoe", "spike_slab", "laplace",
                                                                              "none"),
                   *, n_latents: int = 3, holdout: float = 0.2, random_state: int | np.random.Generator | None = 0,
                   z_true: Any = None, adjacency: Any = None, num_particles: int = 16, loo_rows: int = 200,
                   loo_draws: int = 100, **model_kw: Any) -> PriorComparison:
    """Fit one model per edge prior on the same training split and compare them on held-out rows.

    Parameters
    ----------
    x : array_like (N, d)
    env : array_like (N,)
        Environment label of each row.
    priors : sequence of str or EdgePrior, default ("horseshoe", "spike_slab", "laplace", "none")
        Priors to compare (names must be distinct).
    n_latents : int, default 3
    holdout : float, default 0.2
        Fraction of each environment's rows held out for the held-out ELBO (each environment keeps at least
        one training row, so every held-out label was seen in ``fit``).
    random_state : int, Generator or None, default 0
        Seeds the split; every model gets the same integer seed drawn from it (same initialisation across
        priors).
    z_true : array_like (N, l), optional
        True latents: the edge probabilities are aligned to them and MPC is reported per prior.
    adjacency : array_like (l, l), optional
        True graph ``[parent, child]`` (with ``z_true``): SHD and edge AUROC per prior.
    num_particles : int, default 16
        Importance samples per held-out row (:func:`heldout_elbo`).
    loo_rows : int, default 200
        PSIS-LOO (``arviz_stats.loo`` on :meth:`~bayes_crl.LatentCausalModel.to_datatree`) on a random
        subsample of this many training rows; 0 skips LOO (``nan``).
    loo_draws : int, default 100
        Posterior draws for LOO.
    **model_kw
        Further :class:`~bayes_crl.LatentCausalModel` arguments (``num_steps``, ``n_restarts``, ``noise``,
        ...), the same for every prior.

    Returns
    -------
    PriorComparison

    Raises
    ------
    BayesCRLValueError
        On invalid arguments (the message names the argument).

    Examples
    --------
    >>> cmp = compare_priors(data.x, data.env, n_latents=3, num_steps=2000)   # doctest: +SKIP
    >>> print(cmp.to_markdown()); fig = cmp.plot()                          # doctest: +SKIP
    """
    from bayes_crl import metrics
    from bayes_crl.estimator import LatentCausalModel

    bad = sorted(set(model_kw) & set(_RESERVED))
    if bad:
        raise BayesCRLValueError(f"{_OWNER} sets {bad} itself; pass n_latents and random_state as its own "
                                 "arguments and the priors in 'priors'.")
    x_arr = check_array_2d(x, "x")
    codes, labels = check_env(env, x_arr.shape[0], "env")
    check_scalar(holdout, "holdout", Real, _OWNER, min_val=0, max_val=1, include_min=False, include_max=False)
    check_scalar(num_particles, "num_particles", Integral, _OWNER, min_val=1)
    check_scalar(loo_rows, "loo_rows", Integral, _OWNER, min_val=0)
    check_scalar(loo_draws, "loo_draws", Integral, _OWNER, min_val=1)
    if isinstance(priors, str) or not len(priors):
        raise BayesCRLValueError(f"The 'priors' parameter of {_OWNER} must be a non-empty sequence of prior names "
                                 f"or EdgePrior instances. Got {priors!r}.")
    names = [_prior_name(p) for p in priors]
    if len(set(names)) != len(names):
        raise BayesCRLValueError(f"The 'priors' parameter of {_OWNER} must hold distinct priors. Got {names}.")
    zt = None
    if z_true is not None:
        zt = check_array_2d(z_true, "z_true")
        if zt.shape[0] != x_arr.shape[0]:
            raise BayesCRLValueError(f"'z_true' must have one row per row of x ({x_arr.shape[0]}). Got {zt.shape[0]}.")
    if adjacency is not None and zt is None:
        raise BayesCRLValueError(f"The 'adjacency' argument of {_OWNER} needs 'z_true' (to align the learned "
                                 "latents to the true ones).")

    rng = check_random_state(random_state)
    env_arr = _env_array(env, codes, labels)
    train, test = _split(codes, len(labels), float(holdout), rng)
    seed = int(rng.integers(2**31 - 1))
    loo_idx = np.sort(rng.choice(train, min(int(loo_rows), len(train)), replace=False)) if loo_rows else None
    x_tr, e_tr, x_te, e_te = x_arr[train], env_arr[train], x_arr[test], env_arr[test]

    models: dict[str, LatentCausalModel] = {}
    rows: list[dict[str, Any]] = []
    z_te: list[np.ndarray] = []
    pointwise: list[np.ndarray] = []
    for prior, name in zip(priors, names):
        m = LatentCausalModel(n_latents, edge_prior=prior, random_state=seed, **model_kw)
        t0 = time.perf_counter()
        m.fit(x_tr, e_tr)
        seconds = time.perf_counter() - t0
        models[name] = m
        ll = heldout_elbo(m, x_te, e_te, num_particles=num_particles, seed=seed)
        pointwise.append(np.asarray(ll, dtype=np.float64))
        losses = np.asarray(m.loss_, dtype=np.float64)
        losses = losses[np.isfinite(losses)]
        tail = losses[-max(1, len(losses) // 20):] if losses.size else np.asarray([np.nan])
        row: dict[str, Any] = {"prior": name, "heldout_elbo": float(ll.mean()),
                               "heldout_elbo_se": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else
                               float("nan")}
        if loo_idx is not None and len(loo_idx):
            row.update(_loo(m, x_arr[loo_idx], env_arr[loo_idx], int(loo_draws), seed))
        else:
            row.update(loo_elpd=float("nan"), loo_se=float("nan"), loo_pareto_k_max=float("nan"),
                       loo_note="skipped (loo_rows=0)")
        row.update(expected_edges=float(np.asarray(m.edge_inclusion_).sum()), final_loss=float(tail.mean()),
                   fit_seconds=seconds, n_train=int(len(train)), n_heldout=int(len(test)))
        z_te.append(m.transform(x_te, e_te))
        rows.append(row)

    p = len(names)
    incl = [np.asarray(models[n].edge_inclusion_, dtype=np.float64) for n in names]
    diff, agree = np.zeros((p, p)), np.ones((p, p))
    kinds = [get_prior(pr).exact_inclusion for pr in priors]
    for a in range(p):
        for b in range(p):
            if a != b:
                perm, _, _ = metrics.match_latents(z_te[a], z_te[b])
                diff[a, b] = (_offdiag_mad(incl[a], metrics.align_graph(incl[b], perm)) if kinds[a] == kinds[b]
                              else float("nan"))
                agree[a, b] = metrics.mpc(z_te[a], z_te[b])
    if zt is not None:
        aligned = []
        for r, z, inc in zip(rows, z_te, incl):
            score, perm, _ = metrics.mpc(zt[test], z, return_matching=True)
            al = metrics.align_graph(inc, perm)
            aligned.append(al)
            r["mpc"] = score
            if adjacency is not None:
                r["shd"] = metrics.shd(adjacency, al, threshold=0.5)
                a_true = as_adjacency_array(adjacency).astype(np.float64)
                off = ~np.eye(len(a_true), dtype=bool)
                r["expected_shd"] = float(np.abs(al - a_true)[off].sum())
                r["brier"] = float(np.mean((al - a_true)[off] ** 2))
                r["edge_auroc"] = metrics.edge_auroc(adjacency, al)
        reference = "truth"
        latent_names = tuple(f"z{i}" for i in range(zt.shape[1]))
    else:
        aligned = [incl[0]]
        for b in range(1, p):
            perm, _, _ = metrics.match_latents(z_te[0], z_te[b])
            aligned.append(metrics.align_graph(incl[b], perm))
        reference = names[0]
        latent_names = tuple(models[names[0]].latent_names_)
    return PriorComparison(priors=tuple(names), rows=rows, edge_inclusion=np.stack(aligned),
                           pairwise_difference=diff, latent_agreement=agree, latent_names=latent_names,
                           reference=reference, models=models, heldout_pointwise=np.stack(pointwise))
