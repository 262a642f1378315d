//! `stance score`: scores articles in-process or on `--remote` servers and prints a table or
//! JSON on stdout.
//!
//! Output ends quietly (exit 0) when the reader closes the pipe, as `stance score ... | head`
//! expects; any other write error (a full disk) is an error, never a panic.

use std::io::{BufWriter, ErrorKind, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use stance::input::{ArticleInput, Meta};
use stance::pipeline::Engine;
use stance::scores::ArticleScore;

use super::input::{read_source, InputFormat};

/// Articles scored together in-process (by `stance score`, and by `stance batch` unless
/// `--chunk` says otherwise).
pub const CHUNK: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ScoreOpts {
    /// Article files (plain text, or JSONL with --input-format jsonl / a .jsonl name); `-` reads stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,
    /// Score on this `stance serve` server (HOST:PORT) instead of in-process; repeat (or
    /// separate with commas) to spread the load across several.
    #[arg(long, value_delimiter = ',')]
    pub remote: Vec<String>,
    #[command(flatten)]
    pub connect: super::remote::ConnectOpts,
}

/// Prints scores on stdout in one format.
pub struct Printer<W: Write> {
    out: W,
    format: OutputFormat,
    /// Pretty JSON (one plain-text article); otherwise one JSON object per line.
    pretty: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, pretty: bool) -> Self {
        Self { out, format, pretty }
    }

    /// Prints one article and flushes it. `Ok(false)`: the reader closed the pipe, print
    /// nothing more and end with success; a write error of any other kind is an error.
    pub fn print(&mut self, score: &ArticleScore) -> Result<bool> {
        let text = match self.format {
            OutputFormat::Table => super::table::render(score),
            OutputFormat::Json if self.pretty => serde_json::to_string_pretty(score).context("serialising a score")?,
            OutputFormat::Json => serde_json::to_string(score).context("serialising a score")?,
        };
        match writeln!(self.out, "{text}").and_then(|_| self.out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context("writing the output")),
        }
    }
}

/// Scores every input; bad inputs are reported on stderr and make the exit code 1, the rest
/// are still scored and printed.
pub fn run<F>(o: ScoreOpts, load: F) -> Result<ExitCode>
where
    F: FnOnce() -> Result<Engine>,
{
    let records: Vec<_> = o.inputs.iter().flat_map(|s| read_source(s, o.input_format)).collect();
    // One plain-text article prints pretty JSON; JSONL input and several inputs print one line
    // per article, so the output is JSONL whenever the input is.
    let jsonl_input = o.inputs.iter().any(|s| o.input_format.is_jsonl(s));
    let single = records.len() == 1 && !jsonl_input;
    let mut printer = Printer::new(BufWriter::new(std::io::stdout().lock()), o.format, single);
    if !o.remote.is_empty() {
        return super::remote::score(&o.remote, &o.connect, records, |score| printer.print(score));
    }
    let engine = load().context("loading the model")?;
    let mut failed = 0usize;
    let mut pending: Vec<(ArticleInput, Meta)> = Vec::new();
    // Scores and prints what is pending; `false` once the reader is gone.
    let mut flush = |pending: &mut Vec<(ArticleInput, Meta)>, failed: &mut usize| -> Result<bool> {
        let (inputs, metas): (Vec<ArticleInput>, Vec<Meta>) = std::mem::take(pending).into_iter().unzip();
        let ids: Vec<String> = inputs.iter().map(|p| p.id.clone()).collect();
        for ((id, meta), res) in ids.into_iter().zip(metas).zip(engine.score_many(inputs)) {
            match res {
                Ok(mut score) => {
                    score.meta = meta;
                    if !printer.print(&score)? {
                        return Ok(false);
                    }
                }
                Err(e) => {
                    eprintln!("error: {id}: {e}");
                    *failed += 1;
                }
            }
        }
        Ok(true)
    };
    for r in records {
        let open = match r.article {
            Ok(article) => {
                pending.push((article, r.meta));
                pending.len() < CHUNK || flush(&mut pending, &mut failed)?
            }
            Err(e) => {
                let open = flush(&mut pending, &mut failed)?;
                eprintln!("error: {e}");
                failed += 1;
                open
            }
        };
        if !open {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !flush(&mut pending, &mut failed)? {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
