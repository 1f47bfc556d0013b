"""The device side of the MLPerf Tiny serial protocol, reply for reply as MLPerf Tiny's
``benchmark/api/internally_implemented.cpp`` (monitor 2.2.0) answers, so that the official runner
drives an edgekd device as it drives a reference submission.

What the reference code does and this class reproduces: commands are cut to their first 80 characters;
the first space-delimited word picks the command and extra words are ignored; ``infer`` defaults to
N=1, W=10 and reads its numbers with ``atoi`` (``infer x`` is N=0, an error); ``db load`` keeps the
buffer's old bytes, answers an oversized load with a prefix-less ``Supplied buffer size ...`` line
(``\\n`` only); ``db HEX`` checks pairs as it writes them (bytes before a bad pair stay written), says
``m-load-done`` once and drops the rest of the line; ``db print`` prints the loaded size, 8 bytes a line
joined by ``-`` (and an empty line when the size is not a multiple of 8); ``help`` is prefix-less text.
Where the reference writes past its buffer (after an oversized load, or beyond its size) the bytes are
dropped instead and the reply text is the same. An empty command (undefined in the reference: a NULL
token) answers only ``m-ready``.

The model side (load the tensor, run, print results) is the submitter's part: :class:`ModelPort`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from edgekd.harness.mlperf import FW_VERSION

CMD_SIZE = 80  # EE_CMD_SIZE
EOL = "\r\n"

HELP_TEXT = (
    f"{FW_VERSION}\r\n"
    "\r\n"
    "help         : Print this information\r\n"
    "name         : Print the name of the device\r\n"
    "timestsamp   : Generate a timetsamp\r\n"
    "db SUBCMD    : Manipulate a generic byte buffer\r\n"
    "  load N     : Allocate N bytes and set load counter\r\n"
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes\r\n"
    "  print [N=16] [offset=0]\r\n"
    "             : Print N bytes at offset as hex\r\n"
    "infer N [W=0]: Load input, execute N inferences after W warmup loops\r\n"
    "results      : Return the result fp32 vector\r\n"
)


class ModelPort(Protocol):
    """The submitter-implemented half (``th_load_tensor``, ``th_infer``, ``th_results``)."""

    def load_tensor(self, data: bytes) -> str:
        """Take the loaded bytes as the next input; return text to print (a diagnostic, or "")."""

    def infer(self) -> None: ...

    def results(self) -> str:
        """The results line(s), line endings included."""


def atoi(text: str | None) -> int:
    """C ``atoi``: leading spaces, an optional sign, digits up to the first non-digit; else 0."""
    m = re.match(r"\s*([-+]?\d+)", text or "")
    if m is None:
        return 0
    v = int(m.group(1))
    return max(min(v, 2**31 - 1), -(2**31))  # int, as the C code reads it


def _hexbyte(pair: str) -> int:
    return int(pair, 16) if re.fullmatch(r"[0-9a-fA-F]{2}", pair) else -1


class Monitor:
    """One device: ``boot()`` then ``handle(command)`` per ``%``-terminated command (without the ``%``);
    both return the exact text the device sends, line endings included."""

    def __init__(self, model: ModelPort, *, vendor: str, model_name: str, buffer_size: int,
                 timestamp_us: Callable[[], int], energy: bool = False) -> None:  # fmt: skip
        self.model = model
        self.vendor = vendor
        self.model_name = model_name
        self.energy = energy
        self.timestamp_us = timestamp_us
        self.buffer = bytearray(buffer_size)  # gp_buff: kept across loads, as in the reference
        self.size = 0  # g_buff_size
        self.pos = 0  # g_buff_pos

    # ---- framing ---------------------------------------------------------------------------------
    def boot(self) -> str:
        """th_timestamp_initialize (mode + a timestamp), then m-init-done and m-ready."""
        mode = "energy" if self.energy else "performance"
        return f"m-timestamp-mode-{mode}{EOL}{self._timestamp()}m-init-done{EOL}m-ready{EOL}"

    def handle(self, command: str) -> str:
        words = command[:CMD_SIZE].split(" ")
        tokens = [w for w in words if w]
        if not tokens:
            return f"m-ready{EOL}"
        return self._dispatch(tokens[0], tokens[1:]) + f"m-ready{EOL}"

    def _timestamp(self) -> str:
        return "" if self.energy else f"m-lap-us-{int(self.timestamp_us()) & 0xFFFFFFFF}{EOL}"

    # ---- commands --------------------------------------------------------------------------------
    def _dispatch(self, cmd: str, args: list[str]) -> str:
        if cmd == "name":
            return f"m-name-dut-[{self.vendor}]{EOL}"
        if cmd == "timestamp":
            return self._timestamp()
        if cmd == "profile":
            return f"m-profile-[{FW_VERSION}]{EOL}m-model-[{self.model_name}]{EOL}"
        if cmd == "help":
            return HELP_TEXT
        if cmd == "db":
            return self._db(args)
        if cmd == "infer":
            return self._infer(args)
        if cmd == "results":
            return self.model.results()
        return f"e-[Unknown command: {cmd}]{EOL}"

    def _db(self, args: list[str]) -> str:
        if not args:
            return f"e-[Command 'db' requires a subcommand]{EOL}"
        if args[0] == "load":
            if len(args) < 2:
                return f"e-[Command 'db load' requires the # of bytes]{EOL}"
            n = atoi(args[1])
            if n == 0:
                return f"e-[Command 'db load' must be >0 bytes]{EOL}"
            self.pos = 0
            if n < 0 or n > len(self.buffer):
                self.size = 0  # the reference keeps N and later writes past its buffer
                return f"Supplied buffer size {n} exceeds maximum of {len(self.buffer)}\n"
            self.size = n
            return f"m-[Expecting {n} bytes]{EOL}"
        if args[0] == "print":
            return self._print()
        return self._load_hex(args[0][:CMD_SIZE])

    def _load_hex(self, digits: str) -> str:
        if len(digits) % 2:
            return f"e-[Insufficent number of hex digits]{EOL}"
        for i in range(0, len(digits), 2):
            b = _hexbyte(digits[i : i + 2])
            if b < 0:
                return f"e-[Invalid hex digit '{digits[i : i + 2]}']{EOL}"
            if self.pos < len(self.buffer):
                self.buffer[self.pos] = b
            self.pos += 1
            if self.pos == self.size:
                return f"m-load-done{EOL}"
        return ""

    def _print(self) -> str:
        data = self.buffer[: self.size]
        lines = [data[i : i + 8] for i in range(0, len(data), 8)]
        out = "".join("m-buffer-" + "-".join(f"{b:02x}" for b in ln) + EOL for ln in lines)
        return out + (EOL if len(data) % 8 else "")

    def _infer(self, args: list[str]) -> str:
        n, w = 1, 10
        if args:
            n = atoi(args[0])
            if n <= 0:
                return f"e-[Inference iterations must be >0]{EOL}"
            if len(args) > 1:
                w = atoi(args[1])
                if w < 0:
                    return f"e-[Inference warmup must be >=0]{EOL}"
        out = self.model.load_tensor(bytes(self.buffer[: min(self.pos, len(self.buffer))]))
        out += f"m-warmup-start-{w}{EOL}"
        for _ in range(w):
            self.model.infer()
        out += f"m-warmup-done{EOL}m-infer-start-{n}{EOL}{self._timestamp()}"
        for _ in range(n):
            self.model.infer()
        return out + f"{self._timestamp()}m-infer-done{EOL}" + self.model.results()
