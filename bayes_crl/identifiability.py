"""Which latents do the data support identifying? A check of the theory's conditions on a fitted posterior.

The identifiability theory (Liu et al., Theorems 2.1 and 2.5; see ``MODEL.md``) needs

- (iii) enough environments: at least ``2l + 1`` whose noise parameters differ, and
- (iv) for every edge ``z_j -> z_i`` an environment where that influence vanishes.

Condition (iv) is checked per latent (partial identifiability, Theorem 2.5): a latent is identified when it
is a **root** or when **every** incoming edge vanishes in some environment, whatever happens to its
parents; otherwise it stays mixed with the parents whose influence never vanishes.

From a posterior this module decides, for each latent ``i``:

- its parents: the ``j`` with inclusion probability ``P(j -> i) >= threshold``;
- for each parent, the environments ``u`` where the influence *vanishes according to the posterior*: the
  equal-tailed ``prob`` credible interval of ``W[u, j, i]`` contains 0, or (when ``vanish_tol`` is given)
  ``|E[W[u, j, i]]| < vanish_tol``. An interval containing 0 means the data do not rule out a vanishing
  influence there; a poorly fitted, very uncertain posterior makes everything look vanishing, so read the
  report together with the fit's diagnostics. For point-estimate priors (``"laplace"``, ``"none"``) the
  intervals have zero width: pass ``vanish_tol``.
- its status: ``"root"``, ``"vanishing"`` (every parent vanishes somewhere) or ``"not_identified"``;
  ``identified`` is ``status != "not_identified"`` and condition (iii) (``n_envs >= 2l + 1``).

How far to trust ``"vanishing"``: the test is permissive. Among 30-40 environments some interval of a fitted
strength contains 0 whatever the truth, and the fitted per-environment strengths follow the true ones only
loosely. On the benchmark (BENCHMARKS.md, "The identifiability report against the truth") it named none of the
16 latents whose (iv) fails in truth (the non-roots of the seed authors' SuaVE data, the simulator's violated
nodes); the report says so in a caveat whenever a latent passes this way. A ``"not_identified"`` verdict
(some strength credibly non-zero in every environment) and the root and environment-count verdicts are the
informative ones. For a latent without children the data cannot test (iv) at all: ``z_i - c phi_ji(z_j)`` is a
model of the same class with the same likelihood, and ``c`` equal to the edge's strength in any one environment
makes the edge vanish there; the report adds a caveat naming such latents.

What condition (iv) does not settle, and the report states as a caveat: with **linear mechanisms and Gaussian
noise** (``mechanism="linear", noise="gaussian"``) the model cannot tell two adjacent latents from a linear
mixture of them. Every per-environment distribution of the pair is then Gaussian, a two-node linear model in any
linear coordinates of the pair fits it exactly, and the mixture that makes the edge vanish in some *other*
environment satisfies (iv) as well. Such a pair is identified only as far as the rest of the graph's sparsity
constrains it; nonlinear mechanisms or non-Gaussian noise are what separate it (the additive-noise asymmetry).
The benchmark's worst latents are adjacent pairs mixed this way, with the default nonlinear model too
(``BENCHMARKS.md``; ``benchmarks/pair_mixing.py``).

The same holds for **roots**, so the root guarantee of Theorem 2.5 does not carry over to linear-Gaussian
latents: a root shifted along a later latent (``z_r + c z_k``) can leave every environment's likelihood
unchanged (for a complete graph, along every later latent), and then only condition (iv) of its outgoing edges
(through the sparsity it creates) or non-Gaussian noise tells the shifted root from the true one. On four
outside data sets (and along three of four shifts on a fifth) the likelihood is flat to 1e-4 nats per row along
such shifts (BENCHMARKS.md, "Which roots the likelihood identifies"; ``benchmarks/root_likelihood.py``).

:func:`assess_identifiability` is the pure function on arrays; :func:`identifiability_report` applies it
to a fitted :class:`~bayes_crl.LatentCausalModel`.
"""
from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bayes_crl._validation import BayesCRLValueError, check_bool, check_scalar

