"""Build-time shape checks shared by feature losses (one clear line naming the loss and the layer)."""

from __future__ import annotations

from collections.abc import Sequence

from edgekd.errors import EdgekdError

Shapes = Sequence[tuple[int, ...]]


def need_maps(
    s_shapes: Shapes, t_shapes: Shapes, where: str, what: str, ranks: tuple[int, ...] = (3,)
) -> None:
    """Every tapped feature must be a map of rank ``ranks`` (without the batch), e.g. ``(C, H, W)``."""
    for role, shapes in (("student", s_shapes), ("teacher", t_shapes)):
        for shape in shapes:
            if len(shape) not in ranks:
                want = " or ".join({3: "(C, H, W)", 2: "(C, L)", 1: "(D,)"}[r] for r in ranks)
                raise EdgekdError(
                    f"{where}: {what} needs {want} feature maps; the {role} layer gives {shape}: "
                    "tap a convolution, batch-norm or activation layer instead"
                )


def same_positions(s_shapes: Shapes, t_shapes: Shapes, where: str, what: str) -> None:
    """Student and teacher maps of each pair must have the same spatial size (channels may differ)."""
    for a, b in zip(s_shapes, t_shapes):
        if tuple(a[1:]) != tuple(b[1:]):
            raise EdgekdError(
                f"{where}: {what} compares positions, but the student map {a} and the teacher map {b} differ in "
                "size; pick layers at the same resolution"
            )


def one_pair(shapes: Shapes, where: str, what: str) -> None:
    """Losses defined on a single layer pair: exactly one tapped path per network."""
    if len(shapes) != 1:
        raise EdgekdError(f"{where}: {what} works on one layer pair; give one path each")


def positive(params: dict, key: str, where: str, default: float) -> float:
    v = float(params.get(key, default))
    if not v > 0:
        raise EdgekdError(f"{where}: params.{key}={v}: must be > 0")
    return v


def non_negative(params: dict, key: str, where: str, default: float) -> float:
    v = float(params.get(key, default))
    if not v >= 0:
        raise EdgekdError(f"{where}: params.{key}={v}: must be >= 0")
    return v
