"""Training schemes, one file each, registered by name (``@register_method``)."""

from edgekd.distill.methods import hinton, mutual, netaug, supervised, wasserstein_kd  # noqa: F401  (registration)
from edgekd.distill.methods.base import METHODS, Distiller, build_method, register_method

__all__ = ["METHODS", "Distiller", "build_method", "register_method"]
