//! The bounded queue between the gRPC handlers and the compute threads (the "queue" of a
//! router/queue/backend split, as in text-embeddings-inference).
//!
//! A handler `prepare`s an article and pushes its encoder windows as one [`Job`]; a full queue
//! (too many jobs, or too many tokens) refuses at once (the handler answers RESOURCE_EXHAUSTED),
//! so memory stays bounded: articles differ in size by three orders of magnitude, so a count of
//! jobs alone would not bound it. Compute threads pop jobs (blocking, on plain std threads) and
//! answer through the job's oneshot.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::batches::WindowInput;
use crate::pipeline::WindowScores;

/// Why a job produced no scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The request's deadline passed before its windows were computed; they were skipped.
    Expired,
    /// The encoder failed.
    Compute(String),
    /// The server's shutdown grace period ran out before the job was computed.
    Cancelled,
}

/// Where a job's scores (or why there are none) go.
pub type Reply = oneshot::Sender<Result<Vec<WindowScores>, JobError>>;

/// One article's windows, waiting for the encoder.
pub struct Job {
    pub windows: Vec<WindowInput>,
    pub reply: Reply,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
}

impl Job {
    /// Tokens in all the job's windows: what the packed encoder computes (it pads nothing).
    pub fn tokens(&self) -> usize {
        self.windows.iter().map(|w| w.ids.len()).sum()
    }

    /// Whether anyone still waits for this job (the handler drops its receiver when the client
    /// cancels or the deadline passes).
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity of jobs already.
    Full { capacity: usize },
    /// The job's tokens would take the queue past its token bound (a job alone in the queue is
    /// always taken: its size is bounded by the per-article window limit).
    TokensFull { queued: usize, max: usize },
    /// The server is shutting down.
    Closed,
}

impl Inner {
    fn pop_front(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.tokens -= job.tokens();
        super::metrics::queue_depth(self.jobs.len());
        Some(job)
    }
}

struct Inner {
    jobs: VecDeque<Job>,
    /// Tokens of all queued jobs.
    tokens: usize,
    closed: bool,
    cancelled: bool,
    /// Tokens per second one compute thread gets through (a moving average of its batches);
    /// 0 until the first batch.
    rate: f64,
    consumers: usize,
}

/// A bounded FIFO of jobs, shared by async producers and blocking consumers.
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
    max_tokens: usize,
}