if TYPE_CHECKING:  # pragma: no cover
    from bayes_crl.estimator import LatentCausalModel

__all__ = ["IdentifiabilityReport", "LatentIdentifiability", "ParentEvidence", "assess_identifiability",
           "identifiability_report", "STATUSES"]

STATUSES = ("root", "vanishing", "not_identified")


def _plain(v: Any) -> Any:
    """A JSON-friendly version of an environment label."""
    if isinstance(v, np.generic):
        v = v.item()
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


@dataclass(frozen=True)
class ParentEvidence:
    """Evidence that the influence of one parent on a latent vanishes somewhere.

    Attributes
    ----------
    parent : str
    inclusion : float
        Posterior inclusion probability of the edge ``parent -> child``.
    vanishing_envs : tuple
        Environment labels where the influence vanishes according to the posterior.
    min_abs_mean : float
        Smallest ``|posterior mean strength|`` over environments.
    min_abs_mean_env : hashable
        The environment where it is attained.
    """

    parent: str
    inclusion: float
    vanishing_envs: tuple
    min_abs_mean: float
    min_abs_mean_env: Hashable

    @property
    def vanishes(self) -> bool:
        """Whether the influence vanishes in at least one environment."""
        return len(self.vanishing_envs) > 0

    def to_dict(self) -> dict:
        return {"parent": self.parent, "inclusion": self.inclusion,
                "vanishing_envs": [_plain(v) for v in self.vanishing_envs], "vanishes": self.vanishes,
                "min_abs_mean": self.min_abs_mean, "min_abs_mean_env": _plain(self.min_abs_mean_env)}


@dataclass(frozen=True)
class LatentIdentifiability:
    """Per-latent outcome.

    Attributes
    ----------
    name : str
    status : {"root", "vanishing", "not_identified"}
        Condition (iv) for this latent (see the module docstring).
    identified : bool
        ``status != "not_identified"`` and enough environments (condition (iii)).
    parents : tuple of ParentEvidence
        One entry per parent (inclusion probability >= threshold), in latent order.
    message : str
        One plain-language sentence.
    """

    name: str
    status: str
    identified: bool
    parents: tuple[ParentEvidence, ...]
    message: str

    @property
    def parent_names(self) -> tuple[str, ...]:
        return tuple(p.parent for p in self.parents)

    @property
    def vanishing_envs(self) -> dict[str, tuple]:
        """``{parent: environments where its influence vanishes}``."""
        return {p.parent: p.vanishing_envs for p in self.parents}

    @property
    def non_vanishing_parents(self) -> tuple[str, ...]:
        """Parents whose influence never vanishes (the latents this one stays mixed with)."""
        return tuple(p.parent for p in self.parents if not p.vanishes)

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "identified": self.identified,
                "parents": [p.to_dict() for p in self.parents],
                "non_vanishing_parents": list(self.non_vanishing_parents), "message": self.message}


@dataclass(frozen=True)
class IdentifiabilityReport:
    """What the posterior says about the identifiability conditions, latent by latent.

    Attributes
    ----------
    latents : tuple of LatentIdentifiability
        In latent (slot) order.
    n_latents, n_envs, min_envs : int
        ``min_envs = 2 * n_latents + 1`` (condition (iii)).
    enough_envs : bool
        ``n_envs >= min_envs``.
    threshold : float
        Inclusion probability from which an edge counts as present.
    prob : float
        Mass of the credible intervals.
    vanish_tol : float or None
    summary : str
        Plain-language summary (also ``str(report)``), caveats included.
    caveats : tuple of str
        What the conditions checked here do not settle for this model (see the module docstring).
    """

    latents: tuple[LatentIdentifiability, ...]
    n_latents: int
    n_envs: int
    min_envs: int
    enough_envs: bool
    threshold: float
    prob: float
    vanish_tol: float | None
    summary: str
    caveats: tuple[str, ...] = ()

    @property
    def identified(self) -> tuple[str, ...]:
        """Names of the latents the data support identifying."""
        return tuple(t.name for t in self.latents if t.identified)

    @property
    def not_identified(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.latents if not t.identified)

    def __getitem__(self, name: str) -> LatentIdentifiability:
        for t in self.latents:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        """Plain Python types (JSON-serialisable)."""
        return {"n_latents": self.n_latents, "n_envs": self.n_envs, "min_envs": self.min_envs,
                "enough_envs": self.enough_envs, "threshold": self.threshold, "prob": self.prob,
                "vanish_tol": self.vanish_tol, "identified": list(self.identified),
                "not_identified": list(self.not_identified), "latents": [t.to_dict() for t in self.latents],
                "summary": self.summary, "caveats": list(self.caveats)}

    def __str__(self) -> str:
        return self.summary


