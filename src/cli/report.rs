//! `stance report SCORES.jsonl -o report.html [--csv DIR]`: one self-contained HTML page over a
//! scored corpus (the output of `stance batch`, or JSONL from `stance score --format json`):
//! per actor the distribution of its sentence labels and of its article scores, a table by
//! `meta.source`, the article score over time by `meta.published` (weekly mean, its count and a
//! 95% band), and the strongest evidence sentences with their articles. Charts are inline SVG
//! drawn by plotters; `--csv DIR` writes the same tables as CSV.
//!
//! The corpus is read one line at a time into running sums (counts, means, a fixed histogram,
//! the few strongest sentences per actor), so memory grows with actors × sources × weeks, never
//! with the number of articles.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::prelude::*;
use serde::Deserialize;

use stance::scores::Label;

use super::input::source_name;

#[derive(Args, Debug, Clone)]
pub struct ReportOpts {
    /// Scored JSONL files (`stance batch` output; error records are counted, not charted); `-`
    /// reads stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Also write the report's tables as CSV files into this folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub csv: Option<PathBuf>,
    /// Evidence sentences shown per actor and direction (most negative, most positive).
    #[arg(long, default_value_t = 5)]
    pub evidence: usize,
}

// ---- what is read of each line: only the fields the report uses, borrowed where it can ----

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    meta: Option<LineMeta<'a>>,
    #[serde(borrow)]
    sentences: Option<Vec<LineSentence<'a>>>,
    #[serde(borrow)]
    actors: Option<Vec<LineActor<'a>>>,
}

#[derive(Deserialize, Default)]
struct LineMeta<'a> {
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    published: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    title: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LineSentence<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(borrow)]
    actors: Vec<LineSentenceActor<'a>>,
}

#[derive(Deserialize)]
struct LineSentenceActor<'a> {
    #[serde(borrow)]
    actor: Cow<'a, str>,
    score: f32,
}

#[derive(Deserialize)]
struct LineActor<'a> {
    #[serde(borrow)]
    actor: Cow<'a, str>,
    score: f32,
    label: Label,
    negative: u64,
    neutral: u64,
    positive: u64,
}

// ---- running sums ----

