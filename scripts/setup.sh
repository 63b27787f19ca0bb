#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install what is missing, build specmoe, and run
# the main job — a speculative-decoding experiment on the small MoE pair in experiments/models —
# then print its report. Results land in results.db (query it with sqlite3).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
specmoe_install_deps
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/specmoe run experiments/quickstart.lua --db results.db
./build/specmoe report results.db --experiment quickstart
