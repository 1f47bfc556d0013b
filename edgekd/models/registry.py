"""Models by name (timm style): ``build_model("cnn", input_shape=(1, 28, 28), num_classes=10, width=0.5)``.

A name of the form ``package.module:ClassName`` builds a user model; it receives the same kwargs. Such a
name is only honoured when the user typed it (the command line, Python code): a name read from a *file*
(a checkpoint, a recipe: :func:`edgekd.recipe.load_recipe`) must be a registered model, unless the user
passed ``--trust-model-code`` for it (:func:`trust_model_code`). Opening someone's checkpoint or recipe
therefore never imports or calls their code.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from edgekd.codetrust import is_code_reference, is_trusted, trust_model_code
from edgekd.errors import EdgekdError
from edgekd.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def check_name_from_file(name: Any, source: str) -> str:
    """Refuse a model name read from ``source`` unless it is registered or explicitly trusted."""
    if not isinstance(name, str) or not name:
        raise EdgekdError(f"{source}: the model name is missing or not a string; not an edgekd model file")
    if name in MODELS:
        return name
    if is_code_reference(name):
        if is_trusted(name):
            return name
        mod = name.partition(":")[0]
        raise EdgekdError(
            f"{source}: names model {name!r}, which is not a registered edgekd model; building it would import "
            f"{mod!r} and call code named by the file. Only if you wrote this file and trust it, pass "
            f"--trust-model-code (it will import {mod!r})"
        )
    raise EdgekdError(
        f"{source}: names unknown model {name!r}; registered models: {', '.join(MODELS.names())}"
    )


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model (or ``module:Class`` typed by the user) with keyword arguments."""
    if is_code_reference(name):
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


__all__ = ["MODELS", "build_model", "check_name_from_file", "is_code_reference", "register_model",
           "trust_model_code"]  # fmt: skip