/// Count, mean and a 95% interval of the mean (normal approximation).
#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    n: u64,
    sum: f64,
    sumsq: f64,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// Half the width of the 95% interval; 0 for fewer than two values.
    fn half_width(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        let var = ((self.sumsq - self.sum * self.sum / n) / (n - 1.0)).max(0.0);
        1.96 * (var / n).sqrt()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Labels {
    negative: u64,
    neutral: u64,
    positive: u64,
}

impl Labels {
    fn add(&mut self, l: Label, n: u64) {
        match l {
            Label::Negative => self.negative += n,
            Label::Neutral => self.neutral += n,
            Label::Positive => self.positive += n,
        }
    }

    fn total(&self) -> u64 {
        self.negative + self.neutral + self.positive
    }

    fn share(&self, l: Label) -> f64 {
        let n = match l {
            Label::Negative => self.negative,
            Label::Neutral => self.neutral,
            Label::Positive => self.positive,
        };
        if self.total() == 0 {
            0.0
        } else {
            n as f64 / self.total() as f64
        }
    }
}

/// One evidence sentence and its article.
#[derive(Debug, Clone)]
struct Evidence {
    score: f32,
    sentence: String,
    article: String,
    title: Option<String>,
    url: Option<String>,
    source: Option<String>,
    published: Option<String>,
}

/// The `k` sentences with the highest `key`, kept sorted best first.
#[derive(Debug, Default)]
struct Strongest(Vec<Evidence>);

impl Strongest {
    fn offer(&mut self, k: usize, key: f32, make: impl FnOnce() -> Evidence) {
        // The sentence is copied only when it makes the list.
        if k == 0 || (self.0.len() >= k && self.0.last().is_some_and(|w| key.abs() <= w.score.abs())) {
            return;
        }
        let e = make();
        let at = self.0.partition_point(|x| x.score.abs() >= e.score.abs());
        self.0.insert(at, e);
        self.0.truncate(k);
    }
}

/// Histogram bins of article scores over [−1, 1].
const BINS: usize = 20;

#[derive(Debug, Default)]
struct ActorStats {
    articles: Mean,
    article_labels: Labels,
    sentence_labels: Labels,
    hist: [u64; BINS],
    by_source: BTreeMap<String, (Mean, Labels)>,
    /// By the Monday of the week (days since 1970-01-01).
    by_week: BTreeMap<i64, Mean>,
    most_negative: Strongest,
    most_positive: Strongest,
}

#[derive(Debug, Default)]
struct Corpus {
    articles: u64,
    /// Error records (`{"id", "error"}`) of the scoring job.
    failed: u64,
    /// Lines that are neither a score nor an error record.
    unreadable: u64,
    /// Articles without a readable `meta.published`.
    undated: u64,
    unsourced: u64,
    actors: BTreeMap<String, ActorStats>,
}

impl Corpus {
    /// Adds one line; `Err` says why it is not a scored article.
    fn add_line(&mut self, bytes: &[u8], k: usize) -> Result<(), String> {
        let line: Line = serde_json::from_slice(bytes).map_err(|e| format!("not a scored article: {e}"))?;
        if line.error.is_some() {
            self.failed += 1;
            return Ok(());
        }
        let (Some(sentences), Some(actors)) = (line.sentences, line.actors) else {
            return Err("not a scored article: no \"sentences\" and \"actors\" (nor an \"error\")".into());
        };
        self.articles += 1;
        let meta = line.meta.unwrap_or_default();
        let week = meta.published.as_deref().and_then(week_of);
        if week.is_none() {
            self.undated += 1;
        }
        let source = meta.source.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if source.is_none() {
            self.unsourced += 1;
        }
        for a in &actors {
            let stats = self.actors.entry(a.actor.to_string()).or_default();
            let score = f64::from(a.score.clamp(-1.0, 1.0));
            stats.articles.add(score);
            stats.article_labels.add(a.label, 1);
            stats.sentence_labels.add(Label::Negative, a.negative);
            stats.sentence_labels.add(Label::Neutral, a.neutral);
            stats.sentence_labels.add(Label::Positive, a.positive);
            stats.hist[bin(score)] += 1;
            if let Some(s) = source {
                let (m, l) = stats.by_source.entry(s.to_string()).or_default();
                m.add(score);
                l.add(a.label, 1);
            }
            if let Some(w) = week {
                stats.by_week.entry(w).or_default().add(score);
            }
        }
        for s in &sentences {
            for sa in &s.actors {
                let Some(stats) = self.actors.get_mut(sa.actor.as_ref()) else { continue };
                let make = || Evidence {
                    score: sa.score,
                    sentence: clip(&s.text, 400),
                    article: line.id.to_string(),
                    title: meta.title.as_deref().map(str::to_string),
                    url: meta.url.as_deref().map(str::to_string),
                    source: source.map(str::to_string),
                    published: meta.published.as_deref().map(str::to_string),
                };
                // A sentence whose score rounds to ±0.00 is evidence of nothing.
                if sa.score <= -0.005 {
                    stats.most_negative.offer(k, sa.score, make);
                } else if sa.score >= 0.005 {
                    stats.most_positive.offer(k, sa.score, make);
                }
            }
        }
        Ok(())
    }
}

fn bin(score: f64) -> usize {
    (((score + 1.0) / 2.0 * BINS as f64) as usize).min(BINS - 1)
}

fn clip(s: &str, n: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= n {
        flat
    } else {
        format!("{}…", flat.chars().take(n - 1).collect::<String>())
    }
}

// ---- dates (proleptic Gregorian, days since 1970-01-01; Howard Hinnant's algorithms) ----

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The Monday of the week of an ISO date (`meta.published`), as days since 1970-01-01.
fn week_of(published: &str) -> Option<i64> {
    let (y, m, d) = stance::input::iso_date(published)?;
    let days = days_from_civil(i64::from(y), i64::from(m), i64::from(d));
    // 1970-01-01 was a Thursday: Monday is 0.
    Some(days - (days + 3).rem_euclid(7))
}

fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

// ---- reading ----

fn read_into(corpus: &mut Corpus, source: &str, k: usize, warnings: &mut Vec<String>) -> Result<()> {
    let name = source_name(source);
    let reader: Box<dyn Read> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(source).with_context(|| format!("{source}: cannot read"))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).with_context(|| format!("{name}: reading line {}", n + 1))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = corpus.add_line(&buf, k) {
            corpus.unreadable += 1;
            warnings.push(format!("{name}:{n}: {e}"));
        }
    }
}

// ---- tables (the same rows for HTML and CSV) ----

