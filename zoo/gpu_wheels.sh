#!/usr/bin/env bash
# Run HERE (with network to the package registry), before a lent-GPU session: download the pure-Python wheels the
# GPU image lacks or has at other versions (diffusers is not in it; transformers / peft / accelerate are pinned to
# the versions this checkout's .venv tests with) into .whl/, which git ignores. `zoo/gpu.sh` installs them offline
# when .whl/ is there; name `.whl` in the device call's `carry`.
#
#   bash zoo/gpu_wheels.sh            # then: run(command="bash zoo/gpu.sh adapters 12", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
pins=$("$PIP" list --format=freeze 2>/dev/null | grep -iE '^(diffusers|transformers|peft|accelerate|huggingface[-_]hub|typer)==' | tr '\n' ' ')
# shellcheck disable=SC2086
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl $pins
ls -la .whl
