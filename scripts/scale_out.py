#!/usr/bin/env python3
"""Scale-out simulation: server replicas on loopback addresses, sharded batch jobs at once over
them, one replica killed midway and another started; checks every record is written exactly
once across the shard outputs and prints the per-replica split.

    python3 scripts/scale_out.py [--records 4000] [--shards 4] [--replicas 3]

Needs target/release/stance (STANCE_BIN). Standard library only; .ci/run runs it small.

The jobs reach the replicas by a fixed address list, so the replica started midway serves the
shard jobs started after it (the second wave below), not the ones already running: following
replicas that come and go is `--remote dns:///NAME:PORT`, which needs a DNS name with several
addresses that this simulation cannot create.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("STANCE_BIN", str(ROOT / "target" / "release" / "stance"))
ENV = {k: v for k, v in os.environ.items() if not k.startswith("STANCE_") and k != "JOB_COMPLETION_INDEX"}
ENV.setdefault("RUST_LOG", "warn")
# The small model (8x cheaper than the default): what is measured here is the transport and
# the queue, not the encoder.
ENV["STANCE_MODEL"] = str(ROOT / "models" / "minilm-l6-stance")
SENTENCES = [
    "Russia and Turkey held talks in Moscow on Monday.",
    "Armenia accused Azerbaijan of shelling border villages.",
    "Azerbaijan said its forces had only returned fire.",
    "Turkey offered to mediate between the two sides.",
]


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, host):
        self.metrics = f"{host}:{free_port(host)}"
        self.proc = subprocess.Popen([BIN, "serve", "--addr", f"{host}:0", "--metrics-addr", self.metrics],
                                     cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
        self.addr = self.proc.stdout.readline().strip().removeprefix("listening on ")
        self.scored = 0
        until = time.time() + 60
        while subprocess.run([BIN, "health", "--remote", self.addr], env=ENV, capture_output=True).returncode:
            assert time.time() < until, f"{self.addr} not SERVING in 60 s"
            time.sleep(0.1)

    def count(self):
        """Articles this replica scored (its own metric); kept once it is gone."""
        try:
            text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5).read().decode()
            for line in text.splitlines():
                if line.startswith("stance_articles_scored_total"):
                    self.scored = int(float(line.split()[-1]))
        except OSError:
            pass
        return self.scored

    def kill(self):
        self.count()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--replicas", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        inp = tmp / "articles.jsonl"
        with inp.open("w") as f:
            for i in range(a.records):
                text = " ".join(SENTENCES[(i + k) % 4] for k in range(1 + i % 2))
                f.write(json.dumps({"id": f"a{i}", "text": text}) + "\n")
        started = time.time()
        # Loopback addresses 127.0.0.1, .2, ...: one "host" per replica.
        replicas = [Replica(f"127.0.0.{k + 1}") for k in range(a.replicas)]
        addrs = ",".join(r.addr for r in replicas)
        outs = [tmp / f"shard-{k}.jsonl" for k in range(a.shards)]

        def job(k, remote):
            return subprocess.Popen([BIN, "batch", str(inp), "-o", str(outs[k]), "--shard", f"{k}/{a.shards}",
                                     "--remote", remote], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)

        # First wave: all shards but the last, at once.
        jobs = {k: job(k, addrs) for k in range(a.shards - 1)}
        lines = lambda: sum(len(o.read_text().splitlines()) for o in outs if o.exists())
        while lines() < a.records // 4:
            time.sleep(0.05)
        killed = replicas[1]
        killed.kill()
        new = Replica(f"127.0.0.{a.replicas + 1}")
        replicas.append(new)
        # Second wave: the last shard, on the replicas that are up now (the new one included).
        up = ",".join(r.addr for r in replicas if r is not killed)
        jobs[a.shards - 1] = job(a.shards - 1, up)
        codes = {}
        for k, p in jobs.items():
            _, err = p.communicate(timeout=1800)
            codes[k] = p.returncode
            if p.returncode:
                print(f"shard {k} exited {p.returncode}:\n{err}", file=sys.stderr)
        elapsed = time.time() - started
        split = {r.addr + (" (killed)" if r is killed else " (started midway)" if r is new else ""): r.count()
                 for r in replicas}
        for r in replicas:
            if r is not killed:
                r.proc.send_signal(signal.SIGTERM)
                r.proc.wait(timeout=60)
        ids = Counter()
        errors = 0
        for o in outs:
            for line in o.read_text().splitlines():
                v = json.loads(line)
                ids[v["id"]] += 1
                errors += "error" in v
        lost = sum(1 for i in range(a.records) if ids[f"a{i}"] == 0)
        dup = sum(n - 1 for n in ids.values() if n > 1)
        merged = subprocess.run([BIN, "batch", str(inp), "-o", str(tmp / "merged.jsonl"), "--merge", *map(str, outs)],
                                cwd=ROOT, env=ENV, capture_output=True, text=True)
        print(f"scale-out: {a.records} records, {a.shards} shards, {a.replicas} replicas (+1 midway, 1 killed) "
              f"in {elapsed:.1f} s")
        for addr, n in split.items():
            print(f"  {addr}: {n} articles")
        print(f"  shard exits {codes}; lost {lost}, duplicated {dup}, errored {errors}; merge exit {merged.returncode}")
        ok = all(c == 0 for c in codes.values()) and lost == dup == errors == 0 and merged.returncode == 0
        ok = ok and new.scored > 0
        print("scale-out: clean" if ok else "scale-out: FAILED")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
