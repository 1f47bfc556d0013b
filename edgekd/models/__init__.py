"""Model registry. Every model is rebuildable from ``(name, kwargs)``; see ``checkpoint.py``.

All builders take ``input_shape`` (C, H, W) and ``num_classes`` plus their own keyword arguments.
"""

from edgekd.models import autoencoders, cnn, detection, early_exit, ensemble, mlp, mobilenetv2, vgg  # noqa: F401  (registration)
from edgekd.models.checkpoint import load_model, save_model
from edgekd.models.registry import MODELS, build_model, register_model, trust_model_code

__all__ = ["MODELS", "build_model", "register_model", "load_model", "save_model", "trust_model_code"]
