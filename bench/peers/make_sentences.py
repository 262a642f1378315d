#!/usr/bin/env python3
"""Smoke-test helper: naive sentence split of text files into one sentence per
line (sentences with >= 3 words). The real workload file is written by the
project's Rust benchmark; this is only for trying peers.py by hand.

    python3 bench/peers/make_sentences.py OUT.txt /work/shared/articles/*.txt [--limit N]
"""
import re
import sys


def main() -> int:
    args = sys.argv[1:]
    limit = None
    if "--limit" in args:
        i = args.index("--limit")
        limit = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    out, files = args[0], args[1:]
    sents = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            for s in re.split(r"(?<=[.!?])\s+", para):
                if len(s.split()) >= 3:
                    sents.append(s)
    if limit:
        sents = sents[:limit]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(sents) + "\n")
    print(f"{len(sents)} sentences -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
