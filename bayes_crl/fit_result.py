"""The immutable outcome of a fit (:class:`FitResult`), in a module of its own so that the fit pipeline, model
files and posterior summaries can all use it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayes_crl.guides import GlobalGuide
from bayes_crl.models import LatentCausalNet
from bayes_crl.noise import NoiseFamily
from bayes_crl.priors import EdgePrior

__all__ = ["FitResult"]


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_svi`.

    Attributes
    ----------
    net : LatentCausalNet
        Fitted networks and point parameters.
    global_guide : GlobalGuide
        Variational posterior of the global edge sites.
    losses : ndarray (num_steps,)
        Negative ELBO per row at each step (``nan`` for rejected steps).
    order : tuple[int, ...]
        Slot permutation applied by the order search (new slot k = warm-up slot ``order[k]``).
    n_rejected : int
        Number of rejected (non-finite) steps.
    """

    net: LatentCausalNet
    global_guide: GlobalGuide
    prior: EdgePrior
    noise: NoiseFamily
    losses: np.ndarray
    order: tuple
    n_rejected: int = 0
    history: dict = field(default_factory=dict)
