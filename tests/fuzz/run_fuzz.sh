#!/usr/bin/env bash
# Builds the wire-decoder fuzz target (tests/fuzz/wire_fuzz.cc with the csrc/ files it needs)
# with clang++ -fsanitize=fuzzer,address,undefined, and runs it over the seed corpus.
#   tests/fuzz/run_fuzz.sh [libFuzzer options...]
# Default: -runs=1000000 (executions). E.g. -max_total_time=25 for a bounded time instead.
# Inputs the fuzzer finds are kept in a scratch folder (FUZZ_WORK, default build/fuzz/work),
# never in the committed seed corpus; a crash leaves its input as FUZZ_WORK/crash-*.
# Environment: CXX (default clang++), FUZZ_BUILD (default build/fuzz).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD:-$root/build/fuzz}
work=${FUZZ_WORK:-$build/work}
cxx=${CXX:-clang++}
mkdir -p "$build" "$work/corpus"
srcs=(csrc/wire/codec.cc csrc/wire/apply.cc csrc/wire/checksum.cc csrc/compress/reduce.cc
      csrc/compress/quantize.cc csrc/compress/cast.cc csrc/compress/simd.cc)
exe=$build/wire_fuzz
if [[ ! -x $exe || -n $(find "$root/tests/fuzz/wire_fuzz.cc" "${srcs[@]/#/$root/}" \
                           "$root/csrc/wire" "$root/csrc/compress" "$root/csrc/common" \
                           -newer "$exe" -print -quit) ]]; then
  echo "run_fuzz: building $exe with $cxx" >&2
  "$cxx" -std=c++17 -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -Werror \
    -I"$root/csrc" "$root/tests/fuzz/wire_fuzz.cc" "${srcs[@]/#/$root/}" -o "$exe"
fi
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:quarantine_size_mb=64"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-runs=1000000)
cd "$work"  # crash-*, leak-*, timeout-* files land here
exec "$exe" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -print_funcs=0 "${args[@]}" \
  "$work/corpus" "$root/tests/fuzz/corpus/wire"