struct Table {
    name: &'static str,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Three decimals; a value that rounds to zero prints as `0.000`, not `-0.000`.
fn f3(x: f64) -> String {
    format!("{:.3}", unsigned_zero(x, 3))
}

/// `x`, or `0.0` where `x` rounds to zero at `decimals` places: Rust keeps the sign of a
/// negative that rounds away (`format!("{:.3}", -0.0001)` is `-0.000`), which reads as a
/// stance where there is none.
fn unsigned_zero(x: f64, decimals: i32) -> f64 {
    if x.abs() < 0.5 * 10f64.powi(-decimals) {
        0.0
    } else {
        x
    }
}

fn tables(c: &Corpus) -> Vec<Table> {
    let mut actors = Table {
        name: "actors",
        header: vec![
            "actor",
            "articles",
            "mean_score",
            "ci95_low",
            "ci95_high",
            "articles_negative",
            "articles_neutral",
            "articles_positive",
            "sentences_negative",
            "sentences_neutral",
            "sentences_positive",
        ],
        rows: Vec::new(),
    };
    let mut sources = Table {
        name: "sources",
        header: vec!["source", "actor", "articles", "mean_score", "share_negative", "share_positive"],
        rows: Vec::new(),
    };
    let mut weeks = Table {
        name: "weekly",
        header: vec!["actor", "week", "articles", "mean_score", "ci95_low", "ci95_high"],
        rows: Vec::new(),
    };
    let mut evidence = Table {
        name: "evidence",
        header: vec!["actor", "direction", "score", "sentence", "article", "title", "source", "published", "url"],
        rows: Vec::new(),
    };
    for (name, s) in &c.actors {
        let (m, h) = (s.articles.mean(), s.articles.half_width());
        actors.rows.push(vec![
            name.clone(),
            s.articles.n.to_string(),
            f3(m),
            f3(m - h),
            f3(m + h),
            s.article_labels.negative.to_string(),
            s.article_labels.neutral.to_string(),
            s.article_labels.positive.to_string(),
            s.sentence_labels.negative.to_string(),
            s.sentence_labels.neutral.to_string(),
            s.sentence_labels.positive.to_string(),
        ]);
        for (src, (m, l)) in &s.by_source {
            sources.rows.push(vec![
                src.clone(),
                name.clone(),
                m.n.to_string(),
                f3(m.mean()),
                f3(l.share(Label::Negative)),
                f3(l.share(Label::Positive)),
            ]);
        }
        for (w, m) in &s.by_week {
            let (mean, h) = (m.mean(), m.half_width());
            weeks.rows.push(vec![name.clone(), date(*w), m.n.to_string(), f3(mean), f3(mean - h), f3(mean + h)]);
        }
        for (direction, list) in [("negative", &s.most_negative), ("positive", &s.most_positive)] {
            for e in &list.0 {
                evidence.rows.push(vec![
                    name.clone(),
                    direction.into(),
                    f3(f64::from(e.score)),
                    e.sentence.clone(),
                    e.article.clone(),
                    e.title.clone().unwrap_or_default(),
                    e.source.clone().unwrap_or_default(),
                    e.published.clone().unwrap_or_default(),
                    e.url.clone().unwrap_or_default(),
                ]);
            }
        }
    }
    sources.rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    vec![actors, sources, weeks, evidence]
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

fn write_csv(dir: &Path, t: &Table) -> Result<()> {
    let path = dir.join(format!("{}.csv", t.name));
    let mut out = String::new();
    out.push_str(&t.header.join(","));
    out.push_str("\r\n");
    for r in &t.rows {
        out.push_str(&r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}

// ---- charts ----

const NEG: RGBColor = RGBColor(200, 30, 30);
const NEU: RGBColor = RGBColor(100, 110, 125);
const POS: RGBColor = RGBColor(20, 140, 60);
const SERIES: [RGBColor; 8] = [
    RGBColor(31, 95, 209),
    RGBColor(214, 110, 0),
    RGBColor(120, 60, 170),
    RGBColor(0, 140, 150),
    RGBColor(190, 40, 120),
    RGBColor(110, 120, 20),
    RGBColor(90, 90, 90),
    RGBColor(160, 90, 40),
];

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Drawn,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
        draw(&root).map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
    }
    Ok(out)
}

/// Each actor's sentence labels as one 100% bar.
fn labels_chart(c: &Corpus) -> Result<String> {
    let names: Vec<&String> = c.actors.keys().collect();
    let h = 70 + 34 * names.len() as u32;
    svg((760, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Sentence labels toward each actor (share of its sentences)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(120)
            .build_cartesian_2d(0f64..1f64, 0f64..names.len() as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(names.len() * 2 + 1)
            .y_label_formatter(&|y| {
                let i = (y - 0.5).round();
                if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let l = &c.actors[*name].sentence_labels;
            let mut x0 = 0.0;
            for (label, color) in [(Label::Negative, NEG), (Label::Neutral, NEU), (Label::Positive, POS)] {
                let x1 = x0 + l.share(label);
                let (y0, y1) = (i as f64 + 0.15, i as f64 + 0.85);
                chart.draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y1)], color.filled())))?;
                x0 = x1;
            }
        }
        Ok(())
    })
}

