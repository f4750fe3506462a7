#!/usr/bin/env bash
# Cross-compile the context-switch test (tests/test_switch.c) for AArch64,
# with the assembly switch and with the ucontext fallback, and run both
# under qemu-user. Installs gcc-aarch64-linux-gnu and qemu-user with
# apt-get when they are missing and the user is root.
set -euo pipefail

cd "$(dirname "$0")/.."

need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "check-aarch64: installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "check-aarch64: missing ${need[*]}; install them with:" >&2
        echo "  sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common=(-O2 -std=c11 -frounding-math -static -Wall -Wextra -Werror
        -Itests/cross -Isrc -Itests tests/test_switch.c src/arch/context.c)

echo "==> AArch64, assembly switch"
aarch64-linux-gnu-gcc "${common[@]}" src/arch/switch_aarch64.S -lm -o "$out/switch_asm"
qemu-aarch64 "$out/switch_asm"

echo "==> AArch64, ucontext switch"
aarch64-linux-gnu-gcc "${common[@]}" -DWEFT_USE_UCONTEXT=1 -lm -o "$out/switch_ucontext"
qemu-aarch64 "$out/switch_ucontext"