def _join(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _latent_message(name: str, status: str, parents: Sequence[ParentEvidence], n_envs: int, threshold: float,
                    enough: bool) -> str:
    verdict = f"{name} is identified" if enough else f"{name} would be identified with enough environments"
    if status == "root":
        return f"{verdict}: it is a root (no incoming edge with inclusion probability >= {threshold:g})."
    if status == "vanishing":
        parts = []
        for p in parents:
            k = len(p.vanishing_envs)
            first = repr(_plain(p.vanishing_envs[0]))
            parts.append(f"{p.parent} -> {name} in {k} of {n_envs} environment{'s' if n_envs != 1 else ''} "
                         + (f"({first})" if k == 1 else f"(e.g. {first})"))
        return f"{verdict}: every incoming influence vanishes somewhere: {'; '.join(parts)}."
    bad = [p.parent for p in parents if not p.vanishes]
    noun = "influence" if len(bad) == 1 else "influences"
    verb = "never vanishes" if len(bad) == 1 else "never vanish"
    return (f"{name} is not identified: the {noun} of {_join(bad)} on it {verb} in any of the {n_envs} "
            f"environments; it may stay mixed with {_join(bad)}.")


def assess_identifiability(inclusion: Any, weight_draws: Any, n_envs: int, names: Sequence[str] | None = None,
                           threshold: float = 0.5, *, prob: float = 0.9, vanish_tol: float | None = None,
                           env_labels: Sequence[Hashable] | None = None,
                           linear_gaussian: bool = False) -> IdentifiabilityReport:
    """Check the identifiability conditions on posterior arrays (pure function).

    Parameters
    ----------
    inclusion : array_like (l, l)
        Edge inclusion probabilities ``[parent, child]``.
    weight_draws : array_like (S, E, l, l)
        Posterior draws of the per-environment strengths ``W[u, parent, child]`` (``S = 1`` for a point
        estimate; a 3-D ``(E, l, l)`` array is taken as one draw).
    n_envs : int
        Number of environments ``E`` (must match ``weight_draws``).
    names : sequence of str, optional
        Latent names (default ``z0..z{l-1}``).
    threshold : float, default 0.5
        An edge is present when its inclusion probability is ``>= threshold``.
    prob : float, default 0.9
        Mass of the equal-tailed credible interval used for "vanishes".
    vanish_tol : float, optional
        Also count the influence as vanishing in ``u`` when ``|mean_s W[s, u, j, i]| < vanish_tol``.
    env_labels : sequence of hashable, optional
        Labels of the environments for the report (default ``0..E-1``).
    linear_gaussian : bool, default False
        The posterior comes from a model with linear mechanisms and Gaussian noise: add the caveat that its
        adjacent latents can stay mixed with each other whatever (iv) says (module docstring).

    Returns
    -------
    IdentifiabilityReport
    """
    p = np.asarray(inclusion, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise BayesCRLValueError(f"'inclusion' must be a square (l, l) matrix [parent, child]. Got shape {p.shape}.")
    l = p.shape[0]
    w = np.asarray(weight_draws, dtype=np.float64)
    if w.ndim == 3:
        w = w[None]
    if w.ndim != 4 or w.shape[2:] != (l, l) or w.shape[0] == 0:
        raise BayesCRLValueError(f"'weight_draws' must have shape (n_draws, n_envs, {l}, {l}). Got "
                                 f"{np.shape(weight_draws)}.")
    e = check_scalar(n_envs, "n_envs", numbers.Integral, "assess_identifiability", min_val=1)
    if w.shape[1] != e:
        raise BayesCRLValueError(f"'weight_draws' holds {w.shape[1]} environments but 'n_envs' is {e}.")
    if not (np.isfinite(p).all() and np.isfinite(w).all()):
        raise BayesCRLValueError("'inclusion' and 'weight_draws' must contain only finite values.")
    threshold = check_scalar(threshold, "threshold", float, "assess_identifiability", min_val=0, max_val=1)
    prob = check_scalar(prob, "prob", float, "assess_identifiability", min_val=0, max_val=1, include_min=False,
                        include_max=False)
    if vanish_tol is not None:
        vanish_tol = check_scalar(vanish_tol, "vanish_tol", float, "assess_identifiability", min_val=0)
    linear_gaussian = check_bool(linear_gaussian, "linear_gaussian", "assess_identifiability")
    names = [f"z{i}" for i in range(l)] if names is None else [str(n) for n in names]
    if len(names) != l:
        raise BayesCRLValueError(f"'names' must have one name per latent ({l}). Got {len(names)}.")
    labels = list(range(e)) if env_labels is None else list(env_labels)
    if len(labels) != e:
        raise BayesCRLValueError(f"'env_labels' must have one label per environment ({e}). Got {len(labels)}.")

    a = (1 - prob) / 2
    lo, hi = np.quantile(w, a, axis=0), np.quantile(w, 1 - a, axis=0)  # (E, l, l)
    mean = w.mean(0)
    vanish = (lo <= 0) & (hi >= 0)
    if vanish_tol is not None:
        vanish |= np.abs(mean) < vanish_tol
    enough = e >= 2 * l + 1

    latents = []
    for i in range(l):
        parents = []
        for j in range(l):
            if j == i or p[j, i] < threshold:
                continue
            envs = tuple(labels[u] for u in np.flatnonzero(vanish[:, j, i]))
            k = int(np.argmin(np.abs(mean[:, j, i])))
            parents.append(ParentEvidence(parent=names[j], inclusion=float(p[j, i]), vanishing_envs=envs,
                                          min_abs_mean=float(abs(mean[k, j, i])), min_abs_mean_env=labels[k]))
        if not parents:
            status = "root"
        elif all(q.vanishes for q in parents):
            status = "vanishing"
        else:
            status = "not_identified"
        latents.append(LatentIdentifiability(
            name=names[i], status=status, identified=status != "not_identified" and enough,
            parents=tuple(parents), message=_latent_message(names[i], status, parents, e, threshold, enough)))

    ok = [t.name for t in latents if t.status != "not_identified"]
    bad = [t.name for t in latents if t.status == "not_identified"]
    if enough:
        head = (f"Identifiability of {l} latent{'s' if l != 1 else ''} from {e} environments (the theory needs at "
                f"least 2l+1 = {2 * l + 1}): ")
        head += (f"{len(ok)} identified ({_join(ok)})" if ok else "none identified")
        head += f", {len(bad)} not identified ({_join(bad)})." if bad else "."
    else:
        head = (f"Only {e} environment{'s' if e != 1 else ''} for {l} latents: the theory needs at least "
                f"2l+1 = {2 * l + 1} environments with varied noise, so no latent is guaranteed to be identified. "
                f"Condition (iv) alone: {len(ok)} of {l} latents pass" + (f" ({_join(ok)})." if ok else "."))
    caveats = []
    vanishing = [t.name for t in latents if t.status == "vanishing"]
    if vanishing:
        verb = "passes" if len(vanishing) == 1 else "pass"
        caveats.append(f"Condition (iv) is judged from the fitted strengths: {_join(vanishing)} {verb} "
                       f"because some environment's {prob:.0%} interval of each incoming strength contains 0, "
                       "which is easy to meet with many environments. On the benchmark this test named none of the "
                       "latents whose (iv) fails in truth (BENCHMARKS.md, 'The identifiability report against the "
                       "truth'): read it as not contradicted by the fit, not as shown identified.")
    childless = [t.name for i, t in enumerate(latents)
                 if t.status == "vanishing" and not any(p[i, k] >= threshold for k in range(l) if k != i)]
    if childless:
        it = "it" if len(childless) == 1 else "each"
        caveats.append(f"{_join(childless)} {'has' if len(childless) == 1 else 'have'} no children in the graph, "
                       "and for such a latent the data cannot test (iv) at all. Subtracting c times a parent's "
                       "mechanism term from it gives a model of the same class with the same likelihood, and c "
                       "equal to that edge's strength in any one environment makes the edge vanish there. So "
                       f"{it} is identified only if (iv) holds as assumed (BENCHMARKS.md, 'The identifiability "
                       "report against the truth').")
    edges = [f"{names[j]} -> {names[i]}" for i in range(l) for j in range(l) if j != i and p[j, i] >= threshold]
    if linear_gaussian and edges:
        caveats.append(f"With linear mechanisms and Gaussian noise the model cannot tell the two latents of an edge "
                       f"({_join(edges)}) from a linear mixture of them that makes the edge vanish in another "
                       "environment: such a pair is identified only as far as the rest of the graph constrains it. "
                       "This holds for roots too: a root shifted along a later latent can fit every environment "
                       "equally well (BENCHMARKS.md, 'Which roots the likelihood identifies'). Nonlinear mechanisms "
                       "or non-Gaussian noise separate them.")
    summary = "\n".join([head] + [f"- {t.message}" for t in latents] + [f"Caveat: {c}" for c in caveats])
    return IdentifiabilityReport(latents=tuple(latents), n_latents=l, n_envs=e, min_envs=2 * l + 1,
                                 enough_envs=enough, threshold=threshold, prob=prob, vanish_tol=vanish_tol,
                                 summary=summary, caveats=tuple(caveats))


def identifiability_report(model: "LatentCausalModel", *, threshold: float = 0.5, vanish_tol: float | None = None,
                           prob: float = 0.9) -> IdentifiabilityReport:
    """Identifiability report of a fitted model.

    Uses the model's posterior inclusion probabilities ``edge_inclusion_``, its stored strength draws
    (``_weight_draws``, (S, E, l, l); an edge that points against the fitted order is judged by the strengths of
    the fitted direction), ``latent_names_`` and ``env_labels_``; see
    :func:`assess_identifiability` for the rule. A model fitted with ``mechanism="linear"`` and
    ``noise="gaussian"`` gets the linear-Gaussian caveat (module docstring).

    Parameters
    ----------
    model : LatentCausalModel
        A fitted model.
    threshold : float, default 0.5
    vanish_tol : float, optional
    prob : float, default 0.9

    Returns
    -------
    IdentifiabilityReport

    Examples
    --------
    >>> report = identifiability_report(model)          # doctest: +SKIP
    >>> print(report)                                    # doctest: +SKIP
    Identifiability of 3 latents from 30 environments (the theory needs at least 2l+1 = 7): ...
    - z2 is not identified: the influence of z1 on it never vanishes in any of the 30 environments; ...
    """
    if not hasattr(model, "result_"):
        raise BayesCRLValueError("The 'model' argument of identifiability_report must be a fitted LatentCausalModel. "
                                 "Call 'fit' with appropriate arguments first.")
    draws = np.asarray(model._weight_draws)
    # An edge may point against the fitted order (the environment bootstrap reversed it in most draws); it has
    # no strengths of its own, so it is judged by those of the fitted direction: a dependence that vanishes in an
    # environment vanishes in both parameterisations. Only one direction of a pair is ever non-zero.
    draws = draws + np.swapaxes(draws, -1, -2)
    linear_gaussian = model.mechanism == "linear" and model.noise == "gaussian"
    return assess_identifiability(model.edge_inclusion_, draws, draws.shape[1], list(model.latent_names_),
                                  threshold, prob=prob, vanish_tol=vanish_tol, env_labels=list(model.env_labels_),
                                  linear_gaussian=linear_gaussian)
