//! `stance batch` echoes each record's `meta`, and `stance report` turns the scored corpus into
//! one HTML file with charts and tables, and `--csv` into the same tables; its numbers are
//! checked against sums computed here from the scored lines.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn csv(path: &std::path::Path) -> Vec<Vec<String>> {
    // The report quotes fields with commas; the numeric tables here have none.
    std::fs::read_to_string(path).unwrap().lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn batch_echoes_meta_and_the_report_charts_and_tabulates_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::root().join("tests/fixtures/report/articles.jsonl");
    let scores = dir.path().join("scores.jsonl");
    let out = common::stance()
        .args(["batch"])
        .arg(&input)
        .arg("-o")
        .arg(&scores)
        .args(common::model_args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Each result carries its record's meta, as sent; a record without meta has none.
    let inputs: BTreeMap<String, Value> =
        lines(&input).into_iter().map(|v| (v["id"].as_str().unwrap().to_string(), v)).collect();
    let scored = lines(&scores);
    assert_eq!(scored.len(), inputs.len());
    for s in &scored {
        let sent = &inputs[s["id"].as_str().unwrap()];
        assert_eq!(s.get("meta"), sent.get("meta"), "{}", s["id"]);
    }

    let html = dir.path().join("report.html");
    let csv_dir = dir.path().join("csv");
    let out =
        common::stance().arg("report").arg(&scores).arg("-o").arg(&html).arg("--csv").arg(&csv_dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();

    // What the report should say, summed here from the scored lines.
    let mut actors: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut by_source: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sentence_labels: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for s in &scored {
        for a in s["actors"].as_array().unwrap() {
            let name = a["actor"].as_str().unwrap().to_string();
            let e = actors.entry(name.clone()).or_default();
            e.0 += 1;
            e.1 += a["score"].as_f64().unwrap();
            let l = sentence_labels.entry(name.clone()).or_default();
            for (i, k) in ["negative", "neutral", "positive"].iter().enumerate() {
                l[i] += a[k].as_u64().unwrap();
            }
            if let Some(src) = s["meta"]["source"].as_str() {
                *by_source.entry((src.to_string(), name)).or_default() += 1;
            }
        }
    }
    assert!(actors.len() >= 3, "{actors:?}");

    // One chart of sentence labels, one histogram per actor, one weekly chart; no script and
    // nothing fetched from elsewhere.
    assert_eq!(page.matches("<svg").count(), 2 + actors.len(), "svg charts");
    assert!(!page.contains("<script") && !page.contains("src=\"http"), "self-contained");
    assert!(page.contains("13 articles from scores.jsonl"), "summary");
    assert!(page.contains("1 articles have no <code>meta.published</code> date and 1 no <code>meta.source</code>"));

    let t = csv(&csv_dir.join("actors.csv"));
    assert_eq!(t[0][..3], ["actor", "articles", "mean_score"]);
    assert_eq!(t.len() - 1, actors.len());
    for row in &t[1..] {
        let (n, sum) = actors[&row[0]];
        assert_eq!(row[1], n.to_string(), "{row:?}");
        assert!((row[2].parse::<f64>().unwrap() - sum / n as f64).abs() < 1e-3 + 1e-9, "{row:?}");
        let l = sentence_labels[&row[0]];
        assert_eq!(row[8..11], [l[0].to_string(), l[1].to_string(), l[2].to_string()], "{row:?}");
        assert!(page.contains(&format!("<td>{}</td><td>{}</td>", row[0], row[1])), "the HTML table has {row:?}");
    }
    let t = csv(&csv_dir.join("sources.csv"));
    let got: BTreeMap<(String, String), u64> =
        t[1..].iter().map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap())).collect();
    assert_eq!(got, by_source);
    // Weeks start on Monday: the fixture's dates fall in 7 weeks from 2020-10-05 to 2020-11-16.
    let t = csv(&csv_dir.join("weekly.csv"));
    let weeks: std::collections::BTreeSet<&str> = t[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(
        weeks.into_iter().collect::<Vec<_>>(),
        ["2020-10-05", "2020-10-12", "2020-10-19", "2020-10-26", "2020-11-02", "2020-11-09", "2020-11-16"]
    );
    let evidence = std::fs::read_to_string(csv_dir.join("evidence.csv")).unwrap();
    assert!(evidence.starts_with("actor,direction,score,sentence,article,title,source,published,url\r\n"));
    assert!(evidence.lines().count() > 1);
}

#[test]
fn lines_that_are_not_scores_are_named_and_a_corpus_without_scores_fails() {
    let dir = tempfile::tempdir().unwrap();
    let score = r#"{"id":"a","meta":{"source":"Wire","published":"2020-11-10"},"sentences":[{"text":"Baku objected.","actors":[{"actor":"Azerbaijan","score":-0.5,"label":"negative"}]}],"actors":[{"actor":"Azerbaijan","score":-0.5,"label":"negative","negative":1,"neutral":0,"positive":0}]}"#;
    let corpus = dir.path().join("mixed.jsonl");
    std::fs::write(&corpus, format!("{score}\nnot json\n{{\"id\":\"b\",\"error\":\"too large\"}}\n\n")).unwrap();
    let html = dir.path().join("r.html");
    let out = common::stance().arg("report").arg(&corpus).arg("-o").arg(&html).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: mixed.jsonl:2: not a scored article: expected ident"), "{stderr}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("1 articles from mixed.jsonl; 1 actors. 1 error records and 1 unreadable lines"), "{page}");

    let errors = dir.path().join("errors.jsonl");
    std::fs::write(&errors, "{\"id\":\"b\",\"error\":\"too large\"}\n").unwrap();
    let out = common::stance().arg("report").arg(&errors).arg("-o").arg(&html).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no scored articles in"), "{stderr}");
    let out =
        common::stance().arg("report").arg(dir.path().join("missing.jsonl")).arg("-o").arg(&html).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl: cannot read"));
}
