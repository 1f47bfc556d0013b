import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("EDGEKD_DATA_DIR", str(REPO.parent / "shared" / "datasets"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "EDGEKD_THREADS", "1"
)  # tests train tiny models: one thread is fastest and deterministic
torch.set_num_threads(1)


def real_data_dir() -> Path:
    return Path(os.environ["EDGEKD_DATA_DIR"])


@pytest.fixture
def mnist_available() -> bool:
    if not (real_data_dir() / "mnist").exists():
        pytest.skip("MNIST not in EDGEKD_DATA_DIR")
    return True


@pytest.fixture
def run_cli(capsys):
    """Run the ``edgekd`` command line in-process: ``code, stderr = run_cli(["train", ...])``."""
    from edgekd.cli import main

    def run(args: list[str]) -> tuple[int, str]:
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        return code, capsys.readouterr().err.strip()

    return run
