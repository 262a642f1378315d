#!/usr/bin/env python3
"""Reliability scenarios against the real binary, with figures (not part of CI: minutes of CPU).

    target/ci-venv/bin/python scripts/reliability.py [--records 600] [--overload-s 15]

Needs grpcio and grpcio-tools (the venv .ci/run makes) and a release build
(STANCE_BIN, default target/release/stance). Scenarios:

1. overload: 128 clients, each a ScoreArticle at a time with a 10 s deadline, retrying
   RESOURCE_EXHAUSTED after 50 ms, against --max-queue 16: answers per code, OK/s, and the
   server's own counts (requests, skipped jobs).
2. kill and resume: an in-process `stance batch` killed (SIGKILL) once lines appear, then rerun:
   records lost, duplicated, errored.
3. two servers, one killed (SIGKILL) midway through a `stance batch --remote` job.
4. two servers, one stopped (SIGTERM, a rolling restart) midway through a remote job.

Exit status 1 if any record is lost, duplicated or errored, or any answer is not OK,
RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("STANCE_BIN", str(ROOT / "target" / "release" / "stance"))
FIXTURE = (ROOT / "tests" / "fixtures" / "article.txt").read_text(encoding="utf-8")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_")}
ENV.setdefault("RUST_LOG", "warn")
# The small model (8x cheaper than the default): what is measured here is the transport and
# the queue, not the encoder.
ENV["STANCE_MODEL"] = str(ROOT / "models" / "minilm-l6-stance")


def stubs(tmp):
    from grpc_tools import protoc

    include = str(Path(protoc.__file__).parent / "_proto")
    tmp.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={tmp}",
                      f"--grpc_python_out={tmp}", str(ROOT / "proto" / "stance" / "v1" / "stance.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(tmp))
    from stance.v1 import stance_pb2, stance_pb2_grpc

    return stance_pb2, stance_pb2_grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*extra):
    """Starts `stance serve` on an ephemeral port; returns (process, address) once SERVING."""
    p = subprocess.Popen([BIN, "serve", "--addr", "127.0.0.1:0", *extra], cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, text=True)
    addr = p.stdout.readline().strip().removeprefix("listening on ")
    until = time.time() + 60
    while subprocess.run([BIN, "health", "--remote", addr], env=ENV, capture_output=True).returncode != 0:
        assert time.time() < until, f"{addr} not SERVING in 60 s"
        time.sleep(0.1)
    return p, addr


def records(n):
    return "".join(json.dumps({"id": f"r{i}", "text": FIXTURE[: 150 + (i % 9) * 60]}) + "\n" for i in range(n))


def audit(out, n):
    """(lost, duplicated, errored) records of a batch output against ids r0..r{n-1}."""
    ids = Counter()
    errored = 0
    for line in Path(out).read_text().splitlines():
        v = json.loads(line)
        ids[v["id"]] += 1
        errored += "error" in v
    lost = sum(1 for i in range(n) if ids[f"r{i}"] == 0)
    duplicated = sum(c - 1 for c in ids.values() if c > 1)
    return lost, duplicated, errored


def wait_lines(path, n, timeout=120):
    until = time.time() + timeout
    while not (Path(path).exists() and len(Path(path).read_text().splitlines()) >= n):
        assert time.time() < until, f"{path}: fewer than {n} lines after {timeout} s"
        time.sleep(0.02)


def overload(pb, pb_grpc, seconds):
    metrics = f"127.0.0.1:{free_port()}"
    p, addr = serve("--max-queue", "16", "--metrics-addr", metrics)
    codes = Counter()
    lock = threading.Lock()
    stop = time.time() + seconds
    req = pb.ScoreArticleRequest(article=pb.Article(id="o", text=FIXTURE))

    def client():
        with grpc.insecure_channel(addr) as ch:
            stub = pb_grpc.StanceStub(ch)
            while time.time() < stop:
                try:
                    stub.ScoreArticle(req, timeout=10)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    codes[code] += 1
                if code == "RESOURCE_EXHAUSTED":
                    time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(128)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - started
    text = urllib.request.urlopen(f"http://{metrics}/metrics").read().decode()
    server = {l.split(" ")[0]: l.split(" ")[1] for l in text.splitlines()
              if l.startswith(("stance_requests_total", "stance_jobs_skipped_total"))}
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    print(f"overload: {dict(codes)} in {elapsed:.1f} s: {codes['OK'] / elapsed:.1f} OK/s")
    for k, v in sorted(server.items()):
        print(f"  server {k} {v}")
    return set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}


def kill_and_resume(tmp, n):
    inp, out = tmp / "kr.jsonl", tmp / "kr-out.jsonl"
    inp.write_text(records(n))
    job = subprocess.Popen([BIN, "batch", str(inp), "-o", str(out)], cwd=ROOT, env=ENV, stderr=subprocess.DEVNULL)
    wait_lines(out, n // 4)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = len(out.read_text().splitlines())
    rc = subprocess.run([BIN, "batch", str(inp), "-o", str(out)], cwd=ROOT, env=ENV, capture_output=True).returncode
    lost, dup, err = audit(out, n)
    print(f"kill and resume: killed at {before} lines; rerun exit {rc}; lost {lost}, duplicated {dup}, errored {err}")
    return rc == 0 and (lost, dup, err) == (0, 0, 0)


def two_servers(tmp, n, sig, name):
    (a, addr_a), (b, addr_b) = serve(), serve()
    inp, out = tmp / f"{name}.jsonl", tmp / f"{name}-out.jsonl"
    inp.write_text(records(n))
    job = subprocess.Popen([BIN, "batch", str(inp), "-o", str(out), "--remote", f"{addr_a},{addr_b}"],
                           cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    wait_lines(out, n // 4)
    b.send_signal(sig)
    _, stderr = job.communicate(timeout=600)
    lost, dup, err = audit(out, n)
    summary = [l for l in stderr.splitlines() if l.startswith("batch:")]
    print(f"{name}: exit {job.returncode}; lost {lost}, duplicated {dup}, errored {err}; {' | '.join(summary)}")
    for p in (a, b):
        p.kill()
        p.wait()
    return job.returncode == 0 and (lost, dup, err) == (0, 0, 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=600)
    ap.add_argument("--overload-s", type=float, default=15)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pb, pb_grpc = stubs(tmp / "stubs")
        ok = [
            overload(pb, pb_grpc, a.overload_s),
            kill_and_resume(tmp, a.records),
            two_servers(tmp, a.records, signal.SIGKILL, "one of two servers killed"),
            two_servers(tmp, a.records, signal.SIGTERM, "one of two servers stopped"),
        ]
    print("all clean" if all(ok) else "FAILURES above")
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
