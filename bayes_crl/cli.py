"""The ``bayes-crl`` command line: ``simulate``, ``fit`` and ``report``.

Examples
--------
::

    bayes-crl simulate --latents 3 --envs 30 --rows-per-env 1000 --graph chain --seed 0 --out data.npz
    bayes-crl fit data.npz --latents 3 --prior horseshoe --steps 4500 --seed 0 --out runs/chain
    bayes-crl fit my_data.csv --env-column day --latents 4 --out runs/mine
    bayes-crl report runs/chain

``python -m bayes_crl.cli ...`` is the same program.

Exit status: 0 on success; 2 on bad input (a bad argument, a missing or unreadable file, a non-empty
run folder without ``--overwrite``, a damaged saved model), with one line ``error: ...`` on stderr and
no traceback; 1 when the fit itself fails (too many non-finite SVI steps).

A run folder written by ``fit`` holds:

``summary.json`` / ``summary.md``
    Edge inclusion probabilities (with the latent names), per-environment strengths, the
    identifiability report, fit time and final loss, PSIS-LOO on a subsample, and recovery metrics
    (MPC, SHD, AUROC, Brier) when the data file was written by ``bayes-crl simulate``.
``model/``
    The fitted :class:`~bayes_crl.LatentCausalModel` (:meth:`~bayes_crl.LatentCausalModel.save`;
    safetensors + JSON, loading never unpickles).
``posterior.nc``
    The ArviZ DataTree of :meth:`~bayes_crl.LatentCausalModel.to_datatree` (log-likelihood on a
    subsample of rows, see ``--loglik-rows``) as one netCDF-4 file with groups (``posterior``,
    ``log_likelihood``, ``observed_data``, ``constant_data``, ...), written with ``h5netcdf``:
    ``xarray.open_datatree(path)`` and ArviZ open it directly.
``figures/``
    PNG figures from :func:`bayes_crl.plots.write_report_figures`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "build_parser", "read_datatree", "write_datatree", "render_summary"]

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
MODEL_DIR = "model"
FIGURES_DIR = "figures"
POSTERIOR_FILE = "posterior.nc"
POSTERIOR_DIR = "posterior"
_GROUPS_MANIFEST = "groups.json"
_FIGURES = ("edge_probabilities.png", "graph.png", "loss.png")


class _UsageError(Exception):
    """A command-line usage error (raised instead of argparse's print-and-exit)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse calls this on a usage error
        raise _UsageError(message)


# ----------------------------------------------------------------------------------------------------
# DataTree I/O
# ----------------------------------------------------------------------------------------------------
def write_datatree(dt: Any, run_dir: str | os.PathLike) -> tuple[str, str]:
    """Write a DataTree into ``run_dir/posterior.nc``: one netCDF-4 file with groups (``h5netcdf`` engine).

    Parameters
    ----------
    dt : xarray.DataTree
    run_dir : str or path-like
        Existing folder.

    Returns
    -------
    path : str
        ``run_dir/posterior.nc``, readable by ``xarray.open_datatree`` and ArviZ.
    format : str
        ``"netcdf4"``.
    """
    path = Path(run_dir) / POSTERIOR_FILE
    dt.to_netcdf(path, engine="h5netcdf")
    return str(path), "netcdf4"


def read_datatree(path: str | os.PathLike) -> Any:
    """Read the posterior DataTree written by :func:`write_datatree` (or by ``bayes-crl fit``).

    Parameters
    ----------
    path : str or path-like
        A run folder or its ``posterior.nc`` file.

    Returns
    -------
    xarray.DataTree
        Loaded into memory (no file is left open).
    """
    import xarray as xr

    path = Path(path)
    if path.is_dir():
        path = path / POSTERIOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' holds no posterior written by bayes-crl fit (expected a netCDF-4 file "
                                f"'{POSTERIOR_FILE}').")
    with xr.open_datatree(path, engine="h5netcdf") as dt:
        return dt.load()


