"""Up-front checks of model files a user names on the command line (``.pt``, ``.onnx``, ``.tflite``).

Each check reads the file the way the later stage will and turns any failure into one line that names the
file and says what to do, so a corrupt input never reaches a library that answers with a traceback.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.files import MAX_ONNX_BYTES, read_bytes_capped, regular_file

MODEL_SUFFIXES = (".pt", ".pth", ".onnx", ".tflite")


def check_model_file(path: str | Path) -> None:
    """Raise EdgekdError unless ``path`` is a readable edgekd ``.pt``, ONNX or TFLite model."""
    p = Path(path)
    if not p.exists():
        raise EdgekdError(f"{p}: no such file or run folder")
    if p.is_dir():
        return
    regular_file(p, "model file")  # a FIFO or device would block the reader forever
    suffix = p.suffix.lower()
    if suffix in (".pt", ".pth"):
        from edgekd.models.checkpoint import FORMAT, check_model_size, read_checkpoint
        from edgekd.models.registry import check_name_from_file

        obj = read_checkpoint(p, "model file")
        if obj.get("format") != FORMAT:
            raise EdgekdError(
                f"{p}: not an edgekd model file (expected format {FORMAT}); save it with edgekd"
            )
        name = check_name_from_file(obj.get("name"), str(p))
        if isinstance(obj.get("kwargs"), dict) and isinstance(obj.get("state_dict"), dict):
            check_model_size(p, name, obj["kwargs"], obj["state_dict"])  # before a model is built
    elif suffix == ".onnx":
        check_onnx_file(p)
    elif suffix == ".tflite":
        from edgekd.graph.reader import read_tflite

        read_tflite(p)
    else:
        raise EdgekdError(
            f"{p}: unknown model file type {suffix!r}; expected one of {', '.join(MODEL_SUFFIXES)}"
        )


def check_onnx_file(path: str | Path) -> None:
    """A file ONNX can parse and check (structure only, no weights are run)."""
    p = Path(path)
    data = read_bytes_capped(p, MAX_ONNX_BYTES, "ONNX model")
    if not data:
        raise EdgekdError(f"{p}: empty file; export the ONNX model again")
    import onnx

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, ValidationError, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise EdgekdError(
            f"{p}: not a valid ONNX model ({first}); export it again or pass another file"
        ) from None
    if not model.graph.node:
        raise EdgekdError(f"{p}: ONNX model has no operators (truncated or wrong file); export it again")
