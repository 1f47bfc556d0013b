"""Models by name (timm style): ``build_model("cnn", input_shape=(1, 28, 28), num_classes=10, width=0.5)``.

A name of the form ``package.module:ClassName`` builds a user model; it receives the same kwargs.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from edgekd.errors import EdgekdError
from edgekd.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model (or ``module:Class``) with keyword arguments."""
    if ":" in name:
        mod_name, _, cls_name = name.partition(":")
        try:
            builder = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as e:
            raise EdgekdError(f"model {name!r}: cannot import {cls_name} from {mod_name} ({e})") from None
    else:
        builder = MODELS.get(name)
    try:
        sig = inspect.signature(builder)
        accepts_var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
        if not accepts_var_kw:
            unknown = sorted(set(kwargs) - set(sig.parameters))
            if unknown:
                valid = ", ".join(p for p in sig.parameters if p != "self")
                raise EdgekdError(f"model {name!r}: unknown argument(s) {', '.join(unknown)}; valid: {valid}")
    except (TypeError, ValueError):  # builtins without signatures
        pass
    try:
        return builder(**kwargs)
    except TypeError as e:
        raise EdgekdError(f"model {name!r}: bad arguments ({e})") from None
