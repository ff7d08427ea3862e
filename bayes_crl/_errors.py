"""Error and warning classes (the input-error classes live in :mod:`bayes_crl._validation`)."""
from bayes_crl._validation import BayesCRLValueError, IdentifiabilityWarning

__all__ = ["BayesCRLValueError", "IdentifiabilityWarning", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit``."""
