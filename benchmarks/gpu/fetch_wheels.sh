#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI) before a device call: downloads the
# wheels the GPU check needs and the device image lacks (trimesh and embreex,
# which render the synthetic rooms) into .whl/, for the device machine's
# Python (3.12, x86-64 by /work/.library/device/KINDS.md; PYVER=3.x to change).
# Then name .whl in the device call's `carry`; run.sh installs them first.
# About 15 MB; .whl/ is kept out of git (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
PY=${PYTHON:-python3}
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
mkdir -p .whl
# the versions this project's CI installs (pip list in a fresh venv, 2026-12)
$PY -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "trimesh==5.2.0" "embreex==4.4.0.post1"
ls -la .whl
