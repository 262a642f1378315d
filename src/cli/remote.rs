//! `stance score --remote ADDR`: the same output as in-process scoring, from a server.

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use stance::client::{ClientOptions, Remote};
use stance::scores::ArticleScore;

use super::input::Record;

/// Articles outstanding at once on the servers, unless `stance batch --inflight` says otherwise.
pub const INFLIGHT: usize = 32;

/// The largest gRPC message the client sends or receives.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How the CLI reaches servers (`--remote`): TLS and the API key.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectOpts {
    /// The servers' API key (sent as `authorization: Bearer KEY`).
    #[arg(long, env = "STANCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Connect with TLS (implied by https:// addresses and the other --tls options); servers
    /// are checked against the Mozilla roots unless --tls-ca is given.
    #[arg(long)]
    pub tls: bool,
    /// Trust servers whose certificate this CA (PEM) signed.
    #[arg(long, env = "STANCE_REMOTE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mutual TLS); with --tls-key.
    #[arg(long, env = "STANCE_REMOTE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "STANCE_REMOTE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the address's host.
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ConnectOpts {
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            api_key: self.api_key.clone(),
            tls: self.tls,
            tls_ca: self.tls_ca.clone(),
            tls_identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            tls_domain: self.tls_domain.clone(),
        }
    }
}

/// Scores `records` on the server(s) and prints each result with `print`, in input order;
/// `print` returning `false` (the reader closed the pipe) ends the command with success.
pub fn score(
    addrs: &[String],
    connect: &ConnectOpts,
    records: Vec<Record>,
    mut print: impl FnMut(&ArticleScore) -> Result<bool>,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        let remote = Remote::connect(addrs, MAX_MESSAGE_BYTES, &connect.options()).await?;
        let mut failed = 0usize;
        let mut items = Vec::new();
        let mut slots: Vec<Option<Result<ArticleScore, String>>> = Vec::new();
        // Each record's metadata, by slot: echoed in its result here rather than sent.
        let mut metas = Vec::new();
        for r in records {
            match r.article {
                Ok(a) => {
                    items.push((slots.len() as u64, a));
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
            metas.push(r.meta);
        }
        remote
            .score_all(items, INFLIGHT, |seq, id, res| {
                let meta = std::mem::take(&mut metas[seq as usize]);
                slots[seq as usize] = Some(res.map(|s| ArticleScore { meta, ..s }).map_err(|f| format!("{id}: {f}")));
                anyhow::Ok(())
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
