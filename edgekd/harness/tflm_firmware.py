"""The TFLite Micro firmware for the emulated Cortex-M4: ee_main.c's protocol around TFLite Micro
(``firmware/tflm/tflm_model.cc``), with exactly the model's ops, built from a TFLite Micro source tree
made by TFLite Micro's ``create_tflm_tree.py`` (``--runtime tflm``: CMSIS-NN kernels;
``tflm-reference``: TFLite Micro's reference kernels).

Only what the model needs is compiled: the firmware is linked against an archive of the tree's objects
compiled so far; each undefined symbol names the tree files that define it (a scan of the sources'
top-level definitions), which are compiled and added until the link succeeds. An archive only lends
the members a link needs, so the firmware is the one a full ``libtflm.a`` gives. Objects are cached per tree, compiler and flags under
``~/.cache/edgekd/tflm/<key>/`` (``$EDGEKD_TFLM_CACHE``), each written atomically (temp file, then
rename): a killed build leaves no broken object.

The firmware prints prefix-less lines the host runner skips: before its banner the arena TFLite Micro
used on the 32-bit target (``edgekd-tflm: arena_used_bytes=N arena_bytes=M``), after the first inference
the stack's high-water mark, measured by painting the free stack at boot (``edgekd-tflm:
stack_bytes=N``); :func:`apply_boot_report` puts them in bench.json's ``memory``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import EdgekdError

if TYPE_CHECKING:
    import numpy as np

    from edgekd.harness.qemu import Firmware

RUNTIMES = ("c", "tflm", "tflm-reference")  # --runtime: edgekd's C backend, or TFLite Micro
TREE_NAMES = {"tflm": "tflm_tree_cmsisnn", "tflm-reference": "tflm_tree_ref"}
TREE_ENV = "EDGEKD_TFLM_DIR"  # the folder holding tflm_tree_cmsisnn/ and tflm_tree_ref/
CACHE_ENV = "EDGEKD_TFLM_CACHE"
BUILD_VERSION = "1"  # part of the cache key: bump when the flags' meaning or the object layout changes
VENDOR = {"tflm": "edgekd TFLite Micro + CMSIS-NN on QEMU mps2-an386",
          "tflm-reference": "edgekd TFLite Micro (reference kernels) on QEMU mps2-an386"}  # fmt: skip
REPORT_PREFIX = "edgekd-tflm:"
MAX_LINK_ROUNDS = 16
MEMBER_SEP = "+"  # "/" in a source's path, in its object's name

# TFLite Micro's own flags for cortex_m_generic / cortex-m4+fp (the third-party README)
COMMON_FLAGS = ["-ffunction-sections", "-fdata-sections", "-funsigned-char", "-DTF_LITE_STATIC_MEMORY",
                "-DTF_LITE_MCU_DEBUG_LOG", "-DKERNELS_OPTIMIZED_FOR_SPEED"]  # fmt: skip
CMSIS_NN_FLAGS = ["-DCMSIS_NN", "-DARM_NN_ENABLE_F16=0", "-DARM_NN_ENABLE_F32=0"]
CXX_FLAGS = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics", "-fno-unwind-tables"]
C_FLAGS = ["-std=c17"]
INCLUDE_DIRS = ("", "third_party/flatbuffers/include", "third_party/gemmlowp", "third_party/ruy",
                "third_party/cmsis/CMSIS/Core/Include", "third_party/cmsis_nn",
                "third_party/cmsis_nn/Include")  # fmt: skip
# not for this board: the tree's micro-frontend/signal sources, kissfft, and cortex_m_generic's
# DebugLog/micro_time (firmware/tflm/tflm_board.cc provides them on board.h)
EXCLUDED = ("signal/", "third_party/kissfft/", "tensorflow/lite/micro/cortex_m_generic/")
GLUE_SOURCES = ("tflm_model.cc", "tflm_board.cc")
PROTOCOL_SOURCES = ("ee_main.c", "board_mps2_an386.c", "startup_cm4.c")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_tree(runtime: str) -> Path:
    """``$EDGEKD_TFLM_DIR/<tree>``, else ``<repo>/../shared/third_party/tflite-micro/<tree>``."""
    base = os.environ.get(TREE_ENV) or repo_root().parent / "shared" / "third_party" / "tflite-micro"
    return Path(base) / TREE_NAMES[runtime]


def find_tree(runtime: str, tree: str | os.PathLike | None = None) -> Path:
    """The TFLite Micro tree for ``runtime``; one EdgekdError line saying how to get it when absent."""
    if runtime not in TREE_NAMES:
        raise EdgekdError(f"--runtime {runtime}: valid: {', '.join(RUNTIMES)}")
    path = Path(tree) if tree is not None else default_tree(runtime)
    if not (path / "tensorflow/lite/micro/micro_interpreter.h").is_file():
        opts = "TARGET=cortex_m_generic TARGET_ARCH=cortex-m4+fp" + (
            " OPTIMIZED_KERNEL_DIR=cmsis_nn" if runtime == "tflm" else ""
        )
        raise EdgekdError(
            f"no TFLite Micro tree at {path} (--runtime {runtime}); make one with TFLite Micro's "
            "tensorflow/lite/micro/tools/project_generation/create_tflm_tree.py "
            f'--makefile_options="{opts}" {path}, or pass --tflm-tree / set ${TREE_ENV}'
        )
    return path.resolve()


def uses_cmsis_nn(tree: Path) -> bool:
    return (tree / "tensorflow/lite/micro/kernels/cmsis_nn").is_dir()


def compile_flags(tree: Path, opt: str = "-Os") -> list[str]:
    """Flags shared by C and C++ sources of ``tree`` (CPU, optimisation, defines, include dirs)."""
    from edgekd.harness.qemu import CPU_FLAGS

    flags = [*CPU_FLAGS, opt, *COMMON_FLAGS, *(CMSIS_NN_FLAGS if uses_cmsis_nn(tree) else [])]
    return flags + [f"-I{tree / d}" if d else f"-I{tree}" for d in INCLUDE_DIRS if (tree / d).is_dir()]


def language_flags(src: str) -> list[str]:
    return C_FLAGS if src.endswith(".c") else CXX_FLAGS


def tree_sources(tree: Path) -> list[str]:
    """The tree's C/C++ sources (relative paths) a classifier firmware may need."""
    out = []
    for p in tree.rglob("*"):
        rel = p.relative_to(tree).as_posix()
        if p.suffix in (".c", ".cc") and not rel.startswith(EXCLUDED):
            out.append(rel)
    return sorted(out)