/// An actor's article scores as a histogram over [−1, 1].
fn histogram_chart(name: &str, s: &ActorStats) -> Result<String> {
    let top = s.hist.iter().copied().max().unwrap_or(0).max(1);
    svg((370, 230), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{name}: article scores"), ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(26)
            .y_label_area_size(40)
            .build_cartesian_2d(-1f64..1f64, 0u64..top + top / 10 + 1)?;
        chart.configure_mesh().x_labels(5).y_labels(5).draw()?;
        let width = 2.0 / BINS as f64;
        chart.draw_series(s.hist.iter().enumerate().map(|(i, &n)| {
            let x0 = -1.0 + i as f64 * width;
            let mid = x0 + width / 2.0;
            let color = if mid < -0.1 {
                NEG
            } else if mid > 0.1 {
                POS
            } else {
                NEU
            };
            Rectangle::new([(x0 + width * 0.05, 0), (x0 + width * 0.95, n)], color.filled())
        }))?;
        Ok(())
    })
}

/// The weekly mean article score of every actor, with its 95% band, and the articles per week.
fn weekly_chart(c: &Corpus) -> Result<Option<String>> {
    let weeks: Vec<i64> = c.actors.values().flat_map(|s| s.by_week.keys().copied()).collect();
    let (Some(&first), Some(&last)) = (weeks.iter().min(), weeks.iter().max()) else { return Ok(None) };
    let (x0, x1) = (first - 3, last + 4);
    let chart = svg((900, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Weekly mean article score (band: 95% interval of the mean; dot size: articles)",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, -1f64..1f64)?;
        chart.configure_mesh().x_labels(8).x_label_formatter(&|d| date(*d)).y_labels(9).draw()?;
        let most = c.actors.values().flat_map(|s| s.by_week.values().map(|m| m.n)).max().unwrap_or(1).max(1);
        for (i, (name, s)) in c.actors.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let points: Vec<(i64, f64, f64)> = s.by_week.iter().map(|(w, m)| (*w, m.mean(), m.half_width())).collect();
            if points.len() > 1 {
                let band: Vec<(i64, f64)> = points
                    .iter()
                    .map(|p| (p.0, (p.1 + p.2).min(1.0)))
                    .chain(points.iter().rev().map(|p| (p.0, (p.1 - p.2).max(-1.0))))
                    .collect();
                chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15).filled())))?;
            }
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(3)));
            chart.draw_series(s.by_week.iter().map(|(w, m)| {
                let r = 2 + (6.0 * (m.n as f64 / most as f64).sqrt()) as i32;
                Circle::new((*w, m.mean()), r, color.filled())
            }))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })?;
    Ok(Some(chart))
}

