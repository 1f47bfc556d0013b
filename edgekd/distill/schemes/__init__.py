"""Schemes above the training loop, one file each (``@register_scheme``)."""

from edgekd.distill.schemes import (  # noqa: F401  (registration)
    ban_ensemble,
    born_again,
    ensemble_selection,
    specialists,
)
from edgekd.distill.schemes.base import SCHEMES, Scheme, SchemeContext, build_scheme, register_scheme

__all__ = ["SCHEMES", "Scheme", "SchemeContext", "build_scheme", "register_scheme"]
