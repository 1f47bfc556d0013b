"""On-device benchmark harness: the MLPerf Tiny serial protocol, the host runner, a software device,
the emulated Cortex-M4 (QEMU) and firmware templates. See ``edgekd bench --help``."""
