#!/usr/bin/env python3
"""Writes N synthetic scored articles (the JSONL of `stance batch`) for timing `stance report`:
  python3 scripts/synthetic_scores.py 100000 > /tmp/scores.jsonl
  /usr/bin/time -v stance report /tmp/scores.jsonl -o /tmp/report.html --csv /tmp/report-csv
Seeded, so every run writes the same file. Each article has 12 sentences, 2 to 4 of 6 actors,
one of 40 sources and a date in 2020-2021."""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
rng = random.Random(7)
actors = ["Russia", "Turkey", "Armenia", "Azerbaijan", "France", "Iran"]
labels = ["negative", "neutral", "positive"]
out = sys.stdout
for i in range(n):
    mine = rng.sample(actors, rng.randint(2, 4))
    sentences = []
    per = {a: [] for a in mine}
    for k in range(12):
        sa = []
        for a in rng.sample(mine, rng.randint(0, 2)):
            score = max(-1.0, min(1.0, rng.gauss(0, 0.4)))
            lab = "negative" if score < -0.2 else "positive" if score > 0.2 else "neutral"
            sa.append({"actor": a, "mentions": [{"start": 0, "end": 4, "char_start": 0, "char_end": 4, "text": a}],
                       "label": lab, "score": round(score, 4), "negative": 0.2, "neutral": 0.6, "positive": 0.2})
            per[a].append((k, score, lab))
        sentences.append({"index": k, "start": 0, "end": 60, "char_start": 0, "char_end": 60, "kind": "sentence",
                          "text": f"Sentence {k} of article {i} about " + ", ".join(x["actor"] for x in sa) + ".",
                          "windows": 1, "sentiment": {"label": "neutral", "score": 0.0, "negative": 0.2,
                                                      "neutral": 0.6, "positive": 0.2}, "actors": sa})
    aggs = []
    for a, xs in per.items():
        if not xs:
            continue
        mean = sum(x[1] for x in xs) / len(xs)
        aggs.append({"actor": a, "mentions": len(xs), "sentences": len(xs), "score": round(mean, 4),
                     "label": "negative" if mean < -0.2 else "positive" if mean > 0.2 else "neutral",
                     **{l: sum(1 for x in xs if x[2] == l) for l in labels},
                     "evidence": {"most_negative": min(xs, key=lambda x: x[1])[0],
                                  "most_positive": max(xs, key=lambda x: x[1])[0]}})
    day = rng.randint(0, 729)
    y, d = (2020, day) if day < 366 else (2021, day - 366)
    import datetime
    date = (datetime.date(y, 1, 1) + datetime.timedelta(days=d)).isoformat()
    rec = {"id": f"s{i}", "meta": {"source": f"source-{rng.randint(1, 40)}", "published": date,
                                   "title": f"Article {i}", "url": f"https://example.org/{i}"},
           "model": {"name": "synthetic", "version": "0", "precision": "fp32"},
           "sentences": sentences, "actors": aggs, "sentiment": {"label": "neutral", "score": 0.0}}
    out.write(json.dumps(rec) + "\n")
