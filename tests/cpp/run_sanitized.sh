#!/usr/bin/env bash
# Builds the C++ core and its tests with AddressSanitizer + UBSan and runs them with ctest
# (engine_test under mpiexec on 1, 2 and 3 ranks). Usage: tests/cpp/run_sanitized.sh [build-dir]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build/sanitize}
bin=$(dirname "$(command -v python)")
mpicxx=${MPICXX:-$bin/mpicxx}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDLION_SANITIZE=ON \
  -DDLION_BUILD_PYTHON=OFF -DDLION_BUILD_CPP_TESTS=ON -DMPI_CXX_COMPILER="$mpicxx" \
  -DMPIEXEC_EXECUTABLE="$bin/mpiexec" -DCMAKE_COMPILE_WARNING_AS_ERROR=ON >/dev/null
cmake --build "$build" -j 2
# MPICH keeps some allocations until exit: only leaks in dlion's own code count.
export LSAN_OPTIONS="suppressions=$root/tests/cpp/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir "$build" --output-on-failure --timeout 120
