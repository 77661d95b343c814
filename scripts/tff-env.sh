#!/usr/bin/env bash
# TensorFlow Federated in its own environment (never a dependency of the package).
# Every TFF release 0.64-0.87 pins jaxlib==0.4.14, which does not exist; uv's overrides pin the
# JAX pair that does. TFF drags the stack back to TensorFlow 2.14 and numpy 1.25, so it must not
# share the project's environment. Usage: scripts/tff-env.sh [DIR]   (default: .tff-venv)
set -euo pipefail
dir="${1:-.tff-venv}"
uv="$(command -v uv || echo .venv/bin/uv)"
overrides="$(mktemp)"
trap 'rm -f "$overrides"' EXIT
printf 'jax==0.4.13\njaxlib==0.4.13\ntyping-extensions>=4.12\n' > "$overrides"
"$uv" venv --python 3.11 "$dir"
"$uv" pip install --python "$dir/bin/python" --override "$overrides" \
  "tensorflow-federated==0.87.0" "scikit-learn<1.6"
"$dir/bin/python" -c "import tensorflow_federated as tff; print('tff', tff.__version__)"
