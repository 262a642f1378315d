//! The compute threads (the "backend"): each pops jobs from the [`Queue`], gathers windows of
//! several requests into one batch bounded by tokens and a short wait, runs
//! [`Engine::run_windows`] and answers every job through its oneshot.
//!
//! These are dedicated `std::thread`s: the encoder is CPU-bound and must never run on tokio's
//! workers. Jobs whose client went away or whose deadline passed are skipped before any
//! computation.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics;
use super::queue::{Job, JobError, Queue, Reply};
use crate::batches::{self, WindowInput};
use crate::pipeline::Engine;

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Tokens (all windows, no padding) per batch; one article larger than this still
    /// runs alone (the engine cuts it into smaller encoder batches).
    pub max_batch_tokens: usize,
    /// How long a batch waits for more requests once it has one.
    pub max_batch_wait: Duration,
}

/// Starts one compute thread.
pub fn spawn(
    index: usize,
    engine: Arc<Engine>,
    queue: Arc<Queue>,
    config: BatchConfig,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("stance-compute-{index}")).spawn(move || run(&engine, &queue, config))
}

/// Why a job is no longer worth computing, if it is not: the reason the skip metric counts,
/// and the answer owed (none when nobody listens any more).
fn verdict(job: &Job, queue: &Queue) -> Option<(&'static str, Option<JobError>)> {
    if queue.cancelled() {
        return Some(("shutdown", Some(JobError::Cancelled)));
    }
    // Expiry before abandonment: the handler also lets go of a job whose deadline passed.
    if job.expired(Instant::now()) {
        return Some(("deadline", Some(JobError::Expired)));
    }
    job.abandoned().then_some(("cancelled", None))
}

/// Counts a skipped job and gives it its answer.
fn skip(reply: Reply, (reason, answer): (&'static str, Option<JobError>)) {
    metrics::skipped(reason);
    if let Some(e) = answer {
        let _ = reply.send(Err(e));
    }
}

/// Whether a job still needs computing; answers or drops the ones that do not.
fn live(job: Job, queue: &Queue) -> Option<Job> {
    match verdict(&job, queue) {
        Some(v) => {
            skip(job.reply, v);
            None
        }
        None => Some(job),
    }
}

fn run(engine: &Engine, queue: &Queue, config: BatchConfig) {
    while let Some(first) = queue.pop() {
        let Some(first) = live(first, queue) else { continue };
        let started = Instant::now();
        let until = started + config.max_batch_wait;
        let mut tokens = first.tokens();
        let mut jobs = vec![first];
        while tokens < config.max_batch_tokens {
            let Some(job) = queue.pop_until(until) else { break };
            let Some(job) = live(job, queue) else { continue };
            if tokens + job.tokens() > config.max_batch_tokens {
                queue.push_front(job);
                break;
            }
            tokens += job.tokens();
            jobs.push(job);
        }
        compute(engine, queue, jobs, tokens, config.max_batch_tokens);
    }
    tracing::debug!("compute thread stops: queue closed and drained");
}

/// Runs one job larger than a batch in batch-sized pieces, giving up between pieces when its
/// client has gone, its deadline has passed or the server's shutdown grace period ran out.
fn compute_large(engine: &Engine, queue: &Queue, job: Job, max_tokens: usize) {
    let mut scores = Vec::with_capacity(job.windows.len());
    let windows: Vec<&WindowInput> = job.windows.iter().collect();
    for piece in batches::pack(&windows, max_tokens) {
        if !scores.is_empty() {
            if let Some(v) = verdict(&job, queue) {
                return skip(job.reply, v);
            }
        }
        let started = Instant::now();
        let result = engine.run_windows(&piece);
        let tokens = engine.batch_tokens(&piece);
        metrics::batch(1, piece.len(), tokens, started.elapsed());
        queue.record_batch(tokens, started.elapsed());
        match result {
            Ok(s) => scores.extend(s),
            Err(e) => {
                tracing::error!(error = %e, "encoder batch failed");
                let _ = job.reply.send(Err(JobError::Compute(e.to_string())));
                return;
            }
        }
    }
    metrics::queue_wait(Instant::now().saturating_duration_since(job.enqueued));
    let _ = job.reply.send(Ok(scores));
}

fn compute(engine: &Engine, queue: &Queue, mut jobs: Vec<Job>, tokens: usize, max_tokens: usize) {
    if jobs.len() == 1 && tokens > max_tokens {
        return compute_large(engine, queue, jobs.pop().expect("one job"), max_tokens);
    }
    let windows: Vec<&WindowInput> = jobs.iter().flat_map(|j| j.windows.iter()).collect();
    let started = Instant::now();
    let result = engine.run_windows(&windows);
    let batch_tokens = engine.batch_tokens(&windows);
    metrics::batch(jobs.len(), windows.len(), batch_tokens, started.elapsed());
    queue.record_batch(batch_tokens, started.elapsed());
    match result {
        Ok(scores) => {
            let mut scores = scores.into_iter();
            for job in jobs {
                let mine = scores.by_ref().take(job.windows.len()).collect();
                metrics::queue_wait(started.saturating_duration_since(job.enqueued));
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "encoder batch failed");
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(JobError::Compute(msg.clone())));
            }
        }
    }
}
