#!/usr/bin/env python3
"""Peer engines for the `stance` CPU-inference benchmark.

Runs a model folder's encoder (the exact weights the Rust engine uses: BERT,
e.g. all-MiniLM-L6-v2, or MPNet, e.g. all-mpnet-base-v2, by config.json's
model_type) through PyTorch eager fp32, ONNX Runtime fp32 and ONNX Runtime
dynamic int8 on the same sentences file the Rust benchmark writes, and
reports sequences/s per batch size. See bench/peers/README.md.

    target/peers-venv/bin/python bench/peers/peers.py --sentences FILE \
        [--batches 1,8,32,128] [--rounds 3] [--engines torch,ort-fp32,ort-int8] \
        [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = ROOT / "models" / "minilm-l6-stance"
DEFAULT_CACHE = ROOT / "target" / "peers"
MAX_TOKENS = 128
PARITY_N = 16
OPSET = 17
ALL_ENGINES = ("torch", "ort-fp32", "ort-int8")
ORT_SPIN = True


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------

def read_sentences(path: Path, limit: int | None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        sents = [line.rstrip("\r\n") for line in f]
    sents = [s for s in sents if s.strip()]
    if limit:
        sents = sents[:limit]
    if not sents:
        sys.exit(f"no sentences in {path}")
    return sents


def tokenize(sentences: list[str], tokenizer_json: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    # tokenizer.json has truncation/padding = null; the post-processor adds
    # [CLS]/[SEP]; truncation length counts the special tokens.
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    encs = tok.encode_batch(sentences, add_special_tokens=True)
    return [e.ids for e in encs]


def model_type(model_dir: Path) -> str:
    return json.loads((model_dir / "config.json").read_text()).get("model_type", "bert")


def make_batches(ids: list[list[int]], batch: int, pad_id: int = 0):
    """Batches in file order, each padded to its own longest sequence (with the model's
    padding id: MPNet derives positions from it)."""
    import numpy as np

    out = []
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        L = max(len(x) for x in chunk)
        input_ids = np.full((len(chunk), L), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), L), dtype=np.int64)
        for i, x in enumerate(chunk):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        out.append({
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        })
    return out


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

def sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_weights(model_dir: Path):
    """Base encoder weights as f32, with stance.safetensors' encoder.layer.*
    tensors applied when that file exists: a tensor under a base name replaces
    it, a NAME.delta_i8 (with NAME.delta_scale, one per row) is added to it, as
    src/model/trained_part.rs reads them."""
    import numpy as np
    from safetensors.numpy import load_file

    base_path = model_dir / "encoder.safetensors"
    if not base_path.exists():
        base_path = model_dir / "model.safetensors"  # a bare base encoder folder
    stance_path = model_dir / "stance.safetensors"
    weights = {k: v.astype(np.float32) for k, v in load_file(str(base_path)).items()
               if not k.endswith("position_ids")}
    files = [base_path]
    note = None
    if stance_path.exists():
        replaced = 0
        stored = load_file(str(stance_path))
        for k, v in stored.items():
            if not k.startswith("encoder.layer.") or k.endswith(".delta_scale"):
                continue  # heads.* are not part of the encoder; scales go with their delta
            delta = k.endswith(".delta_i8")
            name = k[: -len(".delta_i8")] if delta else k
            if name not in weights:
                sys.exit(f"{stance_path}: {k} has no base tensor {name}")
            if tuple(v.shape) != tuple(weights[name].shape):
                sys.exit(f"{stance_path}: {k} shape {v.shape} != base {weights[name].shape}")
            if delta:
                if name + ".delta_scale" not in stored:
                    sys.exit(f"{stance_path}: {k} has no {name}.delta_scale beside it")
                scale = stored[name + ".delta_scale"].astype(np.float32)
                weights[name] = weights[name] + v.astype(np.float32) * scale[:, None]
            else:
                weights[name] = v.astype(np.float32)
            replaced += 1
        files.append(stance_path)
        note = f"stance.safetensors found: replaced {replaced} encoder.layer.* tensors"
    else:
        note = "NOTE: stance.safetensors absent: using the BASE encoder weights"
    return weights, sha256_files(files), note


def build_torch_model(model_dir: Path, weights: dict, attn: str):
    import torch
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    if model_type(model_dir) == "mpnet":
        # transformers' MPNet has one (eager) attention implementation.
        model = MPNetModel(MPNetConfig.from_pretrained(str(model_dir)), add_pooling_layer=False)
    else:
        cfg = BertConfig.from_pretrained(str(model_dir))
        cfg._attn_implementation = attn
        model = BertModel(cfg, add_pooling_layer=False, attn_implementation=attn) \
            if _accepts_attn_kw() else BertModel(cfg, add_pooling_layer=False)
    sd = {k: torch.from_numpy(v) for k, v in weights.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # position_ids / token_type_ids buffers may be reported missing: harmless.
    missing = [m for m in missing if not m.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        sys.exit(f"weight mismatch: missing={missing} unexpected={unexpected}")
    model.eval()
    return model


def _accepts_attn_kw() -> bool:
    import inspect
    from transformers import BertModel

    try:
        return "attn_implementation" in inspect.signature(BertModel.__init__).parameters
    except (TypeError, ValueError):
        return False


class LastHidden:
    """Wraps BertModel so that export/forward returns last_hidden_state only."""

    @staticmethod
    def wrap(model, classic_mask: bool = False):
        if type(model).__name__ == "MPNetModel":
            return LastHidden.wrap_mpnet(model)
        """classic_mask: build the additive 4D mask the way transformers 4.x
        did ((1 - mask) * finfo.min) instead of transformers 5's
        masking_utils (which traces into an index/gather graph). Note the
        onnxruntime.transformers optimizer fuses Attention only for the
        native transformers-5 graph (with the classic mask it mistakes the
        QK-scaling Mul for the mask Mul), so native is the default."""
        import torch

        class _W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                if classic_mask:
                    ext = attention_mask[:, None, None, :].to(torch.float32)
                    attention_mask = (1.0 - ext) * torch.finfo(torch.float32).min
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, return_dict=False)[0]

        return _W(model).eval()

    @staticmethod
    def wrap_mpnet(model):
        """MPNet has no token types: the argument is accepted and ignored, so that every
        engine is called alike (the ONNX export has no such input)."""
        import torch

        class _W(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

        return _W(model).eval()


# --------------------------------------------------------------------------
# ONNX export / optimisation / quantisation (cached by weights sha256)
# --------------------------------------------------------------------------

def _atomic(path: Path):
    return path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")


def export_fp32(model_dir: Path, weights: dict, out: Path, classic_mask: bool) -> None:
    import torch

    if out.exists():
        return
    log(f"exporting ONNX fp32 (TorchScript exporter, opset {OPSET}, "
        f"{'classic' if classic_mask else 'native'} mask) -> {out}")
    model = LastHidden.wrap(build_torch_model(model_dir, weights, "eager"), classic_mask=classic_mask)
    mpnet = model_type(model_dir) == "mpnet"
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    tt = torch.zeros_like(ids)
    names = ["input_ids", "attention_mask"] + ([] if mpnet else ["token_type_ids"])
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    tmp = _atomic(out)
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, mask) if mpnet else (ids, mask, tt), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    os.replace(tmp, out)


def optimize_fp32(src: Path, out: Path, heads: int, hidden: int) -> None:
    if out.exists():
        return
    from onnxruntime.transformers.optimizer import optimize_model

    log(f"onnxruntime.transformers optimizer (bert, {heads} heads, hidden {hidden}) -> {out}")
    m = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                       opt_level=0, use_gpu=False)
    log(f"fused operators: {m.get_fused_operator_statistics()}")
    tmp = _atomic(out)
    m.save_model_to_file(str(tmp))
    os.replace(tmp, out)


def quantize_int8(src: Path, pre: Path, out: Path) -> None:
    if out.exists():
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not pre.exists():
        log(f"quant_pre_process -> {pre}")
        import contextlib
        import tempfile

        tmp = _atomic(pre).resolve()
        src = src.resolve()
        # On failure ORT's symbolic shape inference dumps sym_shape_infer_temp.onnx
        # (+ a 90 MB external-data file) into the CWD: run it in a scratch dir.
        with tempfile.TemporaryDirectory(prefix="peers-quant.") as scratch, contextlib.chdir(scratch):
            try:
                quant_pre_process(str(src), str(tmp))
            except Exception as e:  # noqa: BLE001
                log(f"quant_pre_process failed ({e}); retrying with skip_symbolic_shape=True")
                quant_pre_process(str(src), str(tmp), skip_symbolic_shape=True)
        os.replace(tmp, pre)
    log(f"quantize_dynamic (per_channel, QInt8 weights) -> {out}")
    tmp = _atomic(out)
    quantize_dynamic(str(pre), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
    os.replace(tmp, out)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not ORT_SPIN:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------
# Engines: each is a callable(batch_dict) -> output (numpy or tensor)
# --------------------------------------------------------------------------

class TorchEngine:
    def __init__(self, model):
        import torch

        self.torch = torch
        self.model = LastHidden.wrap(model)

    def prepare(self, batches):
        t = self.torch
        return [{k: t.from_numpy(v) for k, v in b.items()} for b in batches]

    def __call__(self, b):
        with self.torch.inference_mode():
            return self.model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))

    def numpy(self, b):
        return self(self.prepare([b])[0]).numpy()


class OrtEngine:
    def __init__(self, sess):
        self.sess = sess
        self.inputs = {i.name for i in sess.get_inputs()}

    def prepare(self, batches):
        return [{k: v for k, v in b.items() if k in self.inputs} for b in batches]

    def __call__(self, b):
        return self.sess.run(["last_hidden_state"], b)[0]

    def numpy(self, b):
        return self(self.prepare([b])[0])


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

def timed_pass(engine, batches) -> tuple[float, list[float]]:
    lat = []
    t0 = time.perf_counter()
    for b in batches:
        s = time.perf_counter()
        engine(b)
        lat.append(time.perf_counter() - s)
    return time.perf_counter() - t0, lat


def parity(ref_engine, engine, batch) -> dict:
    import numpy as np

    ref = ref_engine.numpy(batch)
    out = engine.numpy(batch)
    m = batch["attention_mask"].astype(bool)
    diff = float(np.max(np.abs(ref[m] - out[m])))
    w = batch["attention_mask"][..., None].astype(np.float32)
    pr = (ref * w).sum(1) / w.sum(1)
    po = (out * w).sum(1) / w.sum(1)
    cos = (pr * po).sum(1) / (np.linalg.norm(pr, axis=1) * np.linalg.norm(po, axis=1))
    return {"max_abs_diff": diff, "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}


def geomean(xs):
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------

def machine_info(threads: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "logical_cpus": os.cpu_count(), "threads_used": threads}
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        for line in txt.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in txt.splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["isa"] = sorted(flags & {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                              "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                                              "amx_bf16", "f16c"})
                break
    except OSError:
        pass
    try:
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    return info


def versions() -> dict:
    out = {}
    for m in ("torch", "onnxruntime", "onnx", "transformers", "numpy", "tokenizers", "safetensors"):
        try:
            out[m] = __import__(m).__version__
        except Exception as e:  # noqa: BLE001
            out[m] = f"unavailable: {e}"
    return out


# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", required=True, type=Path, help="one sentence per line")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--rounds", type=int, default=3, help="timed full passes per engine/batch")
    ap.add_argument("--warmup-batches", type=int, default=8,
                    help="untimed calls (first N batches, file order) before timing each engine/batch")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES))
    ap.add_argument("--ort-fp32-variant", choices=("best", "plain", "fused"), default="best",
                    help="best: time the plain export and the onnxruntime.transformers-fused graph, "
                         "report the faster (geomean over batches) as ort-fp32")
    ap.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"),
                    help="HF attention implementation for the torch engine (export always uses eager)")
    ap.add_argument("--export-mask", choices=("native", "classic"), default="native",
                    help="attention-mask subgraph of the ONNX export (see LastHidden.wrap)")
    ap.add_argument("--wait-policy", choices=("default", "passive"), default="default",
                    help="passive: OMP_WAIT_POLICY=PASSIVE for torch and allow_spinning=0 for ORT. "
                         "Spinning thread pools collapse when the cores are shared with other "
                         "processes; on a quiet machine keep the library defaults")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ALL_ENGINES:
            sys.exit(f"unknown engine {e!r}; choose from {ALL_ENGINES}")
    batch_sizes = [int(x) for x in args.batches.split(",") if x.strip()]

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.wait_policy == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # must precede `import torch`
    global ORT_SPIN
    ORT_SPIN = args.wait_policy != "passive"
    load1 = os.getloadavg()[0]
    if load1 > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: load average {load1:.2f} on {os.cpu_count()} cpus: the machine is busy, "
            f"numbers are not measurements (spinning thread pools, torch's especially, degrade badly; "
            f"see --wait-policy)")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    sentences = read_sentences(args.sentences, args.limit)
    ids = tokenize(sentences, args.model_dir / "tokenizer.json")
    lens = [len(x) for x in ids]
    log(f"{len(sentences)} sentences, tokens/sentence mean {statistics.mean(lens):.1f} "
        f"max {max(lens)} (truncated at {MAX_TOKENS}), total {sum(lens)} tokens")

    mtype = model_type(args.model_dir)
    cfg_json = json.loads((args.model_dir / "config.json").read_text())
    pad_id = int(cfg_json.get("pad_token_id", 0)) if mtype == "mpnet" else 0
    if mtype == "mpnet" and args.ort_fp32_variant != "plain":
        # The onnxruntime.transformers BERT fusions do not apply to MPNet's relative bias.
        log("MPNet: ONNX Runtime fp32 runs the plain export (no BERT fusion applies)")
        args.ort_fp32_variant = "plain"
    weights, wsha, note = load_weights(args.model_dir)
    log(note)
    log(f"weights sha256 {wsha}")

    # PyTorch fp32 model: an engine and the parity reference.
    torch_model = build_torch_model(args.model_dir, weights, args.torch_attn)
    ref = TorchEngine(torch_model)

    cache = args.cache / wsha[:16]
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"op{OPSET}-{args.export_mask}mask"
    fp32 = cache / f"{mtype}-fp32-{tag}.onnx"
    fused = cache / f"{mtype}-fp32-{tag}-fused.onnx"
    pre = cache / f"{mtype}-fp32-{tag}-pre.onnx"
    int8 = cache / f"{mtype}-int8-{tag}.onnx"

    # name -> (engine object, reported-as)
    runners: dict[str, object] = {}
    reported_as: dict[str, str] = {}
    if "torch" in engines:
        runners["torch"] = ref
        reported_as["torch"] = "torch"
    if "ort-fp32" in engines or "ort-int8" in engines:
        export_fp32(args.model_dir, weights, fp32, args.export_mask == "classic")
    if "ort-fp32" in engines:
        if args.ort_fp32_variant in ("best", "plain"):
            runners["ort-fp32-plain"] = OrtEngine(ort_session(fp32, args.threads))
            reported_as["ort-fp32-plain"] = "ort-fp32"
        if args.ort_fp32_variant in ("best", "fused"):
            optimize_fp32(fp32, fused, cfg_json["num_attention_heads"], cfg_json["hidden_size"])
            runners["ort-fp32-fused"] = OrtEngine(ort_session(fused, args.threads))
            reported_as["ort-fp32-fused"] = "ort-fp32"
    if "ort-int8" in engines:
        quantize_int8(fp32, pre, int8)
        runners["ort-int8"] = OrtEngine(ort_session(int8, args.threads))
        reported_as["ort-int8"] = "ort-int8"
    del weights

    # Parity on the first 16 sentences (one padded batch), vs PyTorch fp32.
    pb = make_batches(ids[:PARITY_N], PARITY_N, pad_id)[0]
    par = {}
    for name, eng in runners.items():
        if name == "torch":
            continue
        par[name] = parity(ref, eng, pb)
        log(f"parity {name}: {par[name]}")

    # Interleaved measurement: rounds outermost, so slow drift of the VM
    # spreads evenly over engines and batch sizes.
    prepared = {}
    for name, eng in runners.items():
        for b in batch_sizes:
            prepared[(name, b)] = eng.prepare(make_batches(ids, b, pad_id))
    raw = {name: {b: [] for b in batch_sizes} for name in runners}
    lat1 = {name: [] for name in runners}
    call_p50 = {name: {b: [] for b in batch_sizes} for name in runners}
    for r in range(args.rounds):
        for name, eng in runners.items():
            for b in batch_sizes:
                bs = prepared[(name, b)]
                for i in range(args.warmup_batches):
                    eng(bs[i % len(bs)])
                secs, lat = timed_pass(eng, bs)
                raw[name][b].append(len(sentences) / secs)
                call_p50[name][b].extend(lat)
                if b == 1:
                    lat1[name].extend(lat)
                log(f"round {r + 1}/{args.rounds} {name:15s} batch {b:4d}: "
                    f"{len(sentences) / secs:9.1f} seq/s")

    seq_per_s = {name: {b: statistics.median(v) for b, v in d.items()} for name, d in raw.items()}

    # Pick the better ort-fp32 variant.
    chosen = {}
    variants = [n for n in runners if reported_as[n] == "ort-fp32"]
    if variants:
        best = max(variants, key=lambda n: geomean(list(seq_per_s[n].values())))
        chosen["ort-fp32"] = best
    final = {}
    for name in runners:
        rep = reported_as[name]
        if rep == "ort-fp32" and chosen.get("ort-fp32") != name:
            continue
        final[rep] = name

    result = {
        "seq_per_s": {rep: {str(b): round(seq_per_s[n][b], 2) for b in batch_sizes} for rep, n in final.items()},
        "p50_batch1_ms": {rep: (round(1e3 * statistics.median(lat1[n]), 3) if lat1[n] else None)
                          for rep, n in final.items()},
        "parity_vs_torch_fp32": {rep: par[n] for rep, n in final.items() if n in par},
        "ort_fp32_variant": chosen.get("ort-fp32"),
        "all_variants": {
            n: {
                "seq_per_s": {str(b): round(seq_per_s[n][b], 2) for b in batch_sizes},
                "seq_per_s_rounds": {str(b): [round(x, 2) for x in raw[n][b]] for b in batch_sizes},
                "p50_call_ms": {str(b): round(1e3 * statistics.median(call_p50[n][b]), 3) for b in batch_sizes},
                "parity_vs_torch_fp32": par.get(n),
            } for n in runners
        },
        "workload": {
            "sentences_file": str(args.sentences), "sentences": len(sentences),
            "tokens_total": sum(lens), "tokens_mean": round(statistics.mean(lens), 2),
            "tokens_max": max(lens), "max_tokens": MAX_TOKENS,
            "batches": batch_sizes, "rounds": args.rounds, "warmup_batches": args.warmup_batches,
            "batching": "file order, each batch padded to its longest sequence; tokenisation not timed",
        },
        "model": {"dir": str(args.model_dir), "model_type": mtype, "weights_sha256": wsha, "note": note,
                  "torch_attn": args.torch_attn, "onnx_opset": OPSET, "export_mask": args.export_mask,
                  "onnx_cache": str(cache)},
        "threading": {"threads": args.threads, "wait_policy": args.wait_policy,
                      "ort": "intra_op=threads, inter_op=1, sequential, graph opt ALL",
                      "torch": "set_num_threads(threads), interop 1, inference_mode",
                      "load_avg_at_start": load1},
        "machine": machine_info(args.threads),
        "versions": versions(),
    }

    # Table.
    print()
    print(f"# peers: {len(sentences)} sentences, {args.rounds} round(s), {args.threads} threads, "
          f"{result['machine'].get('cpu_model', '?')}")
    print(f"# {note}")
    hdr = f"{'engine':16s}" + "".join(f"{'b=' + str(b):>11s}" for b in batch_sizes) + f"{'p50 b1 ms':>11s}"
    print(hdr + "   (sequences/s, median over rounds)")
    for n in runners:
        mark = "*" if n in final.values() else " "
        p50 = f"{1e3 * statistics.median(lat1[n]):11.2f}" if lat1[n] else f"{'-':>11s}"
        print(f"{mark}{n:15s}" + "".join(f"{seq_per_s[n][b]:11.1f}" for b in batch_sizes) + p50)
    if chosen:
        print(f"# * = reported; ort-fp32 = {chosen['ort-fp32']}")
    for n, p in par.items():
        print(f"# parity {n:15s} max|diff| {p['max_abs_diff']:.2e}  mean cos {p['mean_cosine']:.6f}  "
              f"min cos {p['min_cosine']:.6f}  (first {PARITY_N} sentences vs torch fp32)")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
