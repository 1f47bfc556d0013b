#!/bin/sh
# Install the Debian packages the on-device harness tests need (QEMU, the Arm GNU toolchain, a host C
# compiler) when they are missing. Called from `make venv` / `make test`.
#
# * Everything present: does nothing.
# * Root (CI containers) and apt-get available: `apt-get install` the missing packages.
# * Not root, offline, or not Debian: prints one line saying which tests will skip and exits 0, so
#   `make test` still works on a laptop. With CI=true a failed install is an error (exit 1): in CI the
#   emulator tests must run, never skip.
set -u

missing=""
command -v gcc >/dev/null 2>&1 || missing="$missing gcc libc6-dev"
command -v arm-none-eabi-gcc >/dev/null 2>&1 || missing="$missing gcc-arm-none-eabi"
# newlib: the C library arm-none-eabi-gcc links the firmware against
if command -v arm-none-eabi-gcc >/dev/null 2>&1; then
    [ -n "$(arm-none-eabi-gcc -mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16 -print-file-name=libc_nano.a 2>/dev/null | grep /)" ] \
        || missing="$missing libnewlib-arm-none-eabi"
else
    missing="$missing libnewlib-arm-none-eabi"
fi
# libstdc++ for arm-none-eabi (packaged apart from the compiler): the TFLite Micro firmware (--runtime tflm)
if command -v arm-none-eabi-g++ >/dev/null 2>&1; then
    [ -n "$(arm-none-eabi-g++ -mcpu=cortex-m4 -mfloat-abi=hard -mfpu=fpv4-sp-d16 -print-file-name=libstdc++_nano.a 2>/dev/null | grep /)" ] \
        || missing="$missing libstdc++-arm-none-eabi-newlib"
else
    missing="$missing libstdc++-arm-none-eabi-newlib"
fi
command -v qemu-system-arm >/dev/null 2>&1 || missing="$missing qemu-system-arm"

[ -z "$missing" ] && exit 0

fail() {
    if [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
        echo "ensure-system-deps: ERROR: could not install$missing ($1); the emulated-board tests must run in CI" >&2
        exit 1
    fi
    echo "ensure-system-deps: missing$missing ($1); the C-backend/QEMU tests that need them will skip" >&2
    exit 0
}

[ "$(id -u)" = "0" ] || fail "not root; run: sudo apt-get install -y$missing"
command -v apt-get >/dev/null 2>&1 || fail "no apt-get on this system; install them with your package manager"
echo "ensure-system-deps: apt-get install -y$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; } \
    || fail "apt-get install failed (offline?)"
exit 0