def tree_fingerprint(tree: Path) -> str:
    """Changes when any file of the tree does (path, size, mtime in ns), so an edited or regenerated tree
    rebuilds. Only stat() is called, no file is read (about 20 ms for the 644-file CMSIS-NN tree)."""
    h = hashlib.sha256()
    for p in sorted(tree.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(tree)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgekd" / "tflm")


def cache_dir(tree: Path, flags: Sequence[str], compiler: str) -> Path:
    """``<cache root>/<hash of tree, its content, compiler version and flags>``."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = "\n".join([BUILD_VERSION, str(tree), tree_fingerprint(tree), *version, *flags])
    return cache_root() / hashlib.sha256(key.encode()).hexdigest()[:16]


def have_cxx_toolchain() -> bool:
    """arm-none-eabi-g++ with newlib's libstdc++ (Debian libstdc++-arm-none-eabi-newlib) and QEMU."""
    from edgekd.harness.qemu import CPU_FLAGS, have_toolchain

    gxx = shutil.which("arm-none-eabi-g++")
    if gxx is None or not have_toolchain():
        return False
    r = subprocess.run([gxx, *CPU_FLAGS, "-print-file-name=libstdc++_nano.a"], capture_output=True, text=True)
    return "/" in r.stdout


# ---- which tree files define a symbol -------------------------------------------------------------

_DEFINITION = re.compile(r"((?:\w+::)*~?\w+)\s*\(")
_UNDEFINED = re.compile(r"undefined reference to [`']([^']+)'")
_SPECIAL = re.compile(r"(?:construction vtable|vtable|typeinfo name|typeinfo|VTT) for (.+)")


@lru_cache(maxsize=4)
def definition_index(tree: Path) -> dict[str, frozenset[str]]:
    """Name -> files with a top-level definition of it: a line at column 0 (not a comment, directive or
    brace) naming ``Name(`` or ``Class::Name(``, the style of TFLite Micro and CMSIS-NN sources.
    A superset (a declaration counts too): an extra file costs compile time, never a wrong firmware."""
    index: dict[str, set[str]] = {}
    for rel in tree_sources(tree):
        for line in (tree / rel).read_text(errors="replace").splitlines():
            if not line or line[0] in " \t#/*{}()" or line.rstrip().endswith(";"):
                continue
            m = _DEFINITION.search(line)
            if m is None:
                continue
            parts = m.group(1).split("::")
            for name in {parts[-1], "::".join(parts[-2:]), *(p + "::" for p in parts[:-1])}:
                index.setdefault(name, set()).add(rel)
    return {k: frozenset(v) for k, v in index.items()}


def symbol_key(symbol: str) -> str:
    """The name to look up for a demangled undefined symbol: ``Class::method`` when the symbol is a
    member (a capitalised scope), ``Class::`` for its vtable, else the bare function name."""
    special = _SPECIAL.match(symbol)
    s = special.group(1) if special else symbol
    depth = 0
    plain = []
    for ch in s:  # drop template arguments and the parameter list
        depth += ch in "<("
        if depth == 0:
            plain.append(ch)
        depth -= ch in ">)"
    parts = [p for p in "".join(plain).strip().split("::") if p]
    if not parts:
        return symbol
    if special:
        return parts[-1] + "::"
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return "::".join(parts[-2:])
    return parts[-1]


def undefined_symbols(link_stderr: str) -> set[str]:
    return set(_UNDEFINED.findall(link_stderr))


def defining_files(symbols: Iterable[str], index: dict[str, frozenset[str]]) -> set[str]:
    out: set[str] = set()
    for s in symbols:
        out |= index.get(symbol_key(s), frozenset())
    return out


def mentioning_files(symbols: Iterable[str], tree: Path) -> set[str]:
    """Files of ``tree`` that name any of ``symbols`` (their bare names) anywhere: the wide scan."""
    names = {symbol_key(s).rstrip(":").split("::")[-1] for s in symbols}
    words = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
    return {rel for rel in tree_sources(tree) if words.search((tree / rel).read_text(errors="replace"))}


# ---- compiling, cached ----------------------------------------------------------------------------


def object_path(cache: Path, rel: str) -> Path:
    """``<cache>/obj/tensorflow+lite+...+conv.cc.o``: one flat folder, a unique name per source (an
    archive keeps members by file name: ``kernels/kernel_util.cc`` and ``micro/kernels/kernel_util.cc``
    must not replace each other)."""
    return cache / "obj" / (rel.replace("/", MEMBER_SEP) + ".o")


def linked_members(map_text: str) -> list[str]:
    """The tree files an archive lent the link (the linker map's archive-member section)."""
    section = map_text.split("Archive member included", 1)[-1].split("\nDiscarded input sections", 1)[0]
    found = re.findall(r"libtflm\.a\(([^)]+)\.o\)\n", section)
    return sorted({m.replace(MEMBER_SEP, "/") for m in found})


def compile_one(tree: Path, rel: str, flags: Sequence[str], cache: Path) -> Path:
    """``rel`` of ``tree`` compiled into the cache (atomically); reused when there."""
    from edgekd.harness.qemu import tool

    obj = object_path(cache, rel)
    if obj.is_file():
        return obj
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_name(f"{obj.name}.tmp{os.getpid()}")
    cc = tool("arm-none-eabi-gcc" if rel.endswith(".c") else "arm-none-eabi-g++")
    r = subprocess.run([cc, *flags, *language_flags(rel), "-c", str(tree / rel), "-o", str(tmp)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EdgekdError(f"TFLite Micro tree {tree}: {rel} does not compile: {r.stderr.strip()[:300]}")
    os.replace(tmp, obj)
    return obj


def compile_many(tree: Path, rels: Iterable[str], flags: Sequence[str], cache: Path, jobs: int) -> None:
    todo = sorted(r for r in set(rels) if not object_path(cache, r).is_file())
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda rel: compile_one(tree, rel, flags, cache), todo))


def cached_sources(cache: Path) -> set[str]:
    root = cache / "obj"
    return {p.name[:-2].replace(MEMBER_SEP, "/") for p in root.glob("*.o")} if root.is_dir() else set()


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---- the firmware ---------------------------------------------------------------------------------


def write_sources(model_path: Path, d: Path, arena: int) -> list[str]:
    """The model (C array, op resolver, edgekd_model.h) and the firmware templates into ``d``."""
    from edgekd.export.micro import write_c_files
    from edgekd.graph import read_tflite
    from edgekd.graph.tflite_model import read_tflite_bytes
    from edgekd.harness.firmware_project import tflm_model_header
    from edgekd.harness.qemu import FIRMWARE_DIR, copy_templates

    m = read_tflite(model_path)
    write_c_files(d, read_tflite_bytes(model_path), m.op_names())
    (d / "edgekd_model.h").write_text(tflm_model_header(model_path, arena))
    copy_templates(d)
    for f in GLUE_SOURCES:
        shutil.copy2(FIRMWARE_DIR / "tflm" / f, d / f)
    return m.op_names()


def compile_firmware_sources(model_path: Path, d: Path, tree_flags: Sequence[str], defines: Sequence[str]
                             ) -> list[str]:  # fmt: skip
    """ee_main.c and the board with the C backend's flags, the TFLite Micro glue with the tree's; all with
    GCC's call-graph files for :func:`edgekd.harness.qemu.stack_usage`. Returns the object names."""
    from edgekd.harness.qemu import CFLAGS, tool

    stack_info = ["-fstack-usage", "-fcallgraph-info=su"]
    jobs = [(tool("arm-none-eabi-gcc"), [*CFLAGS, *defines], s) for s in PROTOCOL_SOURCES]
    jobs += [(tool("arm-none-eabi-g++"), [*tree_flags, *CXX_FLAGS, *stack_info, "-I.", *defines], s)
             for s in (*GLUE_SOURCES, "model_data.cc")]  # fmt: skip
    objs = []
    for cc, flags, src in jobs:
        obj = Path(src).with_suffix(".o").name
        r = subprocess.run([cc, *flags, "-c", src, "-o", obj], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise EdgekdError(f"{model_path}: the TFLite Micro firmware does not compile ({src}): "
                              f"{r.stderr.strip()[:300]}")  # fmt: skip
        objs.append(obj)
    return objs


def link(
    d: Path, objs: Sequence[str], archive_members: Iterable[Path], elf: str
) -> subprocess.CompletedProcess:
    """Archive ``archive_members`` into ``d/libtflm.a`` and link ``objs`` against it."""
    from edgekd.harness.qemu import LDFLAGS, tool

    lib = d / "libtflm.a"
    lib.unlink(missing_ok=True)
    members = sorted(str(p) for p in archive_members)
    if members:
        r = subprocess.run(
            [tool("arm-none-eabi-ar"), "rcs", str(lib), *members], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise EdgekdError(f"{lib}: arm-none-eabi-ar failed: {r.stderr.strip()[:300]}")
    libs = [str(lib)] if members else []
    cmd = [tool("arm-none-eabi-g++"), *LDFLAGS, "--specs=nosys.specs", "-o", elf, *objs,
           "-Wl,--start-group", *libs, "-lm", "-Wl,--end-group", f"-Wl,-Map={Path(elf).stem}.map"]  # fmt: skip
    return subprocess.run(cmd, cwd=d, capture_output=True, text=True)


def link_needed(model_path: Path, tree: Path, d: Path, objs: Sequence[str], flags: Sequence[str],
                cache: Path, jobs: int, elf: str = "firmware.elf") -> dict[str, Any]:  # fmt: skip
    """Link ``objs`` against the tree, compiling the files undefined symbols point at until it links;
    returns what was compiled and linked (for bench.json)."""
    everything = set(tree_sources(tree))
    before = cached_sources(cache)
    have = before & everything
    index = definition_index(tree)
    for _ in range(MAX_LINK_ROUNDS):
        r = link(d, objs, (object_path(cache, rel) for rel in have), elf)
        if r.returncode == 0:
            used = linked_members((d / f"{Path(elf).stem}.map").read_text(errors="replace"))
            return {"compiled_files": len(cached_sources(cache) - before), "archive_files": len(have), "linked_files": used,
                    "link_rounds": _ + 1}  # fmt: skip
        missing = undefined_symbols(r.stderr)
        if not missing:
            raise _link_error(model_path, r.stderr)
        new = defining_files(missing, index) - have
        if not new:  # no top-level definition found: any file naming it (a macro, an indented one)
            new = mentioning_files(missing, tree) - have
        if not new:
            raise EdgekdError(f"{model_path}: the TFLite Micro firmware does not link: undefined "
                              f"{', '.join(sorted(missing)[:5])} (an op or a feature the tree lacks?)")  # fmt: skip
        compile_many(tree, new, flags, cache, jobs)
        have |= new
    raise EdgekdError(f"{model_path}: the TFLite Micro firmware did not link after {MAX_LINK_ROUNDS} rounds")


def _link_error(model_path: Path, stderr: str) -> EdgekdError:
    from edgekd.harness.qemu import BOARD_FLASH, BOARD_RAM

    overflow = re.search(r"region [`']?(\w+)'? overflowed by (\d+) bytes", stderr)
    if overflow:
        return EdgekdError(
            f"{model_path}: the TFLite Micro firmware does not fit the emulated board: {overflow.group(1)} "
            f"overflowed by {int(overflow.group(2)):,} bytes (mps2-an386 has {BOARD_RAM // 1024} KiB RAM and "
            f"{BOARD_FLASH // 1024} KiB code memory); use a smaller model"
        )
    return EdgekdError(f"{model_path}: the TFLite Micro firmware does not link: {stderr.strip()[:300]}")


def build_tflm_firmware(model_path: str | os.PathLike, build_dir: str | os.PathLike, runtime: str = "tflm",
                        tree: str | os.PathLike | None = None, model_name: str | None = None,
                        input_format: str | None = None, results: str | None = None,
                        samples: np.ndarray | None = None, opt: str = "-Os",
                        jobs: int | None = None) -> Firmware:  # fmt: skip
    """ee_main.c + TFLite Micro (``runtime`` ``tflm`` / ``tflm-reference``, the tree ``tree`` or
    :func:`default_tree`) for QEMU mps2-an386, as :func:`edgekd.harness.qemu.build_firmware` builds the
    C backend's (the same settings and baked ``samples``); ``opt``: the tree's optimisation flag."""
    import time

    from edgekd.graph.tflite_model import read_tflite_bytes
    from edgekd.harness.firmware_project import tflm_arena_bytes
    from edgekd.harness.mlperf import WireSettings
    from edgekd.harness.qemu import Firmware, _write_samples, elf_memory, tool

    src_tree = find_tree(runtime, tree)
    if not have_cxx_toolchain():
        raise EdgekdError("the TFLite Micro firmware needs arm-none-eabi-g++ with newlib's libstdc++ and "
                          "qemu-system-arm: install the Debian packages gcc-arm-none-eabi "
                          "libstdc++-arm-none-eabi-newlib qemu-system-arm (scripts/ensure-system-deps.sh)")  # fmt: skip
    settings = WireSettings.of(model_path, model_name, input_format, results, VENDOR[runtime])
    d = Path(build_dir)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    model = Path(model_path)
    arena = tflm_arena_bytes(read_tflite_bytes(model))
    ops = write_sources(model, d, arena)
    defines = [*settings.defines(), "-DEE_BOOT_REPORT"]
    n_samples = 0
    if samples is not None:
        n_samples = _write_samples(model_path, d, samples, settings)
        defines.append("-DEE_SAMPLES")
    flags = compile_flags(src_tree, opt)
    started = time.monotonic()
    objs = compile_firmware_sources(model, d, flags, defines)
    if n_samples:
        objs.append(_compile_samples(model, d))
    cache = cache_dir(src_tree, flags, tool("arm-none-eabi-g++"))
    linked = link_needed(model, src_tree, d, objs, flags, cache, jobs or default_jobs())
    mem = elf_memory(d / "firmware.elf", d)
    mem["arena"] = arena
    mem["stack_callgraph"] = mem["stack"]
    facts = {"runtime": runtime, "tflm": {"tree": str(src_tree), "cache": str(cache), "opt": opt, "ops": ops,
                                          "build_s": round(time.monotonic() - started, 1), **linked}}  # fmt: skip
    device = "TFLite Micro + CMSIS-NN firmware" if uses_cmsis_nn(src_tree) else "TFLite Micro firmware"
    return Firmware(d / "firmware.elf", mem, {}, settings, n_samples, device=device, facts=facts)


def _compile_samples(model_path: Path, d: Path) -> str:
    from edgekd.harness.qemu import CFLAGS, tool

    r = subprocess.run([tool("arm-none-eabi-gcc"), *CFLAGS, "-c", "edgekd_samples.c", "-o", "edgekd_samples.o"],
                       cwd=d, capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise EdgekdError(
            f"{model_path}: firmware does not compile (edgekd_samples.c): {r.stderr.strip()[:300]}"
        )
    return "edgekd_samples.o"


# ---- the firmware's boot report -------------------------------------------------------------------

STACK_METHOD = (
    "painted: the high-water mark from the top of the stack over boot, AllocateTensors, the protocol and the "
    "first inference (the firmware paints the free stack at boot), or the protocol firmware's call graph "
    "(stack_callgraph, GCC -fcallgraph-info) where that is deeper"
)
_REPORT_FIELD = re.compile(r"(\w+)=(\d{1,10})\b")


def parse_boot_report(lines: Iterable[str]) -> dict[str, int]:
    """The fields of the firmware's ``edgekd-tflm:`` lines (``arena_used_bytes``, ``arena_bytes`` at boot,
    ``stack_bytes`` after the first inference); the device's text: only bounded decimals are read."""
    out: dict[str, int] = {}
    for line in lines:
        at = line.find(REPORT_PREFIX)
        if at >= 0:
            out.update((k, int(v)) for k, v in _REPORT_FIELD.findall(line[at:]))
    return out


def apply_boot_report(lines: Iterable[str], record: dict[str, Any]) -> None:
    """The arena used on the target and the painted stack peak into ``record["memory"]``;
    ``record["tflm"]["boot_report"]`` says whether the lines came."""
    report = parse_boot_report(lines)
    mem = record.get("memory") or {}
    record.setdefault("tflm", {})["boot_report"] = "arena_used_bytes" in report
    if not mem:
        return
    if "arena_used_bytes" in report:
        mem["arena_used"] = report["arena_used_bytes"]
    if "stack_bytes" in report:
        mem["stack_painted"] = report["stack_bytes"]
        mem["stack"] = max(report["stack_bytes"], mem["stack_callgraph"])
        mem["stack_method"] = STACK_METHOD
        mem["ram_bytes"] = mem["data"] + mem["bss"] + mem["stack"]
