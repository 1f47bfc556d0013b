"""Methods: what changes the training loop, one file each, registered by name (``@register_method``).

What is minimised is a loss list (``losses:``, or a preset of :mod:`edgekd.distill.losses.presets`)."""

from edgekd.distill.methods import (  # noqa: F401  (registration)
    byot,
    mutual,
    netaug,
    noisy_sequential,
    one,
)
from edgekd.distill.methods.base import METHODS, Distiller, build_method, needs_teacher, register_method

__all__ = ["METHODS", "Distiller", "build_method", "needs_teacher", "register_method"]
