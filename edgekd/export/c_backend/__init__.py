"""edgekd's C backend: a full-integer int8 ``.tflite`` as plain C99 with TFLite Micro's int8 numerics.

``generate_c(model) -> CModel`` (``.write(folder)``), ``HostBuild(cmodel)(x)`` runs it with the host gcc.
"""

from edgekd.export.c_backend.codegen import CModel, generate_c, supported_ops
from edgekd.export.c_backend.host import HostBuild

__all__ = ["CModel", "HostBuild", "generate_c", "supported_ops"]
