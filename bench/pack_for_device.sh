#!/usr/bin/env bash
# bench/pack_for_device.sh — pack a CUDA build for a device call. A whole build (~140 MB with its
# objects and unstripped binaries) is past the 64 MiB a call carries; specmoe and the
# tests/test_gpu_* binaries, stripped and xz-compressed, are about 5 MB. From the repository root:
#
#     bash bench/pack_for_device.sh [BUILD]     # BUILD: a -DSPECMOE_CUDA=ON build, default build-k7
#
# writes build-carry/slim.tar.xz (git-ignored, as every /build* path is). On the device machine:
#
#     run(command="tar -xJf build-carry/slim.tar.xz && STAGES='tests decode' bash bench/run_on_device.sh",
#         carry=["build-carry"])
#
# The archive unpacks to SLIM (default build-k7-slim, run_on_device.sh's default BUILD).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-k7}
slim=${SLIM:-build-k7-slim}
if [ ! -x "$build/specmoe" ] || ! compgen -G "$build/tests/test_gpu_*" > /dev/null; then
  echo "pack_for_device: $build has no specmoe or no tests/test_gpu_* (configure it with -DSPECMOE_CUDA=ON and build)" >&2
  exit 2
fi
rm -rf "$slim"
mkdir -p "$slim/tests" build-carry
cp "$build/specmoe" "$slim/"
cp "$build"/tests/test_gpu_* "$slim/tests/"
strip "$slim/specmoe" "$slim"/tests/*
tar -I 'xz -9 -T0' -cf build-carry/slim.tar.xz "$slim"
echo "build-carry/slim.tar.xz: $(du -h build-carry/slim.tar.xz | cut -f1) ($slim from $build; the checkout is at $(git rev-parse --short HEAD), the build may be older)"
