"""Error and warning classes (the input-error classes live in :mod:`bayes_crl._validation`)."""
from bayes_crl._validation import BayesCRLValueError, IdentifiabilityWarning

__all__ = ["BayesCRLValueError", "IdentifiabilityWarning", "NotFittedError", "DataWarning"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit``."""


class DataWarning(UserWarning):
    """The data are usable but something about them will weaken the fit (tiny environments, constant columns)."""