# ----------------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    """JSON-ready plain Python (NaN and inf become None)."""
    if isinstance(v, dict):
        return {str(k): _plain(t) for k, t in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(t) for t in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def _final_loss(losses: np.ndarray) -> tuple[float, int]:
    """Mean of the last 5 % of the finite losses (at least 1, at most 100 steps) and that window."""
    y = np.asarray(losses, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size == 0:
        return float("nan"), 0
    k = int(min(100, max(1, round(0.05 * y.size))))
    return float(y[-k:].mean()), k


def _loo_summary(dt: Any) -> dict[str, Any]:
    """PSIS-LOO on the tree's log-likelihood (per-row values; warnings and failures recorded, not raised)."""
    try:
        import arviz_stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = arviz_stats.loo(dt)
        n = int(res.n_data_points)
        k = np.asarray(getattr(res.pareto_k, "values", res.pareto_k), dtype=np.float64)
        return {"elpd": float(res.elpd), "se": float(res.se), "p": float(res.p), "n_rows": n,
                "elpd_per_row": float(res.elpd) / n, "pareto_k_max": float(np.nanmax(k)),
                "n_pareto_k_above_0.7": int((k > 0.7).sum()), "warning": bool(res.warning), "error": None}
    except Exception as exc:  # LOO is a diagnostic: record why it failed and go on
        return {"elpd": None, "se": None, "p": None, "n_rows": None, "elpd_per_row": None, "pareto_k_max": None,
                "n_pareto_k_above_0.7": None, "warning": None, "error": f"{type(exc).__name__}: {exc}"}


def _summarise_fit(model: Any, *, data_info: dict, settings: dict, truth: Any, x: np.ndarray, env: np.ndarray,
                   loo: dict | None, files: dict) -> dict[str, Any]:
    from bayes_crl import metrics
    from bayes_crl.datatree import edge_summary

    names = list(model.latent_names_)
    es = edge_summary(model, prob=0.9)
    w = np.asarray(model.edge_weight_)
    edges = []
    allowed = es["allowed"].values
    for j, pj in enumerate(names):
        for i, ci in enumerate(names):
            if not allowed[j, i]:
                continue
            edges.append({"parent": pj, "child": ci, "probability": float(es["inclusion"].values[j, i]),
                          "strength_mean": float(es["strength_mean"].values[j, i]),
                          "strength_abs_mean": float(es["strength_abs_mean"].values[j, i]),
                          "strength_min_env": float(w[:, j, i].min()), "strength_max_env": float(w[:, j, i].max()),
                          "n_envs_ci90_contains_zero": int(es["n_envs_ci_contains_zero"].values[j, i])})
    edges.sort(key=lambda e: -e["probability"])
    final, window = _final_loss(model.loss_)
    report = model.identifiability_report()
    recovery = None
    if truth is not None:
        z_hat = model.transform(x, env)
        score, perm, _ = metrics.mpc(truth.z, z_hat, return_matching=True)
        probs = metrics.align_graph(np.asarray(model.edge_inclusion_), perm)
        recovery = {"mpc": score, "per_latent_correlation": metrics.per_latent_correlation(truth.z, z_hat),
                    "shd": metrics.shd(truth.adjacency, probs, threshold=0.5),
                    "edge_auroc": metrics.edge_auroc(truth.adjacency, probs),
                    "brier": metrics.brier(truth.adjacency, probs),
                    "matching": {t: names[int(perm[k])] for k, t in enumerate(truth.latent_names)},
                    "true_latent_names": list(truth.latent_names),
                    "true_adjacency": truth.adjacency, "edge_inclusion_aligned_to_truth": probs,
                    "condition_iv": truth.condition_iv}
    import bayes_crl

    return _plain({
        "bayes_crl_version": bayes_crl.__version__,
        "data": data_info,
        "settings": settings,
        "latent_names": names,
        "env_labels": [str(v) for v in model.env_labels_],
        "edge_inclusion": np.asarray(model.edge_inclusion_),
        "edge_allowed": allowed,
        "edges": edges,
        "edge_weight_per_env": w,
        "fit": {"seconds": float(model.fit_seconds_), "final_loss": final, "final_loss_window": window,
                "n_rejected": int(model.result_.n_rejected), "order": list(map(int, model.result_.order))},
        "identifiability": report.to_dict(),
        "loo": loo,
        "recovery": recovery,
        "files": files,
    })


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def render_summary(summary: dict[str, Any]) -> str:
    """The Markdown text of a run summary (``summary.md``; what ``bayes-crl report`` prints).

    Parameters
    ----------
    summary : dict
        The content of ``summary.json``.

    Returns
    -------
    str
    """
    names = summary["latent_names"]
    probs = summary["edge_inclusion"]
    allowed = summary["edge_allowed"]
    d, s, f = summary["data"], summary["settings"], summary["fit"]
    out = ["# bayes_crl run summary", ""]
    out.append(f"- data: `{d['path']}` ({d['kind']}), {d['n_rows']} rows x {d['n_obs_dims']} columns, "
               f"{d['n_envs']} environments")
    out.append(f"- model: {s['n_latents']} latents, prior `{s['edge_prior']}`, noise `{s['noise']}`, "
               f"mechanism `{s['mechanism']}`, {s['num_steps']} steps, {s['n_restarts']} restart(s), "
               f"seed {s['random_state']}")
    out.append(f"- fit: {_fmt(f['seconds'], '.1f')} s; final loss {_fmt(f['final_loss'])} (negative ELBO per row, "
               f"mean of the last {f['final_loss_window']} steps); {f['n_rejected']} rejected steps; "
               f"learned slot order {f['order']}")
    loo = summary.get("loo")
    if loo:
        if loo.get("error"):
            out.append(f"- PSIS-LOO: failed ({loo['error']})")
        else:
            out.append(f"- PSIS-LOO on {loo['n_rows']} rows: elpd {_fmt(loo['elpd'], '.1f')} (se "
                       f"{_fmt(loo['se'], '.1f')}), {_fmt(loo['elpd_per_row'])} per row; max Pareto k "
                       f"{_fmt(loo['pareto_k_max'], '.2f')} (draws from the variational posterior: high k is "
                       "expected)")
    out += ["", "## Edge inclusion probabilities", "",
            "P(parent -> child); rows are parents, columns children; latents in the learned causal order; "
            "`-` marks edges the learned order rules out.", ""]
    out.append("| parent \\ child | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    for j, pj in enumerate(names):
        cells = [f"{probs[j][i]:.2f}" if allowed[j][i] else "-" for i in range(len(names))]
        out.append(f"| {pj} | " + " | ".join(cells) + " |")
    out += ["", f"## Strengths per environment ({len(summary['env_labels'])} environments)", "",
            "Posterior mean strength W[u, parent, child]: mean over environments, range over environments, and "
            "the number of environments whose 90 % credible interval contains 0 (where the edge may vanish, "
            "condition (iv)).", "",
            "| edge | P | mean | mean abs | min | max | envs with 0 in CI |", "|---|---:|---:|---:|---:|---:|---:|"]
    for e in summary["edges"]:
        out.append(f"| {e['parent']} -> {e['child']} | {e['probability']:.2f} | {_fmt(e['strength_mean'])} | "
                   f"{_fmt(e['strength_abs_mean'])} | {_fmt(e['strength_min_env'])} | {_fmt(e['strength_max_env'])} "
                   f"| {e['n_envs_ci90_contains_zero']} |")
    out += ["", "## Identifiability", "", summary["identifiability"]["summary"]]
    rec = summary.get("recovery")
    if rec:
        out += ["", "## Recovery (simulated ground truth)", "",
                f"- MPC {_fmt(rec['mpc'])}; per latent " + ", ".join(
                    f"{t} {_fmt(c)}" for t, c in zip(rec["true_latent_names"], rec["per_latent_correlation"])),
                f"- SHD {_fmt(rec['shd'], '.0f')} (threshold 0.5); edge AUROC {_fmt(rec['edge_auroc'])}; Brier "
                f"{_fmt(rec['brier'])}",
                "- matching (true -> learned): " + ", ".join(f"{t} -> {m}" for t, m in rec["matching"].items())]
    files = summary.get("files", {})
    if files:
        out += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in files.items() if not isinstance(v, list)]
        if files.get("figures"):
            out.append("- figures: " + ", ".join(f"`{v}`" for v in files["figures"]))
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------
def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"'{run_dir}' exists and is not a folder; choose another --out.")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"run folder '{run_dir}' is not empty; pass --overwrite to replace its results, or "
                              "choose another --out.")


