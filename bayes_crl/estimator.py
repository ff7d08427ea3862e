"""``LatentCausalModel``: the scikit-learn-style surface over the Pyro model and the SVI loop."""
from __future__ import annotations

import contextlib
import time
import warnings
from numbers import Integral

import networkx as nx
import numpy as np
import torch
from sklearn.base import BaseEstimator

from bayes_crl._errors import DataWarning, IdentifiabilityWarning, NotFittedError
from bayes_crl._validation import (BayesCRLValueError, check_array_2d, check_bool, check_env, check_option,
                                   check_random_state, check_scalar, check_seen_env, check_seen_inputs)
from bayes_crl.device import on_device, resolve_device
from bayes_crl.infer import FitResult, encode, fit_svi
from bayes_crl.noise import NOISE_FAMILIES, get_noise_family
from bayes_crl.posterior import edge_inclusion, edge_orientation, inclusion_context, posterior_draws, to_networkx
from bayes_crl.priors import PRIORS, EdgePrior, get_prior
from bayes_crl.rows import ArrayRows, check_out_of_core, column_moments, is_out_of_core

__all__ = ["LatentCausalModel"]

_NAME = "LatentCausalModel"
MIN_ROWS_PER_ENV = 20
AUTO_ORDER_DRAWS = 100
AUTO_ORDER_DRAWS_MAX_LATENTS = 7


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's and the BLAS libraries' thread counts set to ``n`` inside the block (nothing changed for None)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


