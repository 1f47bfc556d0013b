"""edgekd.harness.tflm_firmware: TFLite Micro (+ CMSIS-NN) firmware on the emulated Cortex-M4.

The fast tests need no build (resolver, arena, tree lookup, symbol resolution, the boot report). The
slow one builds the CMSIS-NN firmware for a sample model and checks it on QEMU: bit-exact raw results
against the host TFLite Micro, and instructions / flash / RAM / arena in bench.json. It skips without
the TFLite Micro tree (../shared/third_party/tflite-micro); without arm-none-eabi-g++ and libstdc++ it
skips outside CI and fails in CI (CI=true). A cold build compiles the 93 tree files tiny_cnn needs
(2 min 21 s on 2 cores with another job running), then the object cache makes it ~10 s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekd.errors import EdgekdError
from edgekd.harness import tflm_firmware as tf

IN_CI = os.environ.get("CI", "").lower() in ("1", "true")


def test_resolver_has_exactly_the_models_ops():
    from edgekd.export.micro import op_resolver_header

    h = op_resolver_header(["SOFTMAX", "CONV_2D", "FULLY_CONNECTED"])
    assert "MicroMutableOpResolver<kNumOps>" in h and "constexpr int kNumOps = 3;" in h
    assert [line.split(".")[1].split("(")[0] for line in h.splitlines() if "resolver.Add" in line] == [
        "AddConv2D",
        "AddFullyConnected",
        "AddSoftmax",
    ]


def test_arena_is_the_host_measure_plus_exports_margin(monkeypatch):
    from edgekd.harness import firmware_project

    monkeypatch.setattr("edgekd.graph.measure_arena", lambda model: {"total": 6771, "head": 1, "tail": 2})
    assert firmware_project.tflm_arena_bytes(b"model") == 7808  # + max(1 KiB, 10%), rounded up to 16
    monkeypatch.setattr("edgekd.graph.measure_arena", lambda model: {"total": 17120, "head": 1, "tail": 2})
    assert firmware_project.tflm_arena_bytes(b"model") == 18832  # the AD sample needs more than 17,120


def test_missing_tree_is_one_line_saying_how_to_get_it(tmp_path):
    with pytest.raises(EdgekdError) as e:
        tf.find_tree("tflm", tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "nowhere") in msg
    assert "create_tflm_tree.py" in msg and "OPTIMIZED_KERNEL_DIR=cmsis_nn" in msg and "--tflm-tree" in msg
    with pytest.raises(EdgekdError) as e:
        tf.find_tree("tflm-reference", tmp_path)
    assert "OPTIMIZED_KERNEL_DIR" not in str(e.value) and "TARGET=cortex_m_generic" in str(e.value)


def test_default_tree_is_beside_the_repository_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(tf.TREE_ENV, raising=False)
    assert (
        tf.default_tree("tflm") == tf.repo_root().parent / "shared/third_party/tflite-micro/tflm_tree_cmsisnn"
    )
    monkeypatch.setenv(tf.TREE_ENV, str(tmp_path))
    assert tf.default_tree("tflm-reference") == tmp_path / "tflm_tree_ref"


@pytest.mark.parametrize(
    "symbol, key",
    [
        ("tflite::MicroInterpreter::Invoke()", "MicroInterpreter::Invoke"),
        ("tflite::micro::GetTensorShape(TfLiteEvalTensor const*)", "GetTensorShape"),
        ("tflite::Register_CONV_2D()", "Register_CONV_2D"),
        ("vtable for tflite::MicroAllocator", "MicroAllocator::"),
        ("arm_convolve_wrapper_s8", "arm_convolve_wrapper_s8"),
        ("tflite::reference_ops::Foo<signed char>(int, std::pair<int, int>)", "Foo"),
    ],
)
def test_symbol_key(symbol, key):
    assert tf.symbol_key(symbol) == key


def test_undefined_symbols_point_at_the_defining_files(tmp_path):
    (tmp_path / "a.cc").write_text(
        "namespace tflite {\nTfLiteStatus MicroThing::Run(int x) {\n  return Helper(x);\n}\n}\n"
    )
    (tmp_path / "b.cc").write_text("int Helper(int x) { return x; }\nstatic int Run(int y);\n")
    (tmp_path / "signal").mkdir()
    (tmp_path / "signal" / "c.cc").write_text("int Helper(int x) { return 0; }\n")  # excluded from trees
    stderr = (
        "x.o: in function `main':\nx.c:(.text+0x4): undefined reference to `tflite::MicroThing::Run(int)'\n"
        "a.cc:(.text+0x8): undefined reference to `Helper(int)'\n"
    )
    missing = tf.undefined_symbols(stderr)
    assert missing == {"tflite::MicroThing::Run(int)", "Helper(int)"}
    index = tf.definition_index.__wrapped__(tmp_path)
    assert tf.defining_files(missing, index) == {"a.cc", "b.cc"}
    assert tf.mentioning_files({"Helper(int)"}, tmp_path) == {"a.cc", "b.cc"}


def test_objects_have_unique_archive_names_and_the_map_lists_linked_ones(tmp_path):
    a = tf.object_path(tmp_path, "tensorflow/lite/kernels/kernel_util.cc")
    b = tf.object_path(tmp_path, "tensorflow/lite/micro/kernels/kernel_util.cc")
    assert a.name != b.name and a.parent == b.parent
    text = (
        "Archive member included to satisfy reference by file (symbol)\n\n"
        f"/b/libtflm.a({b.name})\n                              tflm_model.o (tflite::X())\n"
        f"/b/libtflm.a({a.name})\n                              /b/libtflm.a({b.name}) (Y)\n"
        "\nDiscarded input sections\n\n /b/libtflm.a(other.o)\n"
    )
    assert tf.linked_members(text) == sorted(
        ["tensorflow/lite/kernels/kernel_util.cc", "tensorflow/lite/micro/kernels/kernel_util.cc"]
    )
    for name in (a.name, b.name):
        (tmp_path / "obj").mkdir(exist_ok=True)
        (tmp_path / "obj" / name).write_bytes(b"")
    assert tf.cached_sources(tmp_path) == {
        "tensorflow/lite/kernels/kernel_util.cc",
        "tensorflow/lite/micro/kernels/kernel_util.cc",
    }


def test_object_cache_key_follows_the_tree_path_and_every_file_s_size_and_mtime(tmp_path, monkeypatch):
    """The cache key reads the tree's file paths, sizes and mtimes (no file contents): the same tree gives
    the same key; an edited (size or mtime), added or removed file, or the same files at another path,
    another key."""
    monkeypatch.setenv(tf.CACHE_ENV, str(tmp_path / "cache"))
    tree = tmp_path / "tree"
    (tree / "k").mkdir(parents=True)
    src = tree / "k" / "conv.cc"
    src.write_text("int conv() { return 1; }\n")
    (tree / "k" / "conv.h").write_text("int conv();\n")

    def key(t: Path = tree) -> Path:
        return tf.cache_dir(t, ["-Os"], "true")  # `true --version`: an empty compiler version

    first = key()
    assert key() == first and first.parent == tmp_path / "cache"
    st = src.stat()
    src.write_text("int conv() { return 22; }\n")  # one byte longer
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key() != first
    src.write_text("int conv() { return 2; }\n")  # the original size, a new mtime
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert key() != first
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key() == first  # same paths, sizes and mtimes: a content-only edit keeping both is not seen
    (tree / "k" / "new.h").write_text("\n")
    assert key() != first
    (tree / "k" / "new.h").unlink()
    assert key() == first
    other = tmp_path / "copy"
    other.mkdir()
    for p in tree.rglob("*"):
        q = other / p.relative_to(tree)
        if p.is_dir():
            q.mkdir()
        else:
            q.write_bytes(p.read_bytes())
            os.utime(q, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns))
    assert tf.tree_fingerprint(other) == tf.tree_fingerprint(tree) and key(other) != first


def test_boot_report_fills_memory():
    lines = ["boot: hello", "edgekd-tflm: arena_used_bytes=5124 arena_bytes=6784",
             "infer 1 0%: edgekd-tflm: stack_bytes=1400"]  # fmt: skip
    assert tf.parse_boot_report(lines) == {"arena_used_bytes": 5124, "arena_bytes": 6784, "stack_bytes": 1400}
    record = {"memory": {"data": 100, "bss": 8000, "stack": 200, "stack_callgraph": 200}}
    tf.apply_boot_report(lines, record)
    mem = record["memory"]
    assert mem["arena_used"] == 5124 and mem["stack"] == 1400 and mem["ram_bytes"] == 9500
    assert record["tflm"]["boot_report"] is True and mem["stack_painted"] == 1400
    none = {"memory": {"stack": 1}}
    tf.apply_boot_report(["m-ready", "edgekd-tflm: arena_used_bytes=99999999999"], none)
    assert none == {"memory": {"stack": 1}, "tflm": {"boot_report": False}}


def test_runtime_needs_emulate_and_a_known_name(tmp_path):
    from edgekd.harness.bench import run_bench

    with pytest.raises(EdgekdError, match="pass --emulate"):
        run_bench(tmp_path / "m.tflite", target="cortex-m4-qemu", software=True, runtime="tflm")
    with pytest.raises(EdgekdError, match="valid: c, tflm, tflm-reference"):
        run_bench(tmp_path / "m.tflite", target="cortex-m4-qemu", emulate=True, runtime="tvm")


def test_cli_lists_the_runtimes():
    from click.testing import CliRunner

    from edgekd.commands.bench import command

    out = CliRunner().invoke(command, ["--help"]).output
    assert "--runtime [c|tflm|tflm-reference]" in out and "--tflm-tree" in out


def _skip_unless_buildable(runtime: str) -> Path:
    try:
        tree = tf.find_tree(runtime)
    except EdgekdError as e:
        pytest.skip(str(e))
    if not tf.have_cxx_toolchain():
        if IN_CI:
            pytest.fail("CI=true but arm-none-eabi-g++ / libstdc++-arm-none-eabi-newlib / QEMU are missing; "
                        "run scripts/ensure-system-deps.sh", pytrace=False)  # fmt: skip
        pytest.skip("arm-none-eabi-g++ with libstdc++ (libstdc++-arm-none-eabi-newlib) not installed")
    return tree


@pytest.mark.slow
def test_cmsis_nn_firmware_on_qemu_is_bit_exact_and_reports_memory(tmp_path, run_cli):
    from edgekd.graph.sample_models import sample_models

    _skip_unless_buildable("tflm")
    model = sample_models(["tiny_cnn"])["tiny_cnn"]
    out = tmp_path / "bench"
    code, err = run_cli(["bench", str(model), "--target", "cortex-m4-qemu", "--emulate", "--runtime", "tflm",
                         "--results", "raw", "--samples", "4", "--windows", "2", "-o", str(out), "-q"])  # fmt: skip
    assert code == 0, err
    rec = json.loads((out / "bench.json").read_text())
    acc, perf, mem = rec["accuracy"], rec["performance"], rec["memory"]
    assert rec["runtime"] == "tflm" and "CMSIS-NN" in rec["device"]
    assert acc["samples"] == 4 and acc["bytes_equal_samples"] == 4 and acc["bit_exact"] is True
    assert 1e4 < perf["instructions_per_inference"] < 1e8
    assert mem["flash_bytes"] == mem["text"] + mem["data"] > 50_000
    assert mem["ram_bytes"] == mem["data"] + mem["bss"] + mem["stack"]
    assert mem["stack"] == max(mem["stack_painted"], mem["stack_callgraph"]) and mem["stack_painted"] > 500
    assert 0 < mem["arena_used"] <= mem["arena"] <= mem["bss"]
    assert rec["tflm"]["boot_report"] is True and "CONV_2D" in rec["tflm"]["ops"]
    assert any(f.endswith("cmsis_nn/conv.cc") for f in rec["tflm"]["linked_files"])
    assert "bit-exact with host TFLite Micro on 4/4" in err
