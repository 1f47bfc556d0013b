"""Pick intermediate features by module path with forward hooks (never by editing ``forward``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from edgekd.errors import EdgekdError


def get_module(model: nn.Module, path: str) -> nn.Module:
    """``get_module(model, "features.2.0")``; a one-line error lists valid paths when ``path`` is wrong."""
    modules = dict(model.named_modules())
    if path not in modules:
        valid = [n for n in modules if n][:30]
        raise EdgekdError(
            f"no module {path!r} in {type(model).__name__}; valid paths include: {', '.join(valid)}"
        )
    return modules[path]


class FeatureTaps:
    """Holds forward hooks on named modules; ``taps.outputs[path]`` is that module's last output."""

    def __init__(self, model: nn.Module, paths: Sequence[str], inputs: bool = False) -> None:
        self.outputs: dict[str, Tensor] = {}
        self._handles = []
        for path in paths:
            module = get_module(model, path)

            def hook(_m: nn.Module, args: tuple, out: Tensor, _path: str = path) -> None:
                self.outputs[_path] = args[0] if inputs else out

            self._handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@contextmanager
def tap_features(model: nn.Module, paths: Sequence[str], inputs: bool = False) -> Iterator[dict[str, Tensor]]:
    """Context manager: ``with tap_features(m, ["features.1"]) as feats: m(x); feats["features.1"]``."""
    taps = FeatureTaps(model, paths, inputs)
    try:
        yield taps.outputs
    finally:
        taps.remove()