class LatentCausalModel(BaseEstimator):
    """Bayesian latent causal model fitted by amortized SVI.

    Recovers latent causal variables ``z`` (up to permutation and scaling), the latent causal graph and
    posterior edge inclusion probabilities from observations ``x`` collected in several environments.

    Parameters
    ----------
    n_latents : int, default 3
        Number of latent causal variables ``l``.
    edge_prior : {"horseshoe", "spike_slab", "laplace", "none"} or EdgePrior, default "horseshoe"
        Sparsity prior on the edge strengths (see :mod:`bayes_crl.priors`). ``"spike_slab"`` reports the exact
        posterior probability of its discrete edge indicators given the latents (Bayesian model averaging over
        every parent set, :mod:`bayes_crl.parent_sets`; a child with more than 12 candidate parents gets the
        variational posterior of :func:`bayes_crl.parent_sets.variational_inclusion`; calibrated on data drawn
        from the prior, and as confident as the latents allow: on latents recovered at correlations below about
        0.95 it reports their mixing as edges, BENCHMARKS.md "Edge posterior"). The horseshoe, Laplace and flat
        priors have no indicator: they report the posterior probability that an edge explains
        at least ``min_effect`` of its child's variance. Both kinds carry the uncertainty of the edge's
        orientation (``n_order_draws``). The horseshoe is the default because its recovery of the latents is
        the most measured (BENCHMARKS.md, "Edge posterior").
    noise : {"gaussian", "laplace", "gamma"}, default "gaussian"
        Family of the latent noise ``n_i | u``.
    mechanism : {"nonlinear", "linear"}, default "nonlinear"
        ``g_i^u(z) = sum_j W[u, j, i] phi_ji(z_j)`` with learned nonlinear ``phi`` or the identity.
    num_steps : int, default 4500
        SVI steps of the kept run (its warm-up included; the final latent-only refit adds 15 %). 4500 against
        6000 steps: the same MPC on the outside data and the project's simulator, better outside graphs, one
        simulator fit of eight worse, a quarter less time (BENCHMARKS.md, "Fit time and where it goes").
    batch_size : int, default 512
    learning_rate : float, default 5e-3
    hidden : int, default 64
        Width of encoder/decoder layers.
    order_search : bool, default True
        Search the causal order of the latents after the warm-ups, again at 60 % of the steps and once more on
        the final latents (see :mod:`bayes_crl.order`); after that last search (and, with ``unmix``, a last
        identification and centring) the latent causal model (mechanisms, noise, edge posterior) is refitted for
        15 % of ``num_steps`` with the encoder and decoder held fixed.
    warmup_frac : float, default 0.3
        Fraction of ``num_steps`` spent in each warm-up before restart selection and order search.
    n_restarts : int, default 4
        Independent warm-ups; the order search sums the order scores of all of them. The one best on both
        counts is kept: the lowest sum of its rank by negative ELBO (its training loss at the end of the
        warm-up) and its rank by the sparsity of its unmixed coordinates, among the warm-ups whose latents
        agree with the others' (BENCHMARKS.md, "Restart selection").
    unmix : bool, default True
        After the warm-ups (and again at 60 % of the steps and on the final latents when ``order_search``)
        re-express the latents in the linear coordinates whose per-environment partial correlations are
        sparsest (:mod:`bayes_crl.unmix`), then centre the strengths on zero in the causal order found
        (:func:`bayes_crl.unmix.centring_map`). The ELBO is nearly flat along linear maps of the latents; this
        is the sparsity (Markov property and condition (iv)) that identifies them. On the five chain datasets
        of the benchmark the unmixing raised the MPC of the kept warm-up from a median 0.85 to 0.97, and the
        centring the final MPC from a median 0.940 to 0.963 (BENCHMARKS.md). The search after the warm-ups
        starts from many random maps; the later ones descend from the current coordinates only
        (:func:`bayes_crl.stages.identify` with one start): on fitted latents a many-start search often jumps
        to a wrong basin of the sparsity criterion, which nonlinear mechanisms bias (BENCHMARKS.md).
    min_obs_scale : float, default 0.1
        Floor of the decoder noise scale, in units of the standardised ``x``: keeps the prior's say in the
        ELBO when the observation noise is tiny (with a free scale the fit becomes a near-deterministic
        autoencoder whose latents drift from the identified ones).
    standardize : bool, default True
        Standardise the columns of ``x`` before fitting (the scaling is stored and reapplied).
    num_posterior_samples : int, default 1000
        Draws used for the fitted posterior summaries.
    n_order_draws : int or None, default None
        Environment-level Bayesian bootstrap draws of the causal order of the fitted latents
        (:func:`bayes_crl.order.bootstrap_orders`), each paired with posterior draws of the strengths
        (:func:`bayes_crl.posterior.edge_indicator_draws`): an edge ``j -> i`` is included in a draw when the pair
        is adjacent by the prior's rule, with the environments reweighted by the bootstrap weights, and ``j``
        precedes ``i`` in that draw's order. ``None``: 100 draws for up to 7 latents, 0 beyond (the cost grows as
        ``l 2^l``: per 100 draws on 30 x 1000 rows, about 1 s at l = 3, 9 s at l = 5, 84 s at l = 7, 240 s at
        l = 8; BENCHMARKS.md). ``0``: the probabilities are conditional on
        the fitted order and on the environments' weights, as the variational posterior alone gives them
        (effectively 0 or 1 with thousands of rows). On 8 fits of the identifiable benchmark settings (chain l = 3,
        random l = 5, ``benchmarks/rescore.py``) the bootstrap draws gave edge AUROC 0.917 and Brier 0.080, the
        conditional probabilities 0.818 and 0.096 (BENCHMARKS.md).
    progress : bool, default False
        Show a progress bar during ``fit``.
    n_threads : int or None, default 1
        Threads of torch and of the BLAS libraries during ``fit`` (restored afterwards). With a fixed count the
        result of a fit does not depend on the process's thread setting: the order of floating-point
        additions in a matrix product changes with the thread count, and a fit can then settle in another basin
        (2 against 1 thread moved the MPC of outside data by up to 0.08, BENCHMARKS.md). One thread costs little:
        the SVI steps are dominated by many small operations that threads do not share (a step is at most 10 %
        faster with 2; BENCHMARKS.md, "Fit time and where it goes"). ``None``: the process's settings.
    device : str or torch.device, default "cpu"
        Where ``fit`` (its SVI steps and encoder passes), the posterior summary's passes over the data and
        ``transform`` compute: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (a GPU where CUDA is available,
        else the CPU). The data stay in CPU memory (or on disk) and move to the device a minibatch or chunk at a
        time; the fitted modules are kept on the CPU (:mod:`bayes_crl.device`). A CUDA device this machine does
        not have is an error at ``fit``/``transform``, not a silent fallback.
    strict : bool, default False
        Raise instead of warning when the data cannot meet the identifiability conditions.
    random_state : int, numpy Generator or None, default None

    Attributes
    ----------
    edge_inclusion_ : ndarray (l, l)
        Posterior edge inclusion probabilities, ``[parent, child]``: the fraction of posterior draws whose graph
        (a DAG) holds the edge (see ``n_order_draws``).
    edge_orientation_ : ndarray (l, l)
        ``[j, i]``: probability that ``z_j`` precedes ``z_i`` in the causal order (environment bootstrap; 0/1
        from the fitted order when ``n_order_draws=0``).
    edge_weight_ : ndarray (E, l, l)
        Posterior mean strengths per environment.
    latent_names_ : tuple[str, ...]
    env_labels_ : list
        The environment labels seen in ``fit`` (in code order).
    loss_ : ndarray (num_steps,)
        Negative ELBO per row along the fit.
    fit_seconds_ : float
    """

    def __init__(self, n_latents: int = 3, *, edge_prior: str | EdgePrior = "horseshoe", noise: str = "gaussian",
                 mechanism: str = "nonlinear", num_steps: int = 4500, batch_size: int = 512,
                 learning_rate: float = 5e-3, hidden: int = 64, order_search: bool = True, warmup_frac: float = 0.3,
                 n_restarts: int = 4, unmix: bool = True, min_obs_scale: float = 0.1,
                 standardize: bool = True, num_posterior_samples: int = 1000, n_order_draws: int | None = None,
                 progress: bool = False, n_threads: int | None = 1, device: str = "cpu",
                 strict: bool = False, random_state=None):
        self.n_latents = n_latents
        self.edge_prior = edge_prior
        self.noise = noise
        self.mechanism = mechanism
        self.num_steps = num_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.hidden = hidden
        self.order_search = order_search
        self.warmup_frac = warmup_frac
        self.n_restarts = n_restarts
        self.unmix = unmix
        self.min_obs_scale = min_obs_scale
        self.standardize = standardize
        self.num_posterior_samples = num_posterior_samples
        self.n_order_draws = n_order_draws
        self.progress = progress
        self.n_threads = n_threads
        self.device = device
        self.strict = strict
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        check_scalar(self.n_latents, "n_latents", Integral, _NAME, min_val=1)
        if not isinstance(self.edge_prior, EdgePrior):
            check_option(self.edge_prior, "edge_prior", sorted(PRIORS), _NAME)
        check_option(self.noise, "noise", sorted(NOISE_FAMILIES), _NAME)
        check_option(self.mechanism, "mechanism", ["linear", "nonlinear"], _NAME)
        check_scalar(self.num_steps, "num_steps", Integral, _NAME, min_val=1)
        check_scalar(self.batch_size, "batch_size", Integral, _NAME, min_val=1)
        check_scalar(self.learning_rate, "learning_rate", float, _NAME, min_val=0, include_min=False)
        check_scalar(self.hidden, "hidden", Integral, _NAME, min_val=1)
        check_scalar(self.n_restarts, "n_restarts", Integral, _NAME, min_val=1)
        check_scalar(self.min_obs_scale, "min_obs_scale", float, _NAME, min_val=0)
        check_scalar(self.warmup_frac, "warmup_frac", float, _NAME, min_val=0, max_val=1, include_max=False)
        check_scalar(self.num_posterior_samples, "num_posterior_samples", Integral, _NAME, min_val=1)
        if self.n_order_draws is not None:
            check_scalar(self.n_order_draws, "n_order_draws", Integral, _NAME, min_val=0)
        if self.n_threads is not None:
            check_scalar(self.n_threads, "n_threads", Integral, _NAME, min_val=1)
        for b in ("order_search", "unmix", "standardize", "progress", "strict"):
            check_bool(getattr(self, b), b, _NAME)
        resolve_device(self.device, "device", _NAME)

    def _check_fitted(self) -> None:
        if not hasattr(self, "result_"):
            raise NotFittedError(f"This {_NAME} instance is not fitted yet. Call 'fit' with appropriate arguments "
                                 "before using this estimator.")

    @staticmethod
    def _split_frame(x, env):
        """A pandas DataFrame with the environment given by column name -> (the other columns, that column)."""
        if isinstance(env, str) and hasattr(x, "columns") and hasattr(x, "drop"):
            if env not in x.columns:
                raise BayesCRLValueError(f"The 'env' argument names a column, {env!r}, that the DataFrame 'x' does "
                                         f"not have. Columns: {list(x.columns)[:20]}.")
            return x.drop(columns=[env]).to_numpy(dtype=np.float64), x[env].to_numpy()
        return x, env

    def _prepare(self, x, env, fitting: bool):
        x, env = self._split_frame(x, env)
        if is_out_of_core(x):  # read on demand (bayes_crl.rows), never converted whole
            check_out_of_core(x, "x")
            if fitting:
                codes, labels = check_env(env, x.shape[0], "env")
                return x, codes, labels
            return x, check_seen_env(env, x.shape, self.env_labels_, self.n_features_in_), None
        if fitting:
            x = check_array_2d(x, "x")
            codes, labels = check_env(env, x.shape[0], "env")
            return x, codes, labels
        x, codes = check_seen_inputs(x, env, self.env_labels_, self.n_features_in_)
        return x, codes, None

    def _scale(self, x) -> torch.Tensor | ArrayRows:
        if is_out_of_core(x):
            return ArrayRows(x, self.x_mean_, self.x_scale_)
        return torch.as_tensor((x - self.x_mean_) / self.x_scale_, dtype=torch.float32)

    # ------------------------------------------------------------------ fit
    def fit(self, x, env, y=None, *, checkpoint_dir: str | None = None, resume: bool = False,
            main_phase=None) -> "LatentCausalModel":
        """Fit the model.

        Parameters
        ----------
        x : array_like (N, d) or pandas.DataFrame
            Observations.
        env : array_like (N,) or str
            Environment label of each row (any hashable labels), or the name of the column of the DataFrame
            ``x`` that holds them (that column is then not an observation; ``transform`` and ``score`` take
            the same form).
        y : ignored
        checkpoint_dir : str, optional
            Folder for periodic checkpoints (atomic writes, safetensors + JSON manifest with SHA-256).
        resume : bool, default False
            Continue an interrupted fit from ``checkpoint_dir`` (same data and settings); the result equals
            that of an uninterrupted fit.
        main_phase : callable, optional
            Runs the main SVI phase instead of the built-in loop: :class:`bayes_crl.distributed.LightningSteps`
            runs it on PyTorch Lightning over several processes, GPUs or nodes (``fit_svi``'s ``main_phase``).

        Returns
        -------
        self
        """
        self._validate_params()
        x, codes, labels = self._prepare(x, env, fitting=True)
        n, d = x.shape
        l, e = self.n_latents, len(labels)
        if l > d:
            raise BayesCRLValueError(f"The 'n_latents' parameter of {_NAME} must be <= the number of columns of x "
                                     f"({d}). Got {l} instead.")
        if e < 2:
            raise BayesCRLValueError("The 'env' argument must hold at least 2 environments: with a single "
                                     "environment nothing is identifiable. Got 1.")
        if e < 2 * l + 1:
            msg = (f"{e} environments for {l} latents: the identifiability theory needs at least 2l+1 = {2 * l + 1} "
                   "environments whose noise parameters differ; latents may be recovered only up to mixing.")
            if self.strict:
                raise BayesCRLValueError(msg)
            warnings.warn(msg, IdentifiabilityWarning, stacklevel=2)
        counts = np.bincount(codes, minlength=e)
        if counts.min() < MIN_ROWS_PER_ENV:
            few = [labels[k] for k in np.flatnonzero(counts < MIN_ROWS_PER_ENV)]
            warnings.warn(f"Environments {few[:5]!r}{'...' if len(few) > 5 else ''} have fewer than "
                          f"{MIN_ROWS_PER_ENV} rows (smallest: {counts.min()}); their noise parameters and strengths "
                          "will be poorly determined. Merge or drop them if they are not distinct conditions.",
                          DataWarning, stacklevel=2)
        mean, sd = column_moments(x, "x") if is_out_of_core(x) else (x.mean(0), x.std(0))
        const = np.flatnonzero(sd == 0)
        if len(const) == d:
            raise BayesCRLValueError("The 'x' argument has only constant columns: there is nothing to learn.")
        if len(const):
            warnings.warn(f"Columns {const[:10].tolist()} of x are constant; they carry no information and are "
                          "kept unscaled.", DataWarning, stacklevel=2)
        rng = check_random_state(self.random_state)
        seed = int(rng.integers(2**31 - 1))
        self.x_mean_ = mean if self.standardize else np.zeros(d)
        sd = sd if self.standardize else np.ones(d)
        self.x_scale_ = np.where(sd > 0, sd, 1.0)
        self.n_features_in_ = d
        self.env_labels_ = list(labels)
        self.n_envs_ = e
        xt, et = self._scale(x), torch.as_tensor(codes)
        prior, noise = get_prior(self.edge_prior), get_noise_family(self.noise)
        t0 = time.perf_counter()
        with _threads(self.n_threads):
            self.result_: FitResult = fit_svi(
                xt, et, n_latents=l, n_envs=e, prior=prior, noise=noise, num_steps=self.num_steps,
                batch_size=min(self.batch_size, n), lr=self.learning_rate, warmup_frac=self.warmup_frac,
                order_search=self.order_search, n_restarts=self.n_restarts, unmix=self.unmix,
                min_obs_scale=self.min_obs_scale, nonlinear=self.mechanism == "nonlinear", hidden=self.hidden,
                seed=seed, progress=self.progress, checkpoint_dir=checkpoint_dir, resume=resume,
                main_phase=main_phase, device=self.device)
            self.fit_seconds_ = time.perf_counter() - t0
            self.loss_ = self.result_.losses
            self.latent_names_ = tuple(f"z{i}" for i in range(l))
            once = getattr(main_phase, "once", None)  # several processes: summarise in one, share the result
            summary = self._summary(xt, et, seed) if once is None else once(lambda: self._summary(xt, et, seed))[0]
            for name, value in summary.items():
                setattr(self, name, value)
        return self

    def _summary(self, xt: torch.Tensor, et: torch.Tensor, seed: int) -> dict:
        """The fitted posterior summaries, by attribute name."""
        ctx = inclusion_context(self.result_, xt, et, n_order_draws=self._n_order_draws(), seed=seed,
                                device=resolve_device(self.device, "device", _NAME))
        draws = posterior_draws(self.result_, self.num_posterior_samples, seed)
        return {"_inclusion_context": ctx, "edge_orientation_": edge_orientation(ctx),
                "edge_inclusion_": edge_inclusion(self.result_, ctx, self.num_posterior_samples, seed),
                "edge_weight_": draws["weight"].mean(0), "_weight_draws": draws["weight"]}

    def _n_order_draws(self) -> int:
        if not self.order_search or self.n_latents < 2:
            return 0
        if self.n_order_draws is None:
            return AUTO_ORDER_DRAWS if self.n_latents <= AUTO_ORDER_DRAWS_MAX_LATENTS else 0
        return int(self.n_order_draws)

    # ------------------------------------------------------------------ outputs
    def transform(self, x, env) -> np.ndarray:
        """Posterior-mean latents ``E_q[z | x, u]`` (N, n_latents), in the learned causal order."""
        self._check_fitted()
        x, codes, _ = self._prepare(x, env, fitting=False)
        net = on_device(self.result_.net, resolve_device(self.device, "device", _NAME))
        return encode(net, self._scale(x), torch.as_tensor(codes)).numpy().astype(np.float64)

    def fit_transform(self, x, env, y=None) -> np.ndarray:
        return self.fit(x, env).transform(x, env)

    def sample_posterior(self, num_samples: int = 1000, *, seed: int = 0) -> dict[str, np.ndarray]:
        """Draws of the global edge variables: the prior's sites (e.g. ``edge_tau``, ``edge_lambda``,
        ``edge_weight``) and the effective strengths ``weight`` (S, E, l, l)."""
        self._check_fitted()
        check_scalar(num_samples, "num_samples", Integral, "sample_posterior", min_val=1)
        return posterior_draws(self.result_, num_samples, seed)

    def to_networkx(self, threshold: float = 0.5) -> nx.DiGraph:
        """Graph of the edges with inclusion probability >= ``threshold``; edge attributes ``probability``,
        ``weight`` (mean over environments of the posterior mean), ``weight_per_env``, ``weight_ci``
        (90 % credible interval per environment) and ``in_fitted_order`` (False for an edge the environment
        bootstrap reversed against the fitted order; its strengths are then ``nan``, see
        :func:`bayes_crl.posterior.to_networkx`)."""
        self._check_fitted()
        check_scalar(threshold, "threshold", float, "to_networkx", min_val=0, max_val=1)
        return to_networkx(self.edge_inclusion_, self.edge_weight_, names=self.latent_names_, threshold=threshold,
                           weight_draws=self._weight_draws, allowed=self.result_.net.mask.numpy().astype(bool))

    def most_probable_graphs(self, k: int = 5, *, num_samples: int | None = None) -> list[tuple[nx.DiGraph, float]]:
        """The ``k`` most probable graphs under the posterior draws, as ``(networkx.DiGraph, mass)`` pairs.

        Edges carry ``probability`` (the marginal inclusion probability) and ``weight`` attributes.
        """
        self._check_fitted()
        check_scalar(k, "k", Integral, "most_probable_graphs", min_val=1)
        from bayes_crl.posterior import most_probable_graphs

        out = []
        for adj, mass in most_probable_graphs(self.result_, self._inclusion_context, k,
                                              num_samples or self.num_posterior_samples):
            g = to_networkx(np.where(adj > 0, np.maximum(self.edge_inclusion_, 1e-12), 0.0), self.edge_weight_,
                            names=self.latent_names_, threshold=1e-12, allowed=self.result_.net.mask.numpy().astype(bool))
            for u, v in g.edges:
                j, i = self.latent_names_.index(u), self.latent_names_.index(v)
                g.edges[u, v]["probability"] = float(self.edge_inclusion_[j, i])
            out.append((g, mass))
        return out

    def to_datatree(self, x=None, env=None, *, num_samples: int = 1000, seed: int = 0, **kw):
        """Posterior as an ArviZ ``xarray.DataTree`` (see :func:`bayes_crl.datatree.to_datatree`): groups
        ``posterior`` (dims chain, draw, env, parent, child, latent), ``fit`` (loss history) and, given
        ``x``/``env``, ``observed_data`` and ``log_likelihood`` (for ``arviz_stats.loo``)."""
        self._check_fitted()
        from bayes_crl.datatree import to_datatree

        return to_datatree(self, x, env, num_samples=num_samples, seed=seed, **kw)

    def to_netcdf(self, path, x=None, env=None, *, num_samples: int = 1000, seed: int = 0, overwrite: bool = False,
                  **kw) -> str:
        """Write :meth:`to_datatree` as one netCDF-4 file (``h5netcdf``) that ``xarray.open_datatree`` and ArviZ
        open directly; refuses to replace an existing file unless ``overwrite=True``. Returns the path."""
        import os

        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"The 'path' argument of to_netcdf names an existing file, {str(path)!r}; pass "
                                  "overwrite=True to replace it.")
        self.to_datatree(x, env, num_samples=num_samples, seed=seed, **kw).to_netcdf(path, engine="h5netcdf")
        return str(path)

    def identifiability_report(self, *, threshold: float = 0.5, vanish_tol: float | None = None, prob: float = 0.9):
        """What the fitted posterior says is and is not identified (see :mod:`bayes_crl.identifiability`)."""
        self._check_fitted()
        from bayes_crl.identifiability import identifiability_report

        return identifiability_report(self, threshold=threshold, vanish_tol=vanish_tol, prob=prob)

    def save(self, path: str, *, overwrite: bool = False) -> str:
        """Save the fitted model to the folder ``path`` (safetensors + JSON; loading never unpickles).
        Refuses to overwrite an existing model unless ``overwrite=True``."""
        from bayes_crl.model_file import save_model

        return save_model(self, path, overwrite=overwrite)

    def score(self, x, env, y=None, *, num_particles: int = 16) -> float:
        """Mean held-out ELBO per row of ``x`` (higher is better), the scikit-learn ``score`` of this estimator.

        The importance-weighted bound of :func:`bayes_crl.heldout.heldout_elbo` with ``num_particles`` draws,
        averaged over rows, in the user's units of ``x``. ``env`` takes the ``y`` slot of scikit-learn's
        ``score(X, y)``, so model selection tools (``GridSearchCV``, ``cross_val_score``) pass the environments
        through; give them a split that keeps every environment on the training side.
        """
        from bayes_crl.heldout import heldout_elbo

        return float(np.mean(heldout_elbo(self, x, env, num_particles=num_particles)))

    @classmethod
    def load(cls, path: str) -> "LatentCausalModel":
        """Load a model written by :meth:`save`; ``transform`` and the posterior summaries are exactly equal."""
        from bayes_crl.model_file import load_model

        return load_model(path, cls)

    @property
    def order_(self) -> tuple:
        """Slot permutation chosen by the order search (for diagnostics)."""
        self._check_fitted()
        return self.result_.order

