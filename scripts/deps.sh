#!/usr/bin/env bash
# Check for the tools and libraries that weft's build and tests need, and
# install the missing ones with apt-get when running as root.
#
# Usage: scripts/deps.sh [--bench]
#   (none)    what the build and the test suite need, gdb and valgrind
#             included (the suite's gdb helper and valgrind tests use them).
#   --bench   what `make run` needs instead: no gdb or valgrind, and the Go
#             toolchain for the benchmark's Go comparison. Go is optional: it
#             is installed only when WITH_GO=1 is set in the environment.
#
# Does nothing and exits 0 quickly when everything is present. As a non-root
# user it never installs anything: it prints the sudo command and exits 1.
# Package names are Debian's (tested on Debian 12).
set -euo pipefail

# CMakeLists.txt requires CMake 3.16, but the Makefile runs `ctest --test-dir`,
# which CMake 3.20 added.
readonly MIN_CMAKE=3.20
readonly MIN_LIBUV=1.30   # pkg_check_modules(LIBUV ... libuv>=1.30)

want_bench=0
for arg in "$@"; do
    case "$arg" in
        --bench) want_bench=1 ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "deps.sh: unknown argument '$arg' (expected --bench)" >&2
            exit 2
            ;;
    esac
done
with_go="${WITH_GO:-0}"

log() { printf 'deps: %s\n' "$*" >&2; }

# Succeeds when version $1 >= version $2 (dotted numbers).
version_at_least() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

# Succeeds when a C compiler exists and can build a program that includes a
# libc header, which catches a compiler installed without libc6-dev.
c_compiler_works() {
    local cc="${CC:-}"
    if [ -z "$cc" ]; then
        for candidate in cc gcc clang; do
            if command -v "$candidate" >/dev/null 2>&1; then
                cc="$candidate"
                break
            fi
        done
    fi
    [ -n "$cc" ] || return 1
    command -v "${cc%% *}" >/dev/null 2>&1 || return 1

    local dir rc=0
    dir="$(mktemp -d)"
    printf '#include <stdio.h>\nint main(void) { return puts("") < 0; }\n' >"$dir/t.c"
    $cc "$dir/t.c" -o "$dir/t" >/dev/null 2>&1 || rc=1
    rm -rf "$dir"
    return "$rc"
}

# Succeeds when dpkg reports the Debian package as installed. Used only when
# pkg-config is missing and so cannot check the libraries.
deb_installed() {
    command -v dpkg-query >/dev/null 2>&1 &&
        [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# Sets $missing to the Debian packages that would supply what is absent, and
# $problems to one line per absent item.
find_missing() {
    missing=()
    problems=()

    if ! command -v cmake >/dev/null 2>&1; then
        missing+=(cmake)
        problems+=("cmake not found")
    else
        local cmake_version
        cmake_version="$(cmake --version | sed -n '1s/^cmake version //p')"
        if ! version_at_least "$cmake_version" "$MIN_CMAKE"; then
            missing+=(cmake)
            problems+=("cmake $cmake_version is older than $MIN_CMAKE")
        fi
    fi

    if ! c_compiler_works; then
        missing+=(gcc libc6-dev)
        problems+=("no working C compiler (tried \$CC, cc, gcc, clang)")
    fi

    if ! command -v make >/dev/null 2>&1; then
        missing+=(make)
        problems+=("make not found")
    fi

    if command -v pkg-config >/dev/null 2>&1; then
        if ! pkg-config --exists libuv; then
            missing+=(libuv1-dev)
            problems+=("libuv not found by pkg-config")
        elif ! pkg-config --atleast-version="$MIN_LIBUV" libuv; then
            missing+=(libuv1-dev)
            problems+=("libuv $(pkg-config --modversion libuv) is older than $MIN_LIBUV")
        fi
        if ! pkg-config --exists cmocka; then
            missing+=(libcmocka-dev)
            problems+=("cmocka not found by pkg-config")
        fi
    else
        missing+=(pkg-config)
        problems+=("pkg-config not found")
        deb_installed libuv1-dev || missing+=(libuv1-dev)
        deb_installed libcmocka-dev || missing+=(libcmocka-dev)
    fi

    # The test suite drives gdb (the coroutine helper script) and valgrind
    # (stack registration); without them those tests report themselves
    # skipped, so the test targets install them.
    if [ "$want_bench" = 0 ]; then
        if ! command -v gdb >/dev/null 2>&1; then
            missing+=(gdb)
            problems+=("gdb not found (used by the gdb helper test)")
        fi
        if ! command -v valgrind >/dev/null 2>&1 || [ ! -f /usr/include/valgrind/valgrind.h ]; then
            missing+=(valgrind)
            problems+=("valgrind or its header not found (used by the valgrind tests)")
        fi
    fi

    if [ "$want_bench" = 1 ] && [ "$with_go" = 1 ] && ! command -v go >/dev/null 2>&1; then
        missing+=(golang-go)
        problems+=("go not found (requested with WITH_GO=1)")
    fi
}

find_missing

if [ "${#missing[@]}" -gt 0 ]; then
    for problem in "${problems[@]}"; do
        log "$problem"
    done

    if [ "$(id -u)" != 0 ]; then
        log "missing packages; install them and run the command again:"
        printf '    sudo apt-get install -y %s\n' "${missing[*]}" >&2
        log "(Debian package names; on other systems install the equivalents)"
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found, so these cannot be installed automatically: ${missing[*]}"
        log "install the equivalent packages with this system's package manager"
        exit 1
    fi

    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update </dev/null; then
        log "apt-get update failed; check the network and the apt sources, then retry"
        exit 1
    fi
    if ! apt-get install -y "${missing[@]}" </dev/null; then
        log "apt-get install -y ${missing[*]} failed; see the apt output above"
        exit 1
    fi

    # Check again: an installed package can still be too old or incomplete.
    find_missing
    if [ "${#missing[@]}" -gt 0 ]; then
        for problem in "${problems[@]}"; do
            log "$problem"
        done
        log "still missing after apt-get install: ${missing[*]}"
        exit 1
    fi
    log "all build dependencies are installed"
fi

if [ "$want_bench" = 1 ] && [ "$with_go" != 1 ] && ! command -v go >/dev/null 2>&1; then
    log "note: go not found, so the benchmark runs without its Go comparison;"
    log "      install golang-go, or run make with WITH_GO=1 to install it"
fi
exit 0
