#!/usr/bin/env bash
# Run a command whose programs are built with AddressSanitizer or
# ThreadSanitizer, with address-space layout randomisation turned off for
# that command alone when the kernel randomises mmap with more than 28 bits.
#
# Usage: scripts/sanitizer-run.sh COMMAND [ARG...]
#
# The sanitizer runtimes of GCC 12 (Debian 12's compiler) place shadow memory
# at fixed addresses. With vm.mmap_rnd_bits above 28, which some kernels set
# (32 on several distributions since Linux 6.5), ThreadSanitizer aborts with
# "FATAL: ThreadSanitizer: unexpected memory mapping" and AddressSanitizer
# can loop on "AddressSanitizer:DEADLYSIGNAL". `setarch -R` avoids this
# without changing the system-wide setting.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: scripts/sanitizer-run.sh COMMAND [ARG...]" >&2
    exit 2
fi

rnd_bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)"
if [ "$rnd_bits" -le 28 ]; then
    exec "$@"
fi

arch="$(uname -m)"
if setarch "$arch" -R true 2>/dev/null; then
    echo "sanitizer-run: vm.mmap_rnd_bits is $rnd_bits (> 28), so running with ASLR off: setarch $arch -R $*" >&2
    exec setarch "$arch" -R "$@"
fi

echo "sanitizer-run: vm.mmap_rnd_bits is $rnd_bits (> 28) and setarch -R is not permitted here," >&2
echo "sanitizer-run: so the sanitizer runtime may abort; if it does, run 'sudo sysctl vm.mmap_rnd_bits=28'" >&2
exec "$@"
