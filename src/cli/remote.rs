//! `stance score --remote ADDR`: the same output as in-process scoring, from a server.

use std::process::ExitCode;

use anyhow::{Context, Result};

use stance::client::Remote;
use stance::scores::ArticleScore;

use super::input::Record;

/// Articles outstanding at once on the servers, unless `stance batch --inflight` says otherwise.
pub const INFLIGHT: usize = 32;

/// The largest gRPC message the client sends or receives.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Scores `records` on the server(s) and prints each result with `print`, in input order;
/// `print` returning `false` (the reader closed the pipe) ends the command with success.
pub fn score(
    addrs: &[String],
    records: Vec<Record>,
    mut print: impl FnMut(&ArticleScore) -> Result<bool>,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let remote = Remote::connect(addrs, MAX_MESSAGE_BYTES).await?;
        let mut failed = 0usize;
        let mut items = Vec::new();
        let mut slots: Vec<Option<Result<ArticleScore, String>>> = Vec::new();
        for r in records {
            match r.article {
                Ok(a) => {
                    items.push((slots.len() as u64, a));
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
        }
        remote
            .score_all(items, INFLIGHT, |seq, id, res| {
                slots[seq as usize] = Some(res.map_err(|f| format!("{id}: {f}")));
                Ok(())
            })
            .await?;
        for s in slots {
            match s {
                Some(Ok(score)) => {
                    if !print(&score)? {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    failed += 1;
                }
                None => {
                    eprintln!("error: an article got no answer");
                    failed += 1;
                }
            }
        }
        Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
