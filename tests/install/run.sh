#!/usr/bin/env bash
# Install a weft build tree into a temporary prefix, then build and run a
# small program against the installed copy four ways. pkg-config links the
# shared library, and pkg-config --static the static one. A CMake project
# calls find_package(weft) and links weft::weft and weft::weft_static.
#
# Usage: tests/install/run.sh BUILD_DIR SOURCE_DIR
#
# Exits 0 when all four pass, 77 (ctest's skip code here) when pkg-config is
# missing, and 1 on any failure. The compiler, generator and sanitizer come
# from BUILD_DIR/CMakeCache.txt, so a sanitizer build is tested with matching
# flags. $CMAKE selects the cmake binary (default: cmake on PATH).
set -euo pipefail

fail() {
    echo "install test: FAILED: $*" >&2
    exit 1
}
step() {
    echo "install test: $*"
}

if [ "$#" -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
    exit 2
fi
build_dir="$(cd "$1" && pwd)" || fail "build directory '$1' not found"
source_dir="$(cd "$2" && pwd)" || fail "source directory '$2' not found"
cache="$build_dir/CMakeCache.txt"
consumer_c="$source_dir/tests/install/consumer.c"
[ -f "$cache" ] || fail "$cache not found; configure and build first (make build)"
[ -f "$consumer_c" ] || fail "$consumer_c not found; is '$2' the weft source directory?"

if ! command -v pkg-config >/dev/null 2>&1; then
    echo "install test: SKIPPED: pkg-config not found (install pkg-config to run this test)"
    exit 77
fi
cmake="${CMAKE:-cmake}"
command -v "$cmake" >/dev/null 2>&1 || fail "cmake not found (set \$CMAKE or install cmake)"

# Prints the value of a CMakeCache.txt entry, or nothing when it is absent.
cache_value() {
    sed -n "s/^$1:[A-Z]*=//p" "$cache" | head -n 1
}

cc="$(cache_value CMAKE_C_COMPILER)"
generator="$(cache_value CMAKE_GENERATOR)"
build_type="$(cache_value CMAKE_BUILD_TYPE)"
sanitize="$(cache_value WEFT_SANITIZE)"
[ -n "$cc" ] || fail "CMAKE_C_COMPILER missing from $cache"

# A sanitized library needs the sanitizer runtime in the program too. These
# are the link-relevant parts of WEFT_SAN_FLAGS in CMakeLists.txt.
case "$sanitize" in
    "") san_flags="" ;;
    address) san_flags="-fsanitize=address,undefined -fno-omit-frame-pointer" ;;
    thread) san_flags="-fsanitize=thread -fno-omit-frame-pointer" ;;
    *) fail "unknown WEFT_SANITIZE '$sanitize' in $cache" ;;
esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/weft-install-test.XXXXXX")" ||
    fail "cannot create a temporary directory under ${TMPDIR:-/tmp}"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
log="$tmp/log"

# Runs a command with its output in $log, and prints the log if it fails.
quiet() {
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        return 1
    fi
}

step "installing $build_dir into $prefix"
quiet "$cmake" --install "$build_dir" --prefix "$prefix" ||
    fail "cmake --install $build_dir --prefix $prefix"

pc_file="$(find "$prefix" -name weft.pc -path '*/pkgconfig/*' | head -n 1)"
[ -n "$pc_file" ] || fail "weft.pc was not installed under $prefix/*/pkgconfig"
export PKG_CONFIG_PATH="$(dirname "$pc_file")"

# The installed weft.pc must describe this prefix, or the programs below
# would be built against some other weft, or fail to build.
pc_libdir="$(pkg-config --variable=libdir weft)" || fail "pkg-config cannot read $pc_file"
pc_includedir="$(pkg-config --variable=includedir weft)"
[ -f "$pc_includedir/weft.h" ] ||
    fail "weft.pc sets includedir=$pc_includedir, which has no weft.h; the installed headers are in $prefix. A .pc file that records CMAKE_INSTALL_PREFIX at configure time is wrong after 'cmake --install --prefix'; derive prefix from \${pcfiledir} instead"
