"""Every network a run produced (``networks.json``) and the rule that picks the final one.

A scheme may produce several networks: DML peers (``network-peer1.pt``), Born-Again generations
(``gen-<k>/student.pt``). The final student is ``student.pt``, else ``model.pt``: that is what
``edgekd export`` and ``edgekd profile`` use by default; ``--all-networks`` takes every listed network.
"""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import EdgekdError
from edgekd.names import check_safe_name
from edgekd.runfolder import RunFolder

NETWORKS_FILE = "networks.json"
FINAL_RULE = "export and profile use student.pt, else model.pt"  # recorded in networks.json


def list_networks(run_dir: str | Path) -> dict[str, Path]:
    """Name -> model file of every network recorded in the run folder (the final one alone when the run
    has no ``networks.json``). Names become folder names (``export/<target>-<name>``), so each is a safe
    name; paths in the file must stay inside the run folder."""
    run = RunFolder(run_dir)
    record_path = run.root / NETWORKS_FILE
    if not record_path.exists():
        return {"final": run.trained_model()}
    record = run.read_json(record_path)
    nets = record.get("networks") if isinstance(record, dict) else None
    if not isinstance(nets, dict) or not nets:
        raise EdgekdError(f"{record_path}: no 'networks' mapping; re-run the training stage")
    root = run.root.resolve()
    out = {}
    for name, rel in nets.items():
        check_safe_name(name, str(record_path), "network name")
        path = (run.root / str(rel)).resolve()
        if root not in path.parents:
            raise EdgekdError(f"{record_path}: network {name!r} points outside the run folder ({rel})")
        if not path.exists():
            raise EdgekdError(f"{record_path}: network {name!r} file {rel} is missing")
        out[name] = path
    return out


def describe(run_dir: str | Path) -> str:
    return ", ".join(f"{k}={v.name}" for k, v in list_networks(run_dir).items())


__all__ = ["FINAL_RULE", "NETWORKS_FILE", "list_networks", "describe"]
