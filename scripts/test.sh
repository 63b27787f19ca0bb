#!/usr/bin/env bash
# One command: install what is missing, build (CUDA code included when nvcc is present), and
# run every CPU test; then build the CPU tests with AddressSanitizer + UBSan and run them again.
# GPU tests (ctest label "gpu") are skipped here; run them on a GPU with `ctest -L gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
specmoe_install_deps chromium python3
jobs="$(nproc)"

echo "== build (warnings are errors) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSPECMOE_WERROR=ON
cmake --build build -j"$jobs"
echo "== CPU tests =="
ctest --test-dir build -LE gpu --output-on-failure -j"$jobs"

echo "== CPU tests under AddressSanitizer + UBSan =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSPECMOE_CUDA=OFF -DSPECMOE_SANITIZE=ON -DSPECMOE_WERROR=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -LE "gpu|no_asan" --output-on-failure -j"$jobs"
