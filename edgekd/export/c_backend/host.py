"""Compile generated C with the host ``gcc`` and run it on int8 inputs (for bit-exactness checks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgekd.child import TIMEOUT_ENV, default_timeout, exit_reason, limit_preexec
from edgekd.errors import EdgekdError
from edgekd.export.c_backend.codegen import CModel

HOST_MAIN = """#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "edgekd_model.h"
/* stdin: N input samples (raw int8); stdout: N outputs. argv[1] = repeats per sample (timing). */
int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 1;
    static int8_t buf[EDGEKD_INPUT_SIZE];
    double ns = 0; long n = 0;
    while (fread(buf, 1, EDGEKD_INPUT_SIZE, stdin) == EDGEKD_INPUT_SIZE) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int r = 0; r < reps; ++r) { memcpy(edgekd_input(), buf, EDGEKD_INPUT_SIZE); edgekd_invoke(); }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ns += (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec); n += reps;
        fwrite(edgekd_output(), 1, EDGEKD_OUTPUT_SIZE, stdout);
    }
    fprintf(stderr, "ns_per_inference %.1f\\n", n ? ns / n : 0.0);
    return 0;
}
"""


def gcc() -> str | None:
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


class HostBuild:
    """The generated model compiled for the host; call it on a batch of int8 samples. A context
    manager: the temporary build folder is removed on exit."""

    def __init__(self, cmodel: CModel, workdir: str | os.PathLike | None = None, opt: str = "-O2") -> None:
        cc = gcc()
        if cc is None:
            raise EdgekdError(
                "no host C compiler (gcc) found; install gcc to check the C backend on the host"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekd-c-") if workdir is None else None
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        cmodel.write(self.dir)
        (self.dir / "host_main.c").write_text(HOST_MAIN)
        self.exe = self.dir / "model_host"
        srcs = [str(self.dir / f) for f in ("host_main.c", *cmodel.sources)]
        cmd = [
            cc,
            opt,
            "-std=c99",
            "-D_POSIX_C_SOURCE=199309L",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(self.exe),
            *srcs,
        ]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=default_timeout())
        except subprocess.TimeoutExpired:
            raise EdgekdError(
                f"{cmodel.source}: {cc} did not compile the generated C within {default_timeout():g} s "
                f"(model far too big?); raise {TIMEOUT_ENV} if it is genuine"
            ) from None
        if r.returncode != 0:
            raise EdgekdError(
                f"{cmodel.source}: the generated C does not compile with {cc}: {r.stderr.strip()[:400]}"
            )
        self.source = cmodel.source
        self.in_bytes, self.out_bytes = cmodel.input["bytes"], cmodel.output["bytes"]
        self.ns_per_inference = 0.0

    def __call__(self, x: np.ndarray, repeats: int = 1) -> np.ndarray:
        data = np.ascontiguousarray(x).astype(np.int8, copy=False).reshape(len(x), -1)
        if data.shape[1] != self.in_bytes:
            raise EdgekdError(f"input samples have {data.shape[1]} bytes, the model takes {self.in_bytes}")
        try:  # the generated code trusts the model: its own process, with time and memory limits
            r = subprocess.run([str(self.exe), str(repeats)], input=data.tobytes(), capture_output=True,
                               timeout=default_timeout(), preexec_fn=limit_preexec())  # fmt: skip
        except subprocess.TimeoutExpired:
            raise EdgekdError(
                f"{self.source}: the host build of the generated C did not finish within "
                f"{default_timeout():g} s; raise {TIMEOUT_ENV} if the model is genuinely that slow"
            ) from None
        if r.returncode != 0:
            said = " ".join(r.stderr.decode("utf-8", "replace").split())[:160]
            raise EdgekdError(
                f"{self.source}: the host build of the generated C crashed ({exit_reason(r.returncode)})"
                f"{f' ({said})' if said else ''}; the model is corrupt or the C backend mishandles it, "
                "please report the model"
            )
        for line in r.stderr.decode().splitlines():
            if line.startswith("ns_per_inference"):
                self.ns_per_inference = float(line.split()[1])
        return np.frombuffer(r.stdout, dtype=np.int8).reshape(len(x), self.out_bytes)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HostBuild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
