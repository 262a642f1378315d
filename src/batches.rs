//! Encoder windows → padded batches, and the pooling matrices the heads read.
//!
//! Windows are grouped by length (sorted, then cut by a token budget) so that little padding is
//! computed. Pooling is expressed as matrices over the flattened batch (`[rows, batch*seq]`), so
//! one matmul pools every sentence and every actor of a batch, and training differentiates
//! through it like any other op.

use std::ops::Range;

use candle_core::{Device, Result, Tensor};

/// One encoder input: a window of one sentence, and the actors to score in it.
#[derive(Debug, Clone)]
pub struct WindowInput {
    /// `[CLS] pieces [SEP]`.
    pub ids: Vec<u32>,
    /// Per actor to score in this window: the positions of its mention pieces (all mentions of
    /// the actor that were placed in this window).
    pub targets: Vec<Vec<Range<usize>>>,
}

/// Tokens per encoder batch unless configured (`--max-batch-tokens`), counted as the backend
/// computes them.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// Limits on one padded batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Padded tokens per batch (`rows * longest`).
    pub max_tokens: usize,
    /// Windows per batch.
    pub max_rows: usize,
}

/// Groups window indices into batches of similar length, longest first within the order of
/// the sort (stable, so the plan is deterministic).
pub fn plan(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let l = lengths[i].max(1);
        let new_longest = longest.max(l);
        if !cur.is_empty() && (cur.len() >= limits.max_rows || new_longest * (cur.len() + 1) > limits.max_tokens) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(l);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Consecutive groups of windows of at most `max_tokens` tokens in all (a longer window goes
/// alone), for the packed encoder, which computes no padding.
pub fn pack<'a>(windows: &[&'a WindowInput], max_tokens: usize) -> Vec<Vec<&'a WindowInput>> {
    let mut out: Vec<Vec<&WindowInput>> = Vec::new();
    let mut cur = Vec::new();
    let mut tokens = 0;
    for &w in windows {
        if !cur.is_empty() && tokens + w.ids.len() > max_tokens {
            out.push(std::mem::take(&mut cur));
            tokens = 0;
        }
        tokens += w.ids.len();
        cur.push(w);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Positions of a target's mention pieces inside a window of `n` tokens, each once, in order
/// of first appearance.
pub fn unique_positions(spans: &[Range<usize>], n: usize) -> Vec<usize> {
    let mut seen = vec![false; n];
    spans.iter().flat_map(|s| s.clone()).filter(|&p| p < n && !std::mem::replace(&mut seen[p], true)).collect()
}

/// Mean of the `rows` (indices) of a row-major `[_, h]` matrix.
pub fn mean_rows(m: &[f32], h: usize, rows: impl IntoIterator<Item = usize>) -> Vec<f32> {
    let mut acc = vec![0f32; h];
    let mut count = 0usize;
    for r in rows {
        for (a, v) in acc.iter_mut().zip(&m[r * h..(r + 1) * h]) {
            *a += v;
        }
        count += 1;
    }
    let inv = 1.0 / count.max(1) as f32;
    acc.iter_mut().for_each(|a| *a *= inv);
    acc
}

/// A padded batch and its pooling matrices.
pub struct Batch {
    /// `[rows, seq]` u32.
    pub ids: Tensor,
    /// `[rows, seq]` f32, 1 for real tokens.
    pub mask: Tensor,
    /// `[rows, rows*seq]`: mean over each window's real tokens.
    pub sentence_pool: Tensor,
    /// `[targets, rows*seq]`: mean over each target's mention pieces.
    pub target_pool: Tensor,
    /// `[targets]` u32: the row of each target, to pick its sentence vector.
    pub target_rows: Tensor,
    /// For each target, `(row, index in that window's targets)`.
    pub target_index: Vec<(usize, usize)>,
    pub seq: usize,
}

impl Batch {
    /// Pads `windows` to the longest and builds pooling matrices.
    pub fn build(windows: &[&WindowInput], device: &Device) -> Result<Self> {
        let rows = windows.len();
        let seq = windows.iter().map(|w| w.ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0u32; rows * seq];
        let mut mask = vec![0f32; rows * seq];
        let mut sentence_pool = vec![0f32; rows * rows * seq];
        let mut target_pool = Vec::new();
        let mut target_rows = Vec::new();
        let mut target_index = Vec::new();
        for (r, w) in windows.iter().enumerate() {
            let n = w.ids.len();
            ids[r * seq..r * seq + n].copy_from_slice(&w.ids);
            mask[r * seq..r * seq + n].fill(1.0);
            let inv = 1.0 / n.max(1) as f32;
            let base = r * rows * seq + r * seq;
            sentence_pool[base..base + n].fill(inv);
            for (t, spans) in w.targets.iter().enumerate() {
                let mut row = vec![0f32; rows * seq];
                // Overlapping mentions count each piece once.
                let unique = unique_positions(spans, n);
                let inv = 1.0 / unique.len().max(1) as f32;
                for p in unique {
                    row[r * seq + p] = inv;
                }
                target_pool.extend_from_slice(&row);
                target_rows.push(r as u32);
                target_index.push((r, t));
            }
        }
        let targets = target_rows.len();
        Ok(Self {
            ids: Tensor::from_vec(ids, (rows, seq), device)?,
            mask: Tensor::from_vec(mask, (rows, seq), device)?,
            sentence_pool: Tensor::from_vec(sentence_pool, (rows, rows * seq), device)?,
            target_pool: Tensor::from_vec(target_pool, (targets, rows * seq), device)?,
            target_rows: Tensor::from_vec(target_rows, targets, device)?,
            target_index,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_respects_limits_and_covers_all() {
        let lengths = vec![5, 50, 7, 49, 3, 120, 8, 9];
        let plan = plan(&lengths, BatchLimits { max_tokens: 100, max_rows: 3 });
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &plan {
            assert!(b.len() <= 3);
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() == 1 || longest * b.len() <= 100, "{b:?}");
        }
        assert_eq!(plan[0], vec![5], "the longest window goes alone");
    }

    #[test]
    fn pack_keeps_order_within_the_budget() {
        let w = |n: usize| WindowInput { ids: vec![1; n], targets: vec![] };
        let ws = [w(5), w(4), w(3), w(20), w(2)];
        let refs: Vec<&WindowInput> = ws.iter().collect();
        let sizes: Vec<Vec<usize>> = pack(&refs, 10).iter().map(|g| g.iter().map(|x| x.ids.len()).collect()).collect();
        assert_eq!(sizes, vec![vec![5, 4], vec![3], vec![20], vec![2]]);
        assert_eq!(unique_positions(&[3..5, 1..4], 4), vec![3, 1, 2]);
        assert_eq!(mean_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, [0, 2]), vec![3.0, 4.0]);
    }

    #[test]
    fn pooling_matrices_average_the_right_tokens() {
        let dev = Device::Cpu;
        let a = WindowInput { ids: vec![101, 7, 8, 9, 102], targets: vec![vec![1..3], vec![3..4, 1..2]] };
        let b = WindowInput { ids: vec![101, 5, 102], targets: vec![] };
        let batch = Batch::build(&[&a, &b], &dev).unwrap();
        assert_eq!(batch.seq, 5);
        let sp = batch.sentence_pool.to_vec2::<f32>().unwrap();
        assert_eq!(&sp[0][0..5], &[0.2; 5]);
        assert_eq!(&sp[1][5..10], &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
        let tp = batch.target_pool.to_vec2::<f32>().unwrap();
        assert_eq!(&tp[0][0..5], &[0.0, 0.5, 0.5, 0.0, 0.0]);
        assert_eq!(&tp[1][0..5], &[0.0, 0.5, 0.0, 0.5, 0.0]);
        assert_eq!(batch.target_index, vec![(0, 0), (0, 1)]);
        assert_eq!(batch.mask.to_vec2::<f32>().unwrap()[1], vec![1.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
