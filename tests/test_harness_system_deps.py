"""scripts/ensure-system-deps.sh: the system packages the harness tests need.

Quiet when everything is there; without root (or apt-get) it says what will skip and exits 0, except in
CI (CI=true), where missing packages fail `make test`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-system-deps.sh"


def _run(tmp_path: Path, uid: int, ci: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"  # a PATH with none of the tools and a fake `id`
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    env = {"PATH": str(bin_dir), **({"CI": ci} if ci is not None else {})}
    return subprocess.run(["/bin/sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_missing_tools_without_root_skip_outside_ci(tmp_path):
    r = _run(tmp_path, 1000, None)
    assert r.returncode == 0
    assert "qemu-system-arm" in r.stderr and "gcc-arm-none-eabi" in r.stderr and "will skip" in r.stderr


def test_missing_tools_fail_in_ci(tmp_path):
    r = _run(tmp_path, 1000, "true")
    assert r.returncode == 1 and "must run in CI" in r.stderr


def test_root_without_apt_get_is_explained(tmp_path):
    r = _run(tmp_path, 0, None)
    assert r.returncode == 0 and "no apt-get" in r.stderr


def test_nothing_to_do_when_everything_is_installed():
    from edgekd.harness.qemu import have_toolchain

    if not have_toolchain():
        import pytest

        pytest.skip("toolchain not installed here")
    r = subprocess.run(["/bin/sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