impl Queue {
    /// A queue of at most `capacity` jobs and `max_tokens` tokens, drained by `consumers`
    /// compute threads.
    pub fn new(capacity: usize, max_tokens: usize, consumers: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                tokens: 0,
                closed: false,
                cancelled: false,
                rate: 0.0,
                consumers: consumers.max(1),
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            max_tokens: max_tokens.max(1),
        }
    }

    /// Why a new job would be refused now, before anyone prepares it (it counts as one token);
    /// `None` when there is room.
    pub fn refusal(&self) -> Option<PushError> {
        let inner = self.inner.lock().expect("queue lock");
        self.refuses(&inner, 0)
    }

    fn refuses(&self, inner: &Inner, tokens: usize) -> Option<PushError> {
        if inner.closed {
            Some(PushError::Closed)
        } else if inner.jobs.len() >= self.capacity {
            Some(PushError::Full { capacity: self.capacity })
        } else if !inner.jobs.is_empty() && inner.tokens + tokens.max(1) > self.max_tokens {
            Some(PushError::TokensFull { queued: inner.tokens, max: self.max_tokens })
        } else {
            None
        }
    }

    /// Adds a job, or refuses it at once when the queue is full or closed. Never blocks.
    pub fn push(&self, job: Job) -> Result<(), (PushError, Job)> {
        let mut inner = self.inner.lock().expect("queue lock");
        let tokens = job.tokens();
        if let Some(e) = self.refuses(&inner, tokens) {
            return Err((e, job));
        }
        inner.tokens += tokens;
        inner.jobs.push_back(job);
        super::metrics::queue_depth(inner.jobs.len());
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// Puts back a job a batch had no room for, at the head (it may briefly exceed capacity).
    pub fn push_front(&self, job: Job) {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.tokens += job.tokens();
        inner.jobs.push_front(job);
        super::metrics::queue_depth(inner.jobs.len());
        drop(inner);
        self.ready.notify_one();
    }

    /// Waits for a job; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<Job> {
        let mut inner = self.inner.lock().expect("queue lock");
        loop {
            if let Some(job) = inner.pop_front() {
                return Some(job);
            }
            if inner.closed {
                return None;
            }
            inner = self.ready.wait(inner).expect("queue lock");
        }
    }

    /// Waits for a job until `until`; `None` when none came (or the queue is closed and empty).
    pub fn pop_until(&self, until: Instant) -> Option<Job> {
        let mut inner = self.inner.lock().expect("queue lock");
        loop {
            if let Some(job) = inner.pop_front() {
                return Some(job);
            }
            let now = Instant::now();
            if inner.closed || now >= until {
                return None;
            }
            inner = self.ready.wait_timeout(inner, until - now).expect("queue lock").0;
        }
    }

    /// Refuses new jobs; consumers drain what is queued, then stop.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.ready.notify_all();
    }

    /// Refuses new jobs and answers every queued one [`JobError::Cancelled`] (the shutdown grace
    /// period ran out); compute threads give up on their current job between pieces.
    pub fn cancel(&self) {
        let jobs = {
            let mut inner = self.inner.lock().expect("queue lock");
            inner.closed = true;
            inner.cancelled = true;
            super::metrics::queue_depth(0);
            inner.tokens = 0;
            std::mem::take(&mut inner.jobs)
        };
        self.ready.notify_all();
        for job in jobs {
            let _ = job.reply.send(Err(JobError::Cancelled));
        }
    }

    /// A compute thread ran `tokens` in `elapsed`: updates the drain rate.
    pub fn record_batch(&self, tokens: usize, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        if tokens == 0 || secs <= 0.0 {
            return;
        }
        let mut inner = self.inner.lock().expect("queue lock");
        let rate = tokens as f64 / secs;
        inner.rate = if inner.rate == 0.0 { rate } else { 0.8 * inner.rate + 0.2 * rate };
    }

    /// How long what is queued now will take to reach a compute thread; `None` before the
    /// first batch gave a rate.
    pub fn estimated_wait(&self) -> Option<std::time::Duration> {
        let inner = self.inner.lock().expect("queue lock");
        (inner.rate > 0.0)
            .then(|| std::time::Duration::from_secs_f64(inner.tokens as f64 / (inner.rate * inner.consumers as f64)))
    }

    pub fn cancelled(&self) -> bool {
        self.inner.lock().expect("queue lock").cancelled
    }

    #[cfg(test)]
    fn depth(&self) -> usize {
        self.inner.lock().expect("queue lock").jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Result<Vec<WindowScores>, JobError>>) {
        let (reply, rx) = oneshot::channel();
        (Job { windows: Vec::new(), reply, deadline: None, enqueued: Instant::now() }, rx)
    }

    #[test]
    fn bounded_and_closable() {
        let q = Queue::new(2, 1 << 20, 1);
        let (a, _ra) = job();
        let (b, _rb) = job();
        let (c, _rc) = job();
        assert!(q.push(a).is_ok());
        assert!(q.push(b).is_ok());
        assert_eq!(q.push(c).unwrap_err().0, PushError::Full { capacity: 2 });
        assert_eq!(q.depth(), 2);
        q.close();
        assert!(q.pop().is_some());
        assert!(q.pop_until(Instant::now()).is_some());
        assert!(q.pop().is_none());
        let (d, _rd) = job();
        assert_eq!(q.push(d).unwrap_err().0, PushError::Closed);
    }

    #[test]
    fn cancel_answers_the_queued_jobs_and_refuses_new_ones() {
        let q = Queue::new(4, 1 << 20, 1);
        let (a, mut ra) = job();
        let (b, mut rb) = job();
        assert!(q.push(a).is_ok());
        assert!(q.push(b).is_ok());
        assert!(!q.cancelled());
        q.cancel();
        assert!(q.cancelled());
        assert_eq!(q.depth(), 0);
        assert_eq!(ra.try_recv().unwrap().unwrap_err(), JobError::Cancelled);
        assert_eq!(rb.try_recv().unwrap().unwrap_err(), JobError::Cancelled);
        assert!(q.pop().is_none());
        let (c, _rc) = job();
        assert_eq!(q.push(c).unwrap_err().0, PushError::Closed);
    }

    #[test]
    fn the_estimated_wait_follows_queued_tokens_and_the_drain_rate() {
        let q = Queue::new(8, 1 << 20, 2);
        assert_eq!(q.estimated_wait(), None, "no rate before the first batch");
        let (a, _ra) = job_of(3000);
        assert!(q.push(a).is_ok());
        q.record_batch(1000, std::time::Duration::from_secs(1));
        // 3,000 tokens at 1,000 tokens/s per thread, two threads.
        assert_eq!(q.estimated_wait(), Some(std::time::Duration::from_millis(1500)));
        q.record_batch(6000, std::time::Duration::from_secs(1));
        assert_eq!(q.estimated_wait(), Some(std::time::Duration::from_secs_f64(3000.0 / (2000.0 * 2.0))));
        assert!(q.pop().is_some());
        assert_eq!(q.estimated_wait(), Some(std::time::Duration::ZERO));
    }

    fn job_of(tokens: usize) -> (Job, oneshot::Receiver<Result<Vec<WindowScores>, JobError>>) {
        let (mut j, rx) = job();
        j.windows = vec![WindowInput { ids: vec![0; tokens], targets: Vec::new() }];
        (j, rx)
    }

    #[test]
    fn bounded_in_tokens_too() {
        let q = Queue::new(100, 1000, 1);
        // A job larger than the bound is taken when it is alone: the article limits bound it.
        let (big, _r0) = job_of(1500);
        assert!(q.push(big).is_ok());
        assert_eq!(q.refusal(), Some(PushError::TokensFull { queued: 1500, max: 1000 }));
        let (small, _r1) = job_of(1);
        assert_eq!(q.push(small).unwrap_err().0, PushError::TokensFull { queued: 1500, max: 1000 });
        assert!(q.pop().is_some());
        assert_eq!(q.refusal(), None);
        let (a, _ra) = job_of(600);
        let (b, _rb) = job_of(400);
        let (c, _rc) = job_of(1);
        assert!(q.push(a).is_ok());
        assert!(q.push(b).is_ok(), "600 + 400 is within 1,000");
        assert_eq!(q.refusal(), Some(PushError::TokensFull { queued: 1000, max: 1000 }));
        assert_eq!(q.push(c).unwrap_err().0, PushError::TokensFull { queued: 1000, max: 1000 });
        assert!(q.pop().is_some());
        let (d, _rd) = job_of(601);
        assert_eq!(q.push(d).unwrap_err().0, PushError::TokensFull { queued: 400, max: 1000 }, "400 + 601 > 1,000");
        let (e, _re) = job_of(600);
        assert!(q.push(e).is_ok());
    }

    #[test]
    fn abandoned_when_receiver_dropped() {
        let (j, rx) = job();
        assert!(!j.abandoned());
        drop(rx);
        assert!(j.abandoned());
    }
}
