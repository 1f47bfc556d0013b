"""Saved models are ``(name, kwargs, state_dict)`` so they rebuild by name; loaded with weights_only."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.atomic import atomic_torch_save
from edgekd.codetrust import is_trusted
from edgekd.errors import EdgekdError
from edgekd.files import MAX_CHECKPOINT_BYTES, check_size
from edgekd.models.registry import build_model, check_name_from_file

FORMAT = "edgekd-model/1"


def _plain(v: Any) -> Any:
    """kwargs are stored as plain Python values (tuples -> lists) so weights_only loading accepts them."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def save_model(
    path: str | Path, model: nn.Module, name: str, kwargs: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Atomically save a model with what is needed to rebuild it."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "name": name,
        "kwargs": _plain(kwargs),
        "state_dict": state,
        "meta": _plain(meta or {}),
    }
    return atomic_torch_save(path, obj)


def _describe_load_failure(path: Path, err: BaseException) -> str:
    """Why ``torch.load`` failed, in edgekd's words (torch's own text is long and advises unsafe loading)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty"
    if head != b"PK\x03\x04":
        return "is not a PyTorch checkpoint (no zip archive inside; wrong file?)"
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return (
            "holds Python objects that edgekd refuses to unpickle (only tensors and plain data are loaded); "
            "it was not written by edgekd"
        )
    if not zipfile.is_zipfile(path):
        return "is truncated or corrupt (incomplete zip archive)"
    return f"is corrupt ({type(err).__name__})"


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) with a one-line error for bad files."""
    path = Path(path)
    if path.is_dir():
        raise EdgekdError(f"{path}: is a folder, expected a {what} file (.pt)")
    check_size(path, MAX_CHECKPOINT_BYTES, what)  # a FIFO would block torch.load forever
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad bytes; all mean the same to the user
        raise EdgekdError(
            f"{path}: {what} {_describe_load_failure(path, e)}; re-create it (e.g. with `edgekd train`) "
            "or pass the right file"
        ) from None
    if not isinstance(obj, dict):
        raise EdgekdError(f"{path}: not an edgekd {what} (holds a {type(obj).__name__}, expected a mapping)")
    return obj


def _largest_int(value: Any, key: str) -> tuple[int, str]:
    """(value, dotted key) of the largest integer in a kwargs tree."""
    if isinstance(value, bool):
        return 0, key
    if isinstance(value, int):
        return value, key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    best = (0, key)
    for k, v in items:
        found = _largest_int(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}")
        best = found if found[0] > best[0] else best
    return best


def _values(module: nn.Module) -> int:
    return sum(int(t.numel()) for t in module.state_dict().values() if isinstance(t, torch.Tensor))


def check_model_size(path: Path, name: str, kwargs: dict[str, Any], state: dict[str, Any]) -> None:
    """Refuse kwargs that describe a model larger than the weights the file holds, before it is built.

    ``kwargs`` come from the file: ``hidden: [60000, 60000]`` would allocate 14 GB before the weights are
    compared. The model is first built on the ``meta`` device (no memory) and its size compared with the
    file's ``state_dict``: a model needing more values than the file stores cannot load anyway. User code
    trusted with ``--trust-model-code`` is built as is."""
    if is_trusted(name):
        return
    stored = sum(int(t.numel()) for t in state.values() if isinstance(t, torch.Tensor))
    try:
        with torch.device("meta"):
            needed = _values(build_model(name, **kwargs))
    except EdgekdError:
        raise
    except Exception:  # noqa: BLE001  (a model that cannot be built on meta: the real build decides)
        return
    if needed > stored:
        value, key = _largest_int(kwargs, "kwargs")
        biggest = f" (largest: {key} = {value:,})" if value else ""
        raise EdgekdError(
            f"{path}: key 'kwargs'{biggest} describes model {name!r} with {needed:,} values "
            f"({needed * 4 / 2**30:.1f} GiB) but the file holds {stored:,} weights, so it is not built; re-save "
            "the model with edgekd, or pass --trust-model-code if you made this file and trust it"
        )


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``. Returns ``(model in eval mode, record without state_dict)``.

    The model name in the file must be a registered model (or a user model explicitly trusted with
    :func:`edgekd.models.registry.trust_model_code`): a file never chooses which code runs.
    """
    obj = read_checkpoint(path, "model file")
    if obj.get("format") != FORMAT:
        raise EdgekdError(f"{path}: not an edgekd model file (expected format {FORMAT}); save it with edgekd")
    name = check_name_from_file(obj.get("name"), str(path))
    kwargs, state = obj.get("kwargs"), obj.get("state_dict")
    if not isinstance(kwargs, dict) or not isinstance(state, dict):
        raise EdgekdError(f"{path}: model file lacks 'kwargs' or 'state_dict'; re-save it with edgekd")
    check_model_size(path, name, kwargs, state)
    model = build_model(name, **kwargs)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekdError(f"{path}: weights do not match model {name!r} ({first})") from None
    model.eval()
    record = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, record