// ---- the page ----

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html_table(t: &Table, limit: usize) -> String {
    let mut o = String::new();
    let _ = write!(o, "<table data-table=\"{}\"><thead><tr>", t.name);
    for h in &t.header {
        let _ = write!(o, "<th scope=\"col\">{}</th>", esc(&h.replace('_', " ")));
    }
    o.push_str("</tr></thead><tbody>");
    for r in t.rows.iter().take(limit) {
        o.push_str("<tr>");
        for f in r {
            let _ = write!(o, "<td>{}</td>", esc(f));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if t.rows.len() > limit {
        let _ = write!(o, "<p class=\"note\">The first {limit} of {} rows; `--csv` writes them all.</p>", t.rows.len());
    }
    o
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;color:#1d232b;margin:0;background:#f6f7f9}\
header,section{background:#fff;border:1px solid #d8dde3;border-radius:8px;margin:1rem 1.5rem;padding:0.8rem 1.2rem}\
h1{font-size:1.4rem;margin:0}h2{font-size:1.15rem}h3{font-size:1rem;margin:0.8rem 0 0.3rem}\
.grid{display:flex;flex-wrap:wrap;gap:0.6rem}svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-size:0.88rem;margin:0.4rem 0}th,td{border-bottom:1px solid #e3e6ea;padding:0.2rem 0.5rem;text-align:left;vertical-align:top}\
th{background:#f0f2f5}td.num{text-align:right}.note{color:#5b6572;font-size:0.85rem}\
.neg{color:#c81e1e}.pos{color:#148c3c}blockquote{margin:0.2rem 0 0.6rem;padding-left:0.7rem;border-left:4px solid #d8dde3}";

fn page(c: &Corpus, tables: &[Table], inputs: &[String], k: usize) -> Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>stance report</title><style>{STYLE}</style></head><body><header><h1>stance report</h1>\
         <p id=\"summary\">{} articles from {}; {} actors. {} error records and {} unreadable lines were left out; \
         {} articles have no <code>meta.published</code> date and {} no <code>meta.source</code>.</p></header>",
        c.articles,
        esc(&inputs.iter().map(|s| source_name(s)).collect::<Vec<_>>().join(", ")),
        c.actors.len(),
        c.failed,
        c.unreadable,
        c.undated,
        c.unsourced,
    );
    o.push_str("<section id=\"labels\"><h2>Sentence labels and article scores</h2>");
    o.push_str(&labels_chart(c)?);
    o.push_str("<div class=\"grid\">");
    for (name, s) in &c.actors {
        o.push_str(&histogram_chart(name, s)?);
    }
    o.push_str("</div>");
    o.push_str(&html_table(&tables[0], usize::MAX));
    o.push_str("</section><section id=\"time\"><h2>Over time</h2>");
    match weekly_chart(c)? {
        Some(chart) => {
            o.push_str(&chart);
            o.push_str("<details><summary>The weekly numbers</summary>");
            o.push_str(&html_table(&tables[2], 2000));
            o.push_str("</details>");
        }
        None => o.push_str("<p class=\"note\">No article has a <code>meta.published</code> date.</p>"),
    }
    o.push_str("</section><section id=\"sources\"><h2>By source</h2>");
    if tables[1].rows.is_empty() {
        o.push_str("<p class=\"note\">No article has a <code>meta.source</code>.</p>");
    } else {
        o.push_str(&html_table(&tables[1], 500));
    }
    let _ = write!(o, "</section><section id=\"evidence\"><h2>Strongest evidence ({k} per actor and direction)</h2>");
    for (name, s) in &c.actors {
        let _ = write!(o, "<h3>{}</h3>", esc(name));
        for (direction, class, list) in
            [("most negative", "neg", &s.most_negative), ("most positive", "pos", &s.most_positive)]
        {
            if list.0.is_empty() {
                continue;
            }
            let _ = write!(o, "<p><strong class=\"{class}\">{direction}</strong></p>");
            for e in &list.0 {
                let article = match (&e.title, &e.url) {
                    (Some(t), Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
                        format!("<a href=\"{}\">{}</a>", esc(u), esc(t))
                    }
                    (Some(t), _) => esc(t),
                    (None, _) => esc(&e.article),
                };
                let when = [e.source.as_deref(), e.published.as_deref()].into_iter().flatten().collect::<Vec<_>>();
                let _ = write!(
                    o,
                    "<blockquote data-actor=\"{}\"><span class=\"{class}\">{:+.2}</span> {}<br><small>{}{}{}</small></blockquote>",
                    esc(name),
                    unsigned_zero(f64::from(e.score), 2),
                    esc(&e.sentence),
                    article,
                    if when.is_empty() { "" } else { " · " },
                    esc(&when.join(", ")),
                );
            }
        }
    }
    o.push_str("</section></body></html>\n");
    Ok(o)
}

pub fn run(o: ReportOpts) -> Result<ExitCode> {
    let mut corpus = Corpus::default();
    let mut warnings = Vec::new();
    for source in &o.inputs {
        read_into(&mut corpus, source, o.evidence, &mut warnings)?;
    }
    for w in warnings.iter().take(10) {
        eprintln!("warning: {w}");
    }
    if warnings.len() > 10 {
        eprintln!("warning: ... and {} more lines that are not scored articles", warnings.len() - 10);
    }
    if corpus.articles == 0 {
        bail!(
            "no scored articles in {} ({} error records, {} unreadable lines); give the output of `stance batch`",
            o.inputs.join(", "),
            corpus.failed,
            corpus.unreadable
        );
    }
    let tables = tables(&corpus);
    let html = page(&corpus, &tables, &o.inputs, o.evidence)?;
    let mut f = std::fs::File::create(&o.output).with_context(|| format!("creating {}", o.output.display()))?;
    f.write_all(html.as_bytes()).with_context(|| format!("writing {}", o.output.display()))?;
    if let Some(dir) = &o.csv {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for t in &tables {
            write_csv(dir, t)?;
        }
    }
    eprintln!(
        "{}: {} articles, {} actors{}",
        o.output.display(),
        corpus.articles,
        corpus.actors.len(),
        o.csv.as_ref().map(|d| format!("; CSV in {}", d.display())).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_has_no_sign() {
        assert_eq!(f3(-0.0001), "0.000");
        assert_eq!(f3(-0.0), "0.000");
        assert_eq!(f3(-0.0006), "-0.001");
        assert_eq!(f3(0.25), "0.250");
        assert_eq!(format!("{:+.2}", unsigned_zero(-0.004, 2)), "+0.00");
        assert_eq!(format!("{:+.2}", unsigned_zero(-0.006, 2)), "-0.01");
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2020-11-12 was a Thursday; its week began on Monday 2020-11-09.
        assert_eq!(week_of("2020-11-12").map(date), Some("2020-11-09".into()));
        assert_eq!(week_of("2020-11-09T23:59:00Z").map(date), Some("2020-11-09".into()));
        assert_eq!(week_of("2021-01-03").map(date), Some("2020-12-28".into()));
        assert_eq!(week_of("2024-02-29").map(date), Some("2024-02-26".into()));
        for bad in ["2023-02-29", "2020-13-01", "12/11/2020", "2020-1-1", ""] {
            assert_eq!(week_of(bad), None, "{bad}");
        }
        for d in [-1000, 0, 18_000, 20_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn means_and_bands() {
        let mut m = Mean::default();
        assert_eq!((m.mean(), m.half_width()), (0.0, 0.0));
        m.add(0.5);
        assert_eq!((m.mean(), m.half_width()), (0.5, 0.0));
        m.add(-0.5);
        // sd = 0.7071, n = 2: 1.96 * 0.7071 / 1.4142 = 0.98.
        assert!((m.half_width() - 0.98).abs() < 1e-9, "{}", m.half_width());
        assert_eq!((bin(-1.0), bin(0.0), bin(1.0)), (0, BINS / 2, BINS - 1));
    }

    #[test]
    fn strongest_keeps_the_top_k() {
        let mut s = Strongest::default();
        let ev = |score: f32| Evidence {
            score,
            sentence: format!("{score}"),
            article: String::new(),
            title: None,
            url: None,
            source: None,
            published: None,
        };
        for x in [-0.2f32, -0.9, -0.5, -0.1, -0.95] {
            s.offer(3, x, || ev(x));
        }
        assert_eq!(s.0.iter().map(|e| e.score).collect::<Vec<_>>(), vec![-0.95, -0.9, -0.5]);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"no\""), "\"say \"\"no\"\"\"");
    }

    #[test]
    fn lines_are_counted_by_kind() {
        let mut c = Corpus::default();
        assert!(c.add_line(br#"{"id":"x","error":"bad"}"#, 3).is_ok());
        assert!(c.add_line(br#"{"id":"y"}"#, 3).unwrap_err().contains("no \"sentences\""));
        assert!(c.add_line(b"nope", 3).unwrap_err().starts_with("not a scored article"));
        let ok = br#"{"id":"z","meta":{"source":"Wire","published":"2020-11-12"},"sentences":[{"text":"Baku said.","actors":[{"actor":"Azerbaijan","score":-0.4,"label":"negative"}]}],"actors":[{"actor":"Azerbaijan","score":-0.4,"label":"negative","negative":1,"neutral":0,"positive":0,"mentions":1}]}"#;
        c.add_line(ok, 3).unwrap();
        assert_eq!((c.articles, c.failed, c.undated, c.unsourced), (1, 1, 0, 0));
        let a = &c.actors["Azerbaijan"];
        assert_eq!(a.by_source["Wire"].0.n, 1);
        assert_eq!(a.most_negative.0[0].sentence, "Baku said.");
        assert_eq!(a.by_week.keys().map(|w| date(*w)).collect::<Vec<_>>(), vec!["2020-11-09"]);
    }
}