def _clear_previous_run(run_dir: Path) -> None:
    """Remove what a previous fit wrote (only those files; the model folder is replaced by
    ``model.save(overwrite=True)``, which refuses folders that do not hold a saved model)."""
    if run_dir.is_dir():
        for name in (SUMMARY_JSON, SUMMARY_MD, POSTERIOR_FILE):
            if (run_dir / name).is_file():
                (run_dir / name).unlink()
        post = run_dir / POSTERIOR_DIR
        if (post / _GROUPS_MANIFEST).is_file():
            shutil.rmtree(post)
        figs = run_dir / FIGURES_DIR
        if figs.is_dir():
            for p in figs.glob("*.png"):
                p.unlink()


def _load_data(path: str, env_column: str, env_file: str | None = None) -> tuple[Any, np.ndarray, Any, str]:
    """``x``, ``env``, the ground truth (a LatentANMData, or None) and the kind of file. A ``.npy`` file of
    observations is memory-mapped (read on demand by the fit, :mod:`bayes_crl.rows`); its labels come from
    ``env_file``."""
    from bayes_crl._validation import BayesCRLValueError
    from bayes_crl.simulate import LatentANMData, load_observations

    if not os.path.exists(path):
        raise FileNotFoundError(f"data file '{path}' does not exist.")
    if os.path.isdir(path):
        raise BayesCRLValueError(f"data file '{path}' is a folder; expected a .npz, .npy or .csv file.")
    if path.lower().endswith(".npy"):
        if env_file is None:
            raise BayesCRLValueError(f"data file '{path}' is a .npy array of observations; give the environment "
                                     "labels, one per row, with --env-file labels.npy.")
        if not os.path.exists(env_file):
            raise FileNotFoundError(f"environment file '{env_file}' does not exist.")
        try:
            x = np.load(path, mmap_mode="r", allow_pickle=False)
            env = np.load(env_file, allow_pickle=False)
        except Exception as exc:  # ValueError, OSError: a file that is not a plain .npy array
            raise BayesCRLValueError(f"'{path}' and '{env_file}' must be plain .npy arrays ({type(exc).__name__}: "
                                     f"{exc}).") from None
        return x, env, None, "npy (memory-mapped)"
    if env_file is not None:
        raise BayesCRLValueError(f"--env-file is for .npy data files; '{path}' holds its labels itself "
                                 "(name them with --env-column).")
    if path.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as f:
                simulated = "__format__" in f.files
        except Exception as exc:  # ValueError, OSError, zipfile.BadZipFile, EOFError: all mean a bad file
            raise BayesCRLValueError(f"'{path}' is not a readable .npz file ({type(exc).__name__}: {exc}).") \
                from None
        if simulated:
            data = LatentANMData.load(path)
            return data.x, data.env, data, "simulated by bayes-crl simulate"
        x, env = load_observations(path, env_column)
        return x, env, None, "npz"
    x, env = load_observations(path, env_column)
    return x, env, None, os.path.splitext(path)[1].lstrip(".").lower()


