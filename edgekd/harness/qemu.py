"""The emulated board: build the C-backend firmware for Cortex-M4 with ``arm-none-eabi-gcc`` and run it
on ``qemu-system-arm -M mps2-an386`` with UART0 on a TCP socket on 127.0.0.1.

Flash and RAM come from the ELF (text, data, bss); the stack from GCC's ``-fcallgraph-info=su`` call
graph (the deepest path from the reset handler). Time runs under ``-icount shift=0``: one guest
instruction is one nanosecond of *emulated* time, so per-inference figures are deterministic
instruction counts, not Cortex-M4 cycles (QEMU is not cycle-accurate).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
FIRMWARE_SOURCES = ("ee_main.c", "board_mps2_an386.c", "startup_cm4.c")
TEMPLATE_FILES = ("board.h", "ee_main.c", "board_mps2_an386.c", "startup_cm4.c", "mps2_an386.ld")
CPU_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
CFLAGS = [*CPU_FLAGS, "-Os", "-std=c99", "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra",
          "-fstack-usage", "-fcallgraph-info=su"]  # fmt: skip
LDFLAGS = [*CPU_FLAGS, "-T", "mps2_an386.ld", "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"]
BOARD_RAM = 4 * 1024 * 1024
BOARD_FLASH = 4 * 1024 * 1024
ICOUNT_SHIFT = 0  # 2**0 ns of emulated time per instruction


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EdgekdError(
            f"{name} not found; install the Debian packages qemu-system-arm gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi (scripts/ensure-system-deps.sh does it as root)"
        )
    return path


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"))


@dataclass
class Firmware:
    elf: Path
    memory: dict[str, Any]
    c_model: dict[str, Any] = field(default_factory=dict)


def copy_templates(dst: Path) -> None:
    for f in TEMPLATE_FILES:
        shutil.copy2(FIRMWARE_DIR / f, dst / f)


def build_firmware(
    model_path: str | os.PathLike, build_dir: str | os.PathLike, model_name: str = "ic01"
) -> Firmware:
    """C backend + protocol firmware, cross-compiled; raises EdgekdError if it does not fit the board."""
    from edgekd.export.c_backend import generate_c

    tool("arm-none-eabi-gcc")  # missing toolchain: say so before generating code
    d = Path(build_dir)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    cm = generate_c(model_path)
    cm.write(d)
    copy_templates(d)
    srcs = [*FIRMWARE_SOURCES, "edgekd_model.c", "edgekd_kernels.c"]
    elf = cross_build(model_path, d, srcs, "firmware.elf", defines=[f'-DEE_MODEL_NAME="{model_name}"'])
    mem = elf_memory(elf, d)
    mem["arena"] = cm.arena_size
    if mem["ram_bytes"] > BOARD_RAM or mem["flash_bytes"] > BOARD_FLASH:
        raise EdgekdError(
            f"{model_path}: the firmware needs {mem['ram_bytes']:,} B RAM and {mem['flash_bytes']:,} B flash; "
            f"the emulated board has {BOARD_RAM:,} and {BOARD_FLASH:,}; use a smaller model"
        )
    return Firmware(elf, mem, cm.summary())


def cross_build(model_path: str | os.PathLike, d: Path, srcs: Sequence[str], elf: str,
                defines: Sequence[str] = ()) -> Path:  # fmt: skip
    """Compile ``srcs`` (in ``d``) for the Cortex-M4 and link ``d/elf`` for the board's linker script;
    a compile or link error, or a model too big for the board, is one :class:`EdgekdError`."""
    gcc = tool("arm-none-eabi-gcc")
    objs = []
    for src in srcs:
        obj = Path(src).with_suffix(".o").name
        cmd = [gcc, *CFLAGS, *defines, "-c", src, "-o", obj]
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise EdgekdError(f"{model_path}: firmware does not compile ({src}): {r.stderr.strip()[:300]}")
        objs.append(obj)
    r = subprocess.run([gcc, *LDFLAGS, "-o", elf, *objs, f"-Wl,-Map={Path(elf).stem}.map"], cwd=d,
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        overflow = re.search(r"region [`']?(\w+)'? overflowed by (\d+) bytes", r.stderr)
        if overflow:
            raise EdgekdError(
                f"{model_path}: the model does not fit the emulated board: {overflow.group(1)} overflowed by "
                f"{int(overflow.group(2)):,} bytes (mps2-an386 has {BOARD_RAM // 1024} KiB RAM and "
                f"{BOARD_FLASH // 1024} KiB code memory); use a smaller model"
            )
        raise EdgekdError(f"{model_path}: firmware does not link: {r.stderr.strip()[:300]}")
    return d / elf


def elf_memory(elf: Path, obj_dir: Path) -> dict[str, Any]:
    """text/data/bss from ``arm-none-eabi-size`` plus the worst-case stack from the call graph."""
    r = subprocess.run(
        [tool("arm-none-eabi-size"), "--format=berkeley", str(elf)], capture_output=True, text=True
    )
    nums = r.stdout.strip().splitlines()[-1].split()
    text, data, bss = int(nums[0]), int(nums[1]), int(nums[2])
    stack, path = stack_usage(obj_dir)
    return {"text": text, "data": data, "bss": bss, "stack": stack, "stack_path": path,
            "flash_bytes": text + data, "ram_bytes": data + bss + stack}  # fmt: skip


_NODE = re.compile(r'node:\s*\{\s*title:\s*"([^"]+)"\s*label:\s*"([^"]*)"', re.S)
_EDGE = re.compile(r'edge:\s*\{\s*sourcename:\s*"([^"]+)"\s*targetname:\s*"([^"]+)"')
_BYTES = re.compile(r"(\d+) bytes \((static|dynamic|dynamic,bounded)\)")


def stack_usage(obj_dir: Path, root: str = "Reset_Handler") -> tuple[int, list[str]]:
    """Deepest stack from GCC's ``.ci`` call-graph files (``-fcallgraph-info=su``), from ``root``.
    Library functions (memcpy/memmove) have no frame info: they count 0 and are listed with ``?``."""
    frames: dict[str, int] = {}
    edges: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    for ci in obj_dir.glob("*.ci"):
        text = ci.read_text(errors="replace")
        for title, label in _NODE.findall(text):
            fn = title.split(":")[-1]
            names[title] = fn
            m = _BYTES.search(label)
            if m:
                frames[fn] = max(frames.get(fn, 0), int(m.group(1)))
        for a, b in _EDGE.findall(text):
            edges.setdefault(a.split(":")[-1], set()).add(b.split(":")[-1])
    memo: dict[str, tuple[int, list[str]]] = {}

    def deepest(fn: str, seen: frozenset[str]) -> tuple[int, list[str]]:
        if fn in memo:
            return memo[fn]
        best: tuple[int, list[str]] = (0, [])
        for callee in edges.get(fn, ()):
            if callee in seen:  # recursion: not expected in this firmware
                continue
            best = max(best, deepest(callee, seen | {callee}), key=lambda t: t[0])
        own = frames.get(fn)
        res = ((own or 0) + best[0], [fn if own is not None else f"{fn}?"] + best[1])
        memo[fn] = res
        return res

    if root not in frames and root not in edges:
        return 0, []
    return deepest(root, frozenset({root}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    _LIVE.discard(proc)
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)


# QEMU dies with edgekd, however edgekd ends: an exception or Ctrl-C (the ``finally`` in run_qemu),
# SIGTERM / SIGHUP (``timeout``, a closed terminal: _on_signal), a normal exit (atexit), SIGKILL or a
# crash (the kernel's parent-death signal, set in the child before exec).
_LIVE: set[subprocess.Popen] = set()
_KILL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_PREVIOUS: dict[int, Any] = {}  # signal -> the handler run_qemu replaced


def _kill_all() -> None:
    """SIGKILL the process group of every QEMU still running (no waiting: safe in a signal handler)."""
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    _LIVE.clear()


def _on_signal(signum: int, frame: Any) -> None:
    """Kill QEMU, then let the signal do what it did before (by default: end edgekd with it)."""
    _kill_all()
    previous = _PREVIOUS.get(signum)
    if callable(previous):  # a handler someone else installed decides what happens next
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    """Route SIGTERM/SIGHUP through :func:`_on_signal` (main thread only; Python allows no other)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _KILL_SIGNALS:
        current = signal.getsignal(sig)
        if current is not _on_signal and current is not signal.SIG_IGN:
            _PREVIOUS[sig] = current
            signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if _LIVE:
        return
    for sig, previous in list(_PREVIOUS.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        del _PREVIOUS[sig]


def _die_with_parent_fn() -> Any:
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when edgekd ends (Linux), else None.

    The kernel sends it when the *thread* that started QEMU ends, which is never before run_qemu's
    ``with`` block (run in that thread) is left."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # edgekd already ended between fork and prctl
            os._exit(1)

    return preexec


atexit.register(_kill_all)


@contextlib.contextmanager
def run_qemu(
    elf: str | os.PathLike, *, icount_shift: int = ICOUNT_SHIFT
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start QEMU on ``elf`` with UART0 on a free TCP port of 127.0.0.1 (it waits for the host to
    connect); yields (``socket://`` URL, process). QEMU is always stopped: on exit, an error, Ctrl-C,
    SIGTERM, SIGHUP, and (Linux) when edgekd is killed outright."""
    qemu = tool("qemu-system-arm")
    port = _free_port()
    cmd = [qemu, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-icount", f"shift={icount_shift}",
           "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on", "-kernel", str(elf)]  # fmt: skip
    log = Path(elf).with_suffix(".qemu.log")
    proc = None
    _install_handlers()
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_die_with_parent_fn())  # fmt: skip
        _LIVE.add(proc)
        time.sleep(0.1)
        if proc.poll() is not None:
            raise EdgekdError(f"qemu-system-arm exited with code {proc.returncode} at start: "
                              f"{log.read_text(errors='replace').strip()[:300]}")  # fmt: skip
        # QEMU waits for the first connection (the host runner's, which retries until it listens)
        yield f"socket://127.0.0.1:{port}", proc
    finally:
        if proc is not None:
            _stop(proc)
        _restore_handlers()


@contextlib.contextmanager
def emulated_board(model_path: str | os.PathLike, target: str, build_dir: str | os.PathLike,
                   quiet: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Build the firmware for ``model_path`` and run it in QEMU; yields (port URL, facts for bench.json)."""
    if target != "cortex-m4-qemu":
        raise EdgekdError(
            f"--emulate runs the cortex-m4-qemu target only, not {target!r}; use --target cortex-m4-qemu"
        )
    fw = build_firmware(model_path, build_dir)
    facts = {
        "device": "emulated Cortex-M4 (QEMU mps2-an386, edgekd C backend firmware)",
        "emulated": True,
        "time_base": f"emulated: qemu -icount shift={ICOUNT_SHIFT} (1 instruction = {2**ICOUNT_SHIFT} ns); "
        "deterministic, not cycle-accurate",
        "instructions_per_us": 1000 / 2**ICOUNT_SHIFT,
        "memory": fw.memory,
        "c_model": fw.c_model,
        "firmware": str(fw.elf),
        "window_s": 0.02,
    }
    with run_qemu(fw.elf) as (url, _proc):
        yield url, facts