[ -e "$pc_libdir/libweft.so" ] && [ -f "$pc_libdir/libweft.a" ] ||
    fail "weft.pc sets libdir=$pc_libdir, which lacks libweft.so or libweft.a (installed: $(find "$prefix" -name 'libweft*' | tr '\n' ' '))"
case "$(cd "$pc_libdir" && pwd -P)" in
    "$(cd "$prefix" && pwd -P)"/*) ;;
    *) fail "weft.pc sets libdir=$pc_libdir, outside the install prefix $prefix" ;;
esac

# Succeeds when the ELF file $1 lists a shared library whose name starts with $2.
needs_library() {
    readelf -d "$1" | grep -q "(NEEDED).*\[$2"
}

# (a) pkg-config, shared library.
step "pkg-config: building against the shared library"
# shellcheck disable=SC2046 # pkg-config output is a list of flags
quiet $cc $san_flags -o "$tmp/consumer-shared" "$consumer_c" \
    $(pkg-config --cflags --libs weft) ||
    fail "compiling consumer.c with 'pkg-config --cflags --libs weft'"
if command -v readelf >/dev/null 2>&1 && ! needs_library "$tmp/consumer-shared" libweft.so; then
    fail "consumer-shared does not load libweft.so; 'pkg-config --libs weft' should link the shared library"
fi
LD_LIBRARY_PATH="$pc_libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/consumer-shared" ||
    fail "consumer built with pkg-config (shared library) exited with status $?"

# (b) pkg-config --static, static library. -lweft would pick libweft.so when
# both are present, so name the archive itself.
step "pkg-config --static: building against the static library"
static_libs=()
for flag in $(pkg-config --static --libs weft); do
    if [ "$flag" = "-lweft" ]; then
        static_libs+=("$pc_libdir/libweft.a")
    else
        static_libs+=("$flag")
    fi
done
# shellcheck disable=SC2046
quiet $cc $san_flags -o "$tmp/consumer-static" "$consumer_c" \
    $(pkg-config --static --cflags weft) "${static_libs[@]}" ||
    fail "compiling consumer.c with 'pkg-config --static --cflags --libs weft' and libweft.a"
if command -v readelf >/dev/null 2>&1 && needs_library "$tmp/consumer-static" libweft.so; then
    fail "consumer-static still loads libweft.so"
fi
env -u LD_LIBRARY_PATH "$tmp/consumer-static" ||
    fail "consumer built with pkg-config --static exited with status $?"

# (c) CMake find_package(weft), both imported targets.
step "find_package(weft): configuring tests/install/consumer"
consumer_build="$tmp/consumer-build"
cmake_args=(-S "$source_dir/tests/install/consumer" -B "$consumer_build"
    "-DCMAKE_PREFIX_PATH=$prefix"
    "-DCMAKE_C_COMPILER=$cc"
    "-DCMAKE_BUILD_TYPE=${build_type:-RelWithDebInfo}"
    "-DCMAKE_C_FLAGS=$san_flags"
    "-DCMAKE_EXE_LINKER_FLAGS=$san_flags")
[ -z "$generator" ] || cmake_args+=(-G "$generator")
quiet "$cmake" "${cmake_args[@]}" ||
    fail "configuring the CMake consumer with CMAKE_PREFIX_PATH=$prefix"
weft_dir="$(sed -n 's/^weft_DIR:PATH=//p' "$consumer_build/CMakeCache.txt")"
case "$weft_dir" in
    "$prefix"/*) ;;
    *) fail "find_package(weft) used $weft_dir, not the copy installed under $prefix" ;;
esac

step "find_package(weft): building app (weft::weft) and app_static (weft::weft_static)"
quiet "$cmake" --build "$consumer_build" ||
    fail "building the CMake consumer"
env -u LD_LIBRARY_PATH "$consumer_build/app" ||
    fail "CMake consumer app (weft::weft) exited with status $?"
env -u LD_LIBRARY_PATH "$consumer_build/app_static" ||
    fail "CMake consumer app_static (weft::weft_static) exited with status $?"

step "passed: pkg-config shared and static, find_package weft::weft and weft::weft_static"
