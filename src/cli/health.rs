//! `stance health --remote ADDR`: one health check, as an exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tonic_health::pb::health_check_response::ServingStatus;

/// Exit 0 and print `ADDR: SERVING` when the server serves; otherwise say what it answered
/// (or why there was no answer) on stderr and exit 1.
pub fn run(addr: &str, timeout_s: f64, connect: &super::remote::ConnectOpts) -> Result<ExitCode> {
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        bail!("--timeout-s must be a positive number of seconds, not {timeout_s}");
    }
    let timeout = Duration::from_secs_f64(timeout_s);
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    Ok(match rt.block_on(stance::client::health(addr, timeout, &connect.options())) {
        Ok(ServingStatus::Serving) => {
            println!("{addr}: SERVING");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            let hint = if other == ServingStatus::NotServing { " (its model may still be loading)" } else { "" };
            eprintln!("{addr}: {}{hint}", other.as_str_name());
            ExitCode::from(1)
        }
        Err(e) => {
            // The message and its causes, joined with `: `.
            eprintln!("{:#}", anyhow::Error::new(e));
            ExitCode::from(1)
        }
    })
}
