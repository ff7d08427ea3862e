"""bayes_crl: Bayesian causal representation learning.

Three layers, each usable alone: Pyro model functions (:mod:`bayes_crl.models`, :mod:`bayes_crl.guides`)
-> an SVI fit loop returning a result (:func:`bayes_crl.infer.fit_svi`) -> the scikit-learn-style
estimator :class:`LatentCausalModel`.
"""
from bayes_crl._errors import BayesCRLValueError, DataWarning, IdentifiabilityWarning, NotFittedError
from bayes_crl.compare import compare_priors
from bayes_crl.estimator import LatentCausalModel
from bayes_crl.priors import FlatPrior, Horseshoe, LaplacePrior, SpikeAndSlab, get_prior
from bayes_crl.simulate import LatentANMData, load_observations, simulate_latent_anm

__version__ = "0.1.0"

__all__ = [
    "LatentCausalModel", "compare_priors", "simulate_latent_anm", "LatentANMData", "load_observations",
    "Horseshoe", "SpikeAndSlab", "LaplacePrior", "FlatPrior", "get_prior",
    "BayesCRLValueError", "DataWarning", "IdentifiabilityWarning", "NotFittedError", "__version__",
]
