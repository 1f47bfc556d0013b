"""Fuzzing ``profile`` and ``export --format c`` with corrupt ``.tflite`` files (issue 19 item 8).

200 mutants of two int8 models (byte flips in the flatbuffer's structure, a few in the weights, and
truncations) go through the in-process APIs of both commands, each mutant in a forked child with a
time limit. Required: no crash, no hang, no traceback; every failure is one EdgekdError line naming the
file. Structural validation rejects most mutants in milliseconds; the ones it accepts really run
(LiteRT, TFLite Micro and, for some, the generated C on the host).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import numpy as np
import pytest

from edgekd.child import ChildFailed, run_in_child
from edgekd.errors import EdgekdError
from edgekd.export import export_run
from edgekd.export.c_backend import host
from edgekd.graph.sample_models import sample_models
from edgekd.graph.tflite_model import _schema_module
from edgekd.profile import ProfileOptions, profile_files

MUTANTS_PER_MODEL = 100
PER_MUTANT_S = 60
LITERT_EVERY = 3  # of the mutants that validate: every 3rd also on LiteRT (all on TFLite Micro) ...
HOST_C_EVERY = 6  # ... and every 6th compiles and runs the generated C on the host


def _weight_ranges(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the buffers' data (weights): flips there keep the structure intact."""
    m = _schema_module().Model.GetRootAs(data, 0)
    out = []
    for b in range(m.BuffersLength()):
        tab = m.Buffers(b)._tab
        o = tab.Offset(4)
        if o:
            start = tab.Vector(o)
            out.append((start, start + tab.VectorLen(o)))
    return out


def mutants(data: bytes, n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` (description, bytes): 10% truncations, 10% flips anywhere, 80% flips of structure bytes
    (not weights, not text such as tensor names: offsets, vector lengths, indices, shapes, options)."""
    rng = np.random.default_rng(seed)
    plain = np.zeros(len(data), bool)
    for a, b in _weight_ranges(data):
        plain[a:b] = True
    for text in re.finditer(rb"[\x20-\x7e]{4,}", data):
        plain[text.start() : text.end()] = True
    structure = np.flatnonzero(~plain[8:]) + 8
    out = []
    for k in range(n):
        b = bytearray(data)
        if k % 10 == 0:
            cut = int(rng.integers(8, len(data)))
            out.append((f"cut at {cut}", bytes(b[:cut])))
            continue
        where = (
            rng.integers(8, len(data), 1) if k % 10 == 1 else rng.choice(structure, int(rng.integers(1, 3)))
        )
        for i in where:
            b[int(i)] ^= int(rng.integers(1, 256))
        out.append((f"bytes {sorted(int(i) for i in where)} changed", bytes(b)))
    return out


def _outcome(fn) -> tuple[str, str]:
    try:
        fn()
        return "ok", ""
    except EdgekdError as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001  (what the test must never see)
        return "traceback", "".join(traceback.format_exception(e))[-1500:]


def _both_commands(path: Path, out: Path, litert: bool, host_c: bool) -> list[tuple[str, str, str]]:
    """(command, outcome, message) of profile and export --format c on ``path`` (in the child; the
    modules are imported by this file, before the fork, so each child starts warm)."""
    if not host_c:
        host.gcc = lambda: None  # this child only: no compile (the host check then runs nothing)
    runtimes = ["tflm", "litert"] if litert else ["tflm"]
    prof = _outcome(
        lambda: profile_files([path], options=ProfileOptions(runs=1, warmup=0, runtimes=runtimes))
    )
    exp = _outcome(lambda: export_run(path, fmt="c", out=out, quiet=True))
    return [("profile", *prof), ("export-c", *exp)]


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in sample_models(["tiny_cnn", "mlp"]).items()}


@pytest.mark.slow
def test_mutants_never_crash_hang_or_trace(seeds, tmp_path, monkeypatch):
    from edgekd.graph import read_tflite
    from edgekd.profile import api

    monkeypatch.setenv("EDGEKD_NATIVE_TIMEOUT_S", "20")
    targets = api.load_targets(None)  # read the board files once, not in every child
    monkeypatch.setattr(api, "load_targets", lambda names: targets)
    problems, counts, valid = [], {}, 0
    for name, data in seeds.items():
        for k, (how, bad) in enumerate(mutants(data, MUTANTS_PER_MODEL, seed=19)):
            path = tmp_path / f"{name}-{k}.tflite"
            path.write_bytes(bad)
            try:
                read_tflite(path)
                valid += 1
            except EdgekdError:
                pass
            litert, host_c = valid % LITERT_EVERY == 1, valid % HOST_C_EVERY == 1
            try:
                results = run_in_child(_both_commands, path, tmp_path / f"out-{name}-{k}", litert, host_c,
                                       timeout_s=PER_MUTANT_S, what=str(path))  # fmt: skip
            except ChildFailed as e:  # the command itself crashed or hung
                problems.append(f"{path.name} ({how}): {e}")
                continue
            for command, outcome, msg in results:
                counts[(command, outcome)] = counts.get((command, outcome), 0) + 1
                if outcome == "traceback":
                    problems.append(f"{path.name} ({how}) {command}: traceback\n{msg}")
                elif outcome == "error" and (len(msg.splitlines()) != 1 or path.name not in msg):
                    problems.append(f"{path.name} ({how}) {command}: not one line naming the file: {msg!r}")
    assert not problems, "\n".join(problems[:10])
    n = 2 * MUTANTS_PER_MODEL
    assert sum(counts.values()) == 2 * n
    assert counts.get(("export-c", "error"), 0) >= n // 2  # most mutants are refused ...
    assert 0 < valid < n  # ... and some still run, through the native runtimes in their children