def _loglik_rows(env: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """Up to ``n_rows`` row indices, spread over the environments (sorted)."""
    n = len(env)
    if n_rows >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, n_rows, replace=False))


def _cmd_simulate(a: argparse.Namespace) -> int:
    from bayes_crl.simulate import simulate_latent_anm

    out = a.out if a.out.endswith(".npz") else a.out + ".npz"
    if os.path.exists(out) and not a.overwrite:
        raise FileExistsError(f"'{out}' already exists; pass --overwrite to replace it, or choose another --out.")
    data = simulate_latent_anm(n_latents=a.latents, n_envs=a.envs, n_per_env=a.rows_per_env, n_obs_dims=a.obs_dims,
                               graph=a.graph, noise=a.noise, mechanism=a.mechanism, violate=a.violate or (),
                               random_state=a.seed)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    path = data.save(out, overwrite=a.overwrite)
    edges = [f"{data.latent_names[j]}->{data.latent_names[i]}" for j, i in zip(*np.nonzero(data.adjacency))]
    print(f"wrote {path}: x {data.x.shape[0]} x {data.x.shape[1]}, {data.n_envs} environments, true edges "
          f"{', '.join(edges) or 'none'}")
    return 0


def _cmd_fit(a: argparse.Namespace) -> int:
    from bayes_crl import plots
    from bayes_crl.estimator import LatentCausalModel

    run_dir = Path(a.out)
    _check_run_dir(run_dir, a.overwrite)  # before the (long) fit
    x, env, truth, kind = _load_data(a.data, a.env_column, a.env_file)
    model = LatentCausalModel(n_latents=a.latents, edge_prior=a.prior, noise=a.noise, mechanism=a.mechanism,
                              num_steps=a.steps, n_restarts=a.restarts, num_posterior_samples=a.posterior_samples,
                              progress=a.progress, device=a.device, random_state=a.seed)
    model.fit(x, env)
    if a.overwrite:
        _clear_previous_run(run_dir)  # only now: a failed fit leaves the previous results in place
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / MODEL_DIR, overwrite=a.overwrite)

    files: dict[str, Any] = {"model": MODEL_DIR}
    loo = None
    rows = _loglik_rows(env, a.loglik_rows, a.seed)
    if len(rows):
        dt = model.to_datatree(x[rows], env[rows], num_samples=a.posterior_samples, seed=a.seed)
        const = dt["constant_data"].to_dataset().assign(row_index=("obs", rows.astype(np.int64)))
        dt["constant_data"] = const
        loo = _loo_summary(dt)
    else:
        dt = model.to_datatree(num_samples=a.posterior_samples, seed=a.seed)
    post_path, post_format = write_datatree(dt, run_dir)
    files["posterior"] = os.path.relpath(post_path, run_dir)
    files["posterior_format"] = post_format
    figs = plots.write_report_figures(model, run_dir / FIGURES_DIR, data=truth)
    files["figures"] = [os.path.relpath(p, run_dir) for p in figs]
    files["summary"] = SUMMARY_MD

    data_info = {"path": os.path.abspath(a.data), "kind": kind, "env_column": a.env_column,
                 "n_rows": int(x.shape[0]), "n_obs_dims": int(x.shape[1]), "n_envs": int(model.n_envs_),
                 "loglik_rows": int(len(rows))}
    settings = {"n_latents": a.latents, "edge_prior": a.prior, "noise": a.noise, "mechanism": a.mechanism,
                "num_steps": a.steps, "n_restarts": a.restarts, "num_posterior_samples": a.posterior_samples,
                "random_state": a.seed}
    summary = _summarise_fit(model, data_info=data_info, settings=settings, truth=truth, x=x, env=env, loo=loo,
                             files=files)
    (run_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    text = render_summary(summary)
    (run_dir / SUMMARY_MD).write_text(text)
    print(text)
    print(f"run written to {run_dir}/")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from bayes_crl import plots
    from bayes_crl.estimator import LatentCausalModel
    from bayes_crl.simulate import LatentANMData

    run_dir = Path(a.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist.")
    sp = run_dir / SUMMARY_JSON
    if not sp.is_file():
        raise FileNotFoundError(f"'{sp}' does not exist; is '{run_dir}' a folder written by bayes-crl fit?")
    try:
        summary = json.loads(sp.read_text())
    except json.JSONDecodeError as exc:
        from bayes_crl._validation import BayesCRLValueError

        raise BayesCRLValueError(f"'{sp}' is not valid JSON ({exc}).") from None
    model = LatentCausalModel.load(run_dir / MODEL_DIR)
    figs = run_dir / FIGURES_DIR
    if not all((figs / f).is_file() for f in _FIGURES):
        truth = None
        dpath = summary.get("data", {}).get("path")
        if summary.get("recovery") and dpath and os.path.isfile(dpath):
            truth = LatentANMData.load(dpath)
        written = plots.write_report_figures(model, figs, data=truth)
        print(f"figures re-written: {', '.join(os.path.basename(p) for p in written)}", file=sys.stderr)
    if not (run_dir / SUMMARY_MD).is_file():
        (run_dir / SUMMARY_MD).write_text(render_summary(summary))
    print(render_summary(summary))
    return 0


# ----------------------------------------------------------------------------------------------------
# parser and entry point
# ----------------------------------------------------------------------------------------------------
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bayes-crl`` (its ``error`` raises instead of exiting)."""
    from bayes_crl.noise import NOISE_FAMILIES
    from bayes_crl.priors import PRIORS
    from bayes_crl.simulate.latent_anm import MECHANISMS
    from bayes_crl.simulate.latent_anm import NOISE_FAMILIES as SIM_NOISE

    p = _Parser(prog="bayes-crl", description="Bayesian causal representation learning from the command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{simulate,fit,report}", parser_class=_Parser)

    s = sub.add_parser("simulate", help="simulate a latent additive-noise causal model and save it as .npz",
                       description="Simulate a latent ANM across environments (bayes_crl.simulate_latent_anm) and "
                                   "save data and ground truth with LatentANMData.save.")
    s.add_argument("--latents", type=_positive_int, default=3, help="number of latents (default 3)")
    s.add_argument("--envs", type=_positive_int, default=30, help="number of environments (default 30)")
    s.add_argument("--rows-per-env", type=_positive_int, default=1000, help="rows per environment (default 1000)")
    s.add_argument("--obs-dims", type=_positive_int, default=10, help="observed dimensions (default 10)")
    s.add_argument("--graph", choices=["chain", "random"], default="chain", help="latent graph (default chain)")
    s.add_argument("--noise", choices=sorted(SIM_NOISE), default="gaussian", help="noise family (default gaussian)")
    s.add_argument("--mechanism", choices=list(MECHANISMS), default="nonlinear",
                   help="causal mechanisms (default nonlinear)")
    s.add_argument("--violate", type=int, nargs="*", metavar="LATENT",
                   help="latent indices whose incoming edges never vanish (breaks condition (iv))")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    s.add_argument("--out", required=True, help="output .npz file")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=_cmd_simulate)

    f = sub.add_parser("fit", help="fit a LatentCausalModel and write a run folder",
                       description="Fit bayes_crl.LatentCausalModel to a .npz (keys x and the environment key) "
                                   "or .csv file (an environment column, every other column numeric) and write "
                                   "summary, model, posterior DataTree and figures into --out.")
    f.add_argument("data", help="a .npz file (from 'bayes-crl simulate', or with arrays x and env), a .csv file, or "
                                "a .npy array of observations (memory-mapped: read on demand, for data larger than "
                                "memory) with --env-file")
    f.add_argument("--env-file", default=None, help="with a .npy data file: a .npy array of environment labels, one "
                                                    "per row")
    f.add_argument("--env-column", default="env", help="environment column (csv) or key (npz) (default env)")
    f.add_argument("--latents", type=_positive_int, default=3, help="number of latents (default 3)")
    f.add_argument("--prior", choices=sorted(PRIORS), default="horseshoe", help="edge prior (default horseshoe)")
    f.add_argument("--noise", choices=sorted(NOISE_FAMILIES), default="gaussian",
                   help="latent noise family (default gaussian)")
    f.add_argument("--mechanism", choices=["nonlinear", "linear"], default="nonlinear",
                   help="learned mechanisms (default nonlinear)")
    f.add_argument("--steps", type=_positive_int, default=4500, help="SVI steps (default 4500)")
    f.add_argument("--restarts", type=_positive_int, default=4, help="independent warm-ups (default 4)")
    f.add_argument("--posterior-samples", type=_positive_int, default=1000,
                   help="posterior draws for the summaries and the DataTree (default 1000)")
    f.add_argument("--loglik-rows", type=_nonneg_int, default=500,
                   help="rows (a random subset) with a log-likelihood in the DataTree and PSIS-LOO in the summary; "
                        "0 for none (default 500)")
    f.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    f.add_argument("--out", required=True, help="run folder (created; must be empty unless --overwrite)")
    f.add_argument("--overwrite", action="store_true", help="write into a non-empty run folder, replacing results")
    f.add_argument("--device", default="cpu",
                   help="where the fit computes: cpu, cuda, cuda:N or auto (a GPU where there is one; default cpu)")
    f.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show fit progress (a bar in a terminal, a plain line every 5 %% in a log; default: on)")
    f.set_defaults(func=_cmd_fit)

    r = sub.add_parser("report", help="print the summary of a run folder (re-writes missing figures)",
                       description="Load the model and summary.json of a run folder written by 'bayes-crl fit', "
                                   "re-write missing figures and print the Markdown summary.")
    r.add_argument("run_dir", help="run folder written by 'bayes-crl fit'")
    r.set_defaults(func=_cmd_report)
    return p


def _one_line(msg: Any) -> str:
    return " ".join(str(msg).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bayes-crl``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on bad input (one line ``error: ...`` on stderr), 1 if the fit fails.
    """
    from bayes_crl._errors import NotFittedError
    from bayes_crl._validation import BayesCRLValueError
    from bayes_crl.infer import NonFiniteLossError
    from bayes_crl.codec import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {_one_line(exc)} (see 'bayes-crl --help')", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            try:
                return args.func(args)
            finally:
                seen = set()
                for w in caught:
                    line = f"warning: {w.category.__name__}: {_one_line(w.message)}"
                    if line not in seen:
                        seen.add(line)
                        print(line, file=sys.stderr)
    except (BayesCRLValueError, CheckpointError, NotFittedError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
