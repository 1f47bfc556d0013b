"""The EEMBC / MLPerf Tiny serial protocol (monitor 2.2.0): host-side line parser, device-side command
parser, and the ``db`` hex framing.

Commands are ASCII, space-delimited, terminated by ``%``, at most 80 characters. The device answers
each one with ``m-...`` lines (or ``e-[...]`` for an error) and then ``m-ready``. This module is pure:
no I/O, no state, so it can be fuzzed with hypothesis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from edgekd.errors import EdgekdError

MAX_COMMAND = 80  # characters, the terminating '%' included (MLPerf Tiny EE_CMD_SIZE)
TERMINATOR = "%"
READY = "m-ready"
INIT_DONE = "m-init-done"
MAX_DIGITS = 20  # an integer field (microseconds, counts) has at most 20 digits: a 64-bit counter
# what a device and the host agree on per model (edgekd.harness.mlperf); here, where the CLI reads them
MODEL_NAMES = ("kws01", "vww01", "ic01", "ad01", "strww01")  # m-model-[...]: the runner's data set
INPUT_FORMATS = ("int8", "uint8", "float32")
RESULT_FORMATS = ("float", "softmax", "raw")


class ProtocolError(EdgekdError):
    """A line from the device that is not valid protocol (garbled, binary, unknown shape)."""


@dataclass(frozen=True)
class Message:
    """One parsed device line. ``kind`` is one of the keys of :data:`_PATTERNS`, ``ready``, ``error``
    or ``info`` (any other well-formed ``m-`` line); ``value`` is the payload (int, str, list)."""

    kind: str
    value: object = None
    raw: str = field(default="", compare=False)


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "timestamp_mode": re.compile(r"m-timestamp-mode-(performance|energy|accuracy)"),
    "init_done": re.compile(r"m-init-done"),
    "lap_us": re.compile(r"m-lap-us-(\d+)"),
    "name": re.compile(r"m-name-(?:dut|ref)-\[(.*)\]"),
    "profile": re.compile(r"m-profile-\[(.*)\]"),
    "model": re.compile(r"m-model-\[(.*)\]"),
    "expecting": re.compile(r"m-\[Expecting (\d+) bytes\]"),
    "load_done": re.compile(r"m-load-done"),
    "warmup_start": re.compile(r"m-warmup-start-(\d+)"),
    "warmup_done": re.compile(r"m-warmup-done"),
    "infer_start": re.compile(r"m-infer-start-(\d+)"),
    "infer_done": re.compile(r"m-infer-done"),
    "results": re.compile(r"m-results-\[(.*)\]"),
}
_INT_KINDS = {"lap_us", "expecting", "warmup_start", "infer_start"}
_RESULT_ITEM = re.compile(rf"\s*({_NUM})\s*")


def parse_results(payload: str, line: str = "") -> list[float] | list[int]:
    """``"1,-2,3"`` -> ``[1, -2, 3]``; floats when any item has a decimal point or exponent."""
    if payload.strip() == "":
        return []
    items = payload.split(",")
    out: list[float] = []
    ints = True
    for it in items:
        m = _RESULT_ITEM.fullmatch(it)
        if m is None:
            raise ProtocolError(f"device sent a malformed results line {line[:60]!r}: item {it[:20]!r}")
        s = m.group(1)
        if len(s) > 2 * MAX_DIGITS:
            raise ProtocolError(
                f"device sent a {len(s):,}-character number in its results line {line[:30]!r}...; "
                "garbage on the line or broken firmware"
            )
        if re.fullmatch(r"[-+]?\d+", s):
            out.append(int(s))
        else:
            ints = False
            out.append(float(s))
    return out if ints else [float(v) for v in out]


def bounded_int(digits: str, line: str) -> int:
    """The integer field of ``line``; more than :data:`MAX_DIGITS` digits is not a device counter."""
    if len(digits) > MAX_DIGITS:
        raise ProtocolError(
            f"device sent a {len(digits):,}-digit number in {line[:30]!r}... (at most {MAX_DIGITS} digits); "
            "garbage on the line or broken firmware"
        )
    return int(digits)


def check_laps(laps: list[int]) -> None:
    """``m-lap-us`` timestamps of one inference run never go backwards (that would give a negative time)."""
    for a, b in zip(laps, laps[1:]):
        if b < a:
            raise ProtocolError(
                f"device timestamps went backwards (m-lap-us-{a} then m-lap-us-{b}); its timer is broken or "
                "wrapped around: reset the device and run again"
            )


def parse_line(line: str) -> Message:
    """Parse one line from the device (without its line ending). Raises :class:`ProtocolError` for
    anything that is not a protocol line: control characters, non-ASCII, text without ``m-``/``e-``."""
    s = line.strip()
    if not s:
        raise ProtocolError("device sent an empty line")
    if not s.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise ProtocolError(f"device sent a garbled line {s[:60]!r} (binary / wrong baud rate?)")
    if s == READY:
        return Message("ready", None, s)
    if s.startswith("e-"):
        m = re.fullmatch(r"e-\[(.*)\]", s)
        return Message("error", m.group(1) if m else s[2:], s)
    if not s.startswith("m-"):
        raise ProtocolError(f"device sent a line that is not protocol {s[:60]!r} (expected m-... or e-[...])")
    for kind, pat in _PATTERNS.items():
        m = pat.fullmatch(s)
        if m is None:
            continue
        if kind == "results":
            return Message(kind, parse_results(m.group(1), s), s)
        if kind in _INT_KINDS:
            return Message(kind, bounded_int(m.group(1), s), s)
        return Message(kind, m.group(1) if m.groups() else None, s)
    return Message("info", s[2:], s)


def format_results(values: list[int] | list[float]) -> str:
    """The device's results line: ``m-results-[v0,v1,...]`` (ints as is, floats with 3 decimals)."""
    parts = [str(int(v)) if isinstance(v, int) else f"{float(v):.3f}" for v in values]
    return f"m-results-[{','.join(parts)}]"


