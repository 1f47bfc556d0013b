"""edgekd.native_io.redirect_fds: the one fd redirection (locked, flushes C stdio, restores the fds)."""

from __future__ import annotations

import ctypes
import os
import threading

from edgekd.native_io import redirect_fds


def _c_print(text: str) -> None:
    libc = ctypes.CDLL(None)
    libc.printf(text.encode())  # buffered C stdio: only a flush makes it reach the descriptor


def test_c_stdio_lands_in_the_sink_and_the_descriptors_come_back(tmp_path, capfd):
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    with open(tmp_path / "log", "w+b") as sink:
        with redirect_fds(sink):
            _c_print("from C\n")
            os.write(2, b"fd 2\n")
        sink.seek(0)
        text = sink.read().decode()
    assert "from C" in text and "fd 2" in text
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    assert "from C" not in capfd.readouterr().out


def test_nested_blocks_and_threads_do_not_deadlock(tmp_path):
    done = []

    def work() -> None:
        with redirect_fds(fds=(1,)), redirect_fds(fds=(2,)):
            done.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(done) == 4
