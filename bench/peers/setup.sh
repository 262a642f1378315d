#!/usr/bin/env bash
# Creates the Python venv for the peer-engine benchmark (bench/peers/peers.py).
# Idempotent: re-running only installs what is missing or at the wrong version.
#
#   bash bench/peers/setup.sh            # venv at <repo>/target/peers-venv
#   PEERS_VENV=/some/dir bash bench/peers/setup.sh
#
# Only PyPI is needed. Note: PyPI's Linux x86_64 torch wheels are CUDA builds;
# even libtorch_cpu.so links libcudart/libcupti, so `import torch` fails
# without the nvidia-* wheels. We therefore install torch with its declared
# dependencies (the venv is ~5-6 GB). The CPU-only wheels live on a separate
# PyTorch index that is not reachable from here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/target/peers-venv}"
PY="${PYTHON:-python3}"

# Pinned versions (checked with `pip index versions X`).
PKGS=(
  "torch==2.15.0"
  "transformers==5.23.0"
  "onnxruntime==1.32.0"
  "onnx==1.23.2"
  "numpy==2.4.6"
  "safetensors==0.8.0"
  "tokenizers==0.23.3"
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi

# Which pins are not yet satisfied?
missing=$("$VENV/bin/python" - "${PKGS[@]}" <<'PYEOF'
import sys
from importlib import metadata
out = []
for spec in sys.argv[1:]:
    name, ver = spec.split("==")
    try:
        if metadata.version(name).split("+")[0] != ver:
            out.append(spec)
    except metadata.PackageNotFoundError:
        out.append(spec)
# A torch installed without its nvidia-* dependency wheels does not import:
# treat that as missing so pip fills in the dependencies.
try:
    import torch  # noqa: F401
except Exception:
    torch_pin = next(s for s in sys.argv[1:] if s.startswith("torch=="))
    if torch_pin not in out:
        out.append(torch_pin)
print(" ".join(out))
PYEOF
)

if [ -n "$missing" ]; then
  echo "[setup] installing: $missing"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q "${PKGS[@]}"
else
  echo "[setup] all pinned packages already installed in $VENV"
fi

# Smoke check that every import works (torch import needs the CUDA wheels, see top).
"$VENV/bin/python" - <<'PYEOF'
import importlib
for m in ["torch", "transformers", "onnxruntime", "onnx", "numpy", "safetensors", "tokenizers"]:
    mod = importlib.import_module(m)
    print(f"[setup] {m:12s} {getattr(mod, '__version__', '?')}")
import onnxruntime.transformers.optimizer  # noqa: F401  (used for ort-fp32 fusion)
import onnxruntime.quantization  # noqa: F401
PYEOF
echo "[setup] venv size: $(du -sh "$VENV" | cut -f1)"
