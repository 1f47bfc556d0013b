"""edgekd.harness.protocol: the MLPerf Tiny line parser, command framing, db hex lines (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.harness import protocol as p


def test_known_lines_parse_to_their_values():
    assert p.parse_line("m-lap-us-123456\r") == p.Message("lap_us", 123456)
    assert p.parse_line("m-name-dut-[unspecified]").value == "unspecified"
    assert p.parse_line("m-[Expecting 490 bytes]") == p.Message("expecting", 490)
    assert p.parse_line("m-results-[0.000,0.996,0.004]").value == [0.0, 0.996, 0.004]
    assert p.parse_line("m-results-[-128,5,127]").value == [-128, 5, 127]
    assert p.parse_line("e-[Invalid hex digit 'g']") == p.Message("error", "Invalid hex digit 'g'")
    assert p.parse_line("m-ready").kind == "ready"
    assert p.parse_line("m-timestamp-mode-performance").value == "performance"
    assert p.parse_line("m-infer-start-10").value == 10
    assert p.parse_line("m-model-[kws01]").value == "kws01"
    assert p.parse_line("m-something-new").kind == "info"


@pytest.mark.parametrize(
    "bad", ["", "   ", "hello world", "m-results-[1,x]", "m-\x00ready", "m-r\xe9ady", "\xff\xfe"]
)
def test_garbage_lines_raise_protocol_error(bad):
    with pytest.raises(p.ProtocolError):
        p.parse_line(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_any_text_parses_or_raises_protocol_error(line):
    try:
        msg = p.parse_line(line)
    except p.ProtocolError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert msg.kind in {*p._PATTERNS, "ready", "error", "info"}
        assert line.strip().startswith(("m-", "e-"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_parse_or_raise_protocol_error(raw):
    try:
        p.parse_line(raw.decode("latin-1"))
    except p.ProtocolError as e:
        assert "\n" not in str(e)
    else:
        assert raw.strip().startswith((b"m-", b"e-"))


@given(st.lists(st.integers(-128, 127), max_size=64))
def test_int_results_round_trip(vals):
    assert p.parse_line(p.format_results(vals)).value == vals


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=32))
def test_float_results_round_trip_to_3_decimals(vals):
    got = p.parse_line(p.format_results(vals)).value
    assert len(got) == len(vals)
    assert all(abs(a - b) <= 5e-4 + 1e-9 * abs(b) for a, b in zip(got, vals))


@given(st.integers(0, 2**40))
def test_lap_us_round_trip(n):
    assert p.parse_line(f"m-lap-us-{n}").value == n


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_db_lines_frame_any_payload(data):
    lines = p.db_lines(data)
    assert lines[0] == f"db load {len(data)}%"
    assert all(len(ln) <= p.MAX_COMMAND and ln.endswith("%") for ln in lines)
    body = b"".join(p.decode_hex(p.parse_command(ln[:-1]).args[0]) for ln in lines[1:])
    assert body == data


@given(st.text(alphabet="0123456789abcdefg", min_size=1, max_size=40))
def test_decode_hex_rejects_bad_digits_with_mlperf_text(digits):
    if len(digits) % 2:
        with pytest.raises(p.ProtocolError, match="even"):
            p.decode_hex(digits)
    elif "g" in digits:
        with pytest.raises(p.ProtocolError, match="Invalid hex digit 'g'"):
            p.decode_hex(digits)
    else:
        assert p.decode_hex(digits) == bytes.fromhex(digits)


def test_command_framing_and_limits():
    assert p.command("infer", 10, 1) == "infer 10 1%"
    with pytest.raises(p.ProtocolError):
        p.command("db", "ab" * 40)
    assert p.parse_command("infer 10 1") == p.Command("infer", ("10", "1"))
    with pytest.raises(p.ProtocolError, match="Empty"):
        p.parse_command("   ")


class _FakeSerial:
    """In-memory serial port: replies with a fixed byte stream, then silence."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    @property
    def in_waiting(self) -> int:
        return len(self.data)

    def read(self, n: int) -> bytes:
        out, self.data = bytes(self.data[:n]), self.data[n:]
        return out

    def write(self, b: bytes) -> int:
        return len(b)

    def flush(self) -> None:
        pass


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\r\n", b"m-ready\r\n"]))
def test_runner_on_any_device_stream_answers_or_raises_one_clear_error(noise, tail):
    import time

    from edgekd.errors import EdgekdError
    from edgekd.harness.runner import Device

    dev = Device("fake://", timeout=0.05)
    dev._ser = _FakeSerial(noise + tail)
    t0 = time.monotonic()
    try:
        msgs = dev.request("name%")
    except EdgekdError as e:
        assert str(e) and "\n" not in str(e)
    else:  # an answer: every line before m-ready parsed as protocol
        assert all(isinstance(m, p.Message) for m in msgs)
    assert time.monotonic() - t0 < 2