# ---- host -> device -------------------------------------------------------------------------------


def command(*words: object) -> str:
    """``command("infer", 10, 1)`` -> ``"infer 10 1%"``; raises if it exceeds 80 characters."""
    text = " ".join(str(w) for w in words) + TERMINATOR
    if len(text) > MAX_COMMAND or "%" in text[:-1] or not text.isascii():
        raise ProtocolError(
            f"command {text[:40]!r}... is not a valid protocol command (<= 80 ASCII characters)"
        )
    return text


def db_lines(data: bytes, max_len: int = MAX_COMMAND) -> list[str]:
    """``db load N%`` followed by ``db HEX%`` lines (an even number of hex digits, <= ``max_len``)."""
    per_line = (max_len - len("db %")) // 2
    if per_line < 1:
        raise ValueError("max_len too small for a db line")
    hexs = data.hex()
    lines = [command("db", "load", len(data))]
    for i in range(0, len(hexs), 2 * per_line):
        lines.append(command("db", hexs[i : i + 2 * per_line]))
    return lines


@dataclass(frozen=True)
class Command:
    """A parsed host command as a device sees it: ``name`` and its arguments."""

    name: str
    args: tuple[str, ...] = ()


def parse_command(text: str) -> Command:
    """Device side: ``"infer 10 1"`` (the ``%`` already stripped) -> ``Command("infer", ("10", "1"))``.
    Raises :class:`ProtocolError` with the text the device should send as ``e-[...]``."""
    if len(text) >= MAX_COMMAND:
        raise ProtocolError("Command too long")
    if not text.isascii() or any(ord(c) < 32 for c in text):
        raise ProtocolError("Invalid character in command")
    words = text.split()
    if not words:
        raise ProtocolError("Empty command")
    return Command(words[0], tuple(words[1:]))


def decode_hex(digits: str) -> bytes:
    """Device side of ``db HEX``: an even number of hex digits -> bytes (MLPerf Tiny's error texts)."""
    if len(digits) % 2:
        raise ProtocolError("Hex string must have an even number of digits")
    for c in digits:
        if c not in "0123456789abcdefABCDEF":
            raise ProtocolError(f"Invalid hex digit '{c}'")
    return bytes.fromhex(digits)
