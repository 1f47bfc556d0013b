"""Training schemes, one file each, registered by name (``@register_method``)."""

from edgekd.distill.methods import (  # noqa: F401  (registration)
    byot,
    hinton,
    mutual,
    netaug,
    noisy_sequential,
    one,
    privileged,
    supervised,
    wasserstein_kd,
)
from edgekd.distill.methods.base import METHODS, Distiller, build_method, register_method

__all__ = ["METHODS", "Distiller", "build_method", "register_method"]
