//! Sentence → word pieces, with byte offsets, cut into encoder windows.
//!
//! A sentence longer than the model's window (`max_tokens`, special tokens included) is
//! covered by overlapping windows (half-window stride). Every mention is placed in the window
//! where it sits farthest from the edges, so no mention is ever dropped; sentence sentiment is
//! averaged over windows.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

/// A tokenizer file that cannot serve a model: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{} is not a valid tokenizer.json: {reason}", path.display())]
pub struct TokenizerError {
    pub path: PathBuf,
    pub reason: String,
}

/// The tokenizer of a model, with its special tokens and window size.
pub struct SentenceTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
    max_tokens: usize,
    /// Ids of the tokens that open and close a target's mention (target-marker models).
    markers: Option<(u32, u32)>,
}

/// Mentions wrapped in markers per window, at most: a window grows by two tokens per marked
/// mention, so it stays within `max_tokens + 2 * MAX_MARKED` positions. Further mentions of
/// the actor in the window are still pooled, unmarked.
pub const MAX_MARKED: usize = 16;

/// One sentence's word pieces and the windows that cover them.
#[derive(Debug, Clone)]
pub struct Tokenized {
    /// Word-piece ids, no special tokens.
    pub ids: Vec<u32>,
    /// Byte offsets of each word piece in the sentence.
    pub offsets: Vec<(usize, usize)>,
    /// Ranges of word pieces fed to the encoder, each as `[CLS] ids[range] [SEP]`.
    pub windows: Vec<Range<usize>>,
}

impl SentenceTokenizer {
    /// Loads `tokenizer.json`; `framing` names the tokens that open and close every window
    /// (`[CLS]`/`[SEP]` for BERT, `<s>`/`</s>` for MPNet: [`crate::encoder::EncoderConfig::framing`]).
    pub fn from_file(path: &Path, max_tokens: usize, framing: (&str, &str)) -> Result<Self, TokenizerError> {
        let invalid = |reason: String| TokenizerError { path: path.to_path_buf(), reason };
        let mut inner = Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        // Windows are cut here, not by the tokenizer; a file may carry its own settings.
        inner.with_truncation(None).map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        let special =
            |tok: &str| inner.token_to_id(tok).ok_or_else(|| invalid(format!("the vocabulary has no {tok} token")));
        let (cls, sep) = (special(framing.0)?, special(framing.1)?);
        if max_tokens < 8 {
            return Err(invalid(format!("max_tokens {max_tokens} is too small")));
        }
        Ok(Self { inner, cls, sep, max_tokens, markers: None })
    }

    /// Uses the vocabulary tokens `open` and `close` as target markers.
    pub fn with_markers(mut self, path: &Path, open: &str, close: &str) -> Result<Self, TokenizerError> {
        let id = |tok: &str| {
            self.inner.token_to_id(tok).ok_or_else(|| TokenizerError {
                path: path.to_path_buf(),
                reason: format!("the vocabulary has no {tok:?} token, which the manifest names as a target marker"),
            })
        };
        self.markers = Some((id(open)?, id(close)?));
        Ok(self)
    }

    /// The marker ids, for models that mark targets.
    pub fn markers(&self) -> Option<(u32, u32)> {
        self.markers
    }

    /// Tokenizes one sentence.
    pub fn tokenize(&self, sentence: &str) -> Result<Tokenized, tokenizers::Error> {
        let enc = self.inner.encode(sentence, false)?;
        let ids = enc.get_ids().to_vec();
        let offsets = enc.get_offsets().to_vec();
        let windows = windows(ids.len(), self.max_tokens - 2);
        Ok(Tokenized { ids, offsets, windows })
    }

    /// Encoder input for window `w`: `[CLS] pieces [SEP]`.
    pub fn window_ids(&self, t: &Tokenized, w: usize) -> Vec<u32> {
        let r = t.windows[w].clone();
        let mut v = Vec::with_capacity(r.len() + 2);
        v.push(self.cls);
        v.extend_from_slice(&t.ids[r]);
        v.push(self.sep);
        v
    }
}

/// `ids` (an encoder window) with the position ranges `spans` wrapped in `open`/`close`.
/// Overlapping spans are merged; at most [`MAX_MARKED`] are wrapped. Returns the new ids and,
/// for each merged span, its positions in them (markers included, so the pooled states are the
/// markers' and the mention's).
pub fn mark(ids: &[u32], spans: &[Range<usize>], (open, close): (u32, u32)) -> (Vec<u32>, Vec<Range<usize>>) {
    let mut sorted: Vec<Range<usize>> =
        spans.iter().filter(|r| r.start < r.end && r.end <= ids.len()).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in sorted {
        match merged.last_mut() {
            Some(last) if r.start < last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = Vec::with_capacity(ids.len() + 2 * merged.len().min(MAX_MARKED));
    let mut positions = Vec::with_capacity(merged.len());
    let mut next = 0;
    for (k, r) in merged.iter().enumerate() {
        out.extend_from_slice(&ids[next..r.start]);
        if k < MAX_MARKED {
            let begin = out.len();
            out.push(open);
            out.extend_from_slice(&ids[r.clone()]);
            out.push(close);
            positions.push(begin..out.len());
        } else {
            let begin = out.len();
            out.extend_from_slice(&ids[r.clone()]);
            positions.push(begin..out.len());
        }
        next = r.end;
    }
    out.extend_from_slice(&ids[next..]);
    (out, positions)
}

/// Content-token ranges of at most `width` tokens covering `0..n` with half-window overlap.
#[allow(clippy::single_range_in_vec_init)] // one window is a list of one range
fn windows(n: usize, width: usize) -> Vec<Range<usize>> {
    if n <= width {
        return vec![0..n];
    }
    let stride = (width / 2).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        if start + width >= n {
            out.push(n - width..n);
            break;
        }
        out.push(start..start + width);
        start += stride;
    }
    out
}

impl Tokenized {
    /// Word pieces overlapping the byte span `start..end` of the sentence. A span that covers
    /// no piece (only whitespace or characters the tokenizer drops) maps to the nearest piece,
    /// so that a mention is always scored.
    pub fn pieces_for_span(&self, start: usize, end: usize) -> Range<usize> {
        let overlapping: Vec<usize> =
            (0..self.offsets.len()).filter(|&i| self.offsets[i].0 < end && self.offsets[i].1 > start).collect();
        match (overlapping.first(), overlapping.last()) {
            (Some(&a), Some(&b)) => a..b + 1,
            _ => {
                if self.offsets.is_empty() {
                    return 0..0;
                }
                let dist = |i: usize| {
                    let (a, b) = self.offsets[i];
                    if b <= start {
                        start - b
                    } else {
                        a.saturating_sub(end)
                    }
                };
                let best = (0..self.offsets.len()).min_by_key(|&i| dist(i)).unwrap_or(0);
                best..best + 1
            }
        }
    }

    /// The window that holds `pieces` best (farthest from its edges) and the pieces' positions
    /// inside that window's encoder input (after `[CLS]`). A mention longer than a window is
    /// clipped to the window that holds its start.
    pub fn place(&self, pieces: &Range<usize>) -> (usize, Range<usize>) {
        let mut best: Option<(usize, i64)> = None;
        for (w, r) in self.windows.iter().enumerate() {
            let inside = r.start <= pieces.start && pieces.end <= r.end;
            if !inside {
                continue;
            }
            let margin = (pieces.start as i64 - r.start as i64).min(r.end as i64 - pieces.end as i64);
            if best.is_none_or(|(_, m)| margin > m) {
                best = Some((w, margin));
            }
        }
        let w = match best {
            Some((w, _)) => w,
            None => self.windows.iter().position(|r| r.contains(&pieces.start)).unwrap_or(0),
        };
        let r = &self.windows[w];
        let a = pieces.start.clamp(r.start, r.end);
        let b = pieces.end.clamp(a, r.end).max((a + 1).min(r.end));
        (w, a - r.start + 1..b - r.start + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_wraps_merged_spans_and_reports_their_positions() {
        // [CLS] a b c d e [SEP], mentions b..c and c..d overlap, e alone.
        let ids = [101, 1, 2, 3, 4, 5, 102];
        let (out, pos) = mark(&ids, &[2..4, 3..5, 5..6], (900, 901));
        assert_eq!(out, vec![101, 1, 900, 2, 3, 4, 901, 900, 5, 901, 102]);
        assert_eq!(pos, vec![2..7, 7..10]);
        for r in &pos {
            assert_eq!(out[r.start], 900);
            assert_eq!(out[r.end - 1], 901);
        }
        // Beyond MAX_MARKED, mentions keep their pieces unmarked.
        let ids: Vec<u32> = (0..40).collect();
        let spans: Vec<Range<usize>> = (1..=MAX_MARKED + 2).map(|i| 2 * i..2 * i + 1).collect();
        let (out, pos) = mark(&ids, &spans, (900, 901));
        assert_eq!(out.len(), ids.len() + 2 * MAX_MARKED);
        assert_eq!(pos.len(), MAX_MARKED + 2);
        assert_eq!(out[pos[MAX_MARKED].clone()], [2 * (MAX_MARKED as u32 + 1)]);
    }

    #[test]
    fn windows_cover_everything_with_overlap() {
        assert_eq!(windows(0, 10), vec![0..0]);
        assert_eq!(windows(10, 10), vec![0..10]);
        assert_eq!(windows(11, 10), vec![0..10, 1..11]);
        assert_eq!(windows(25, 10), vec![0..10, 5..15, 10..20, 15..25]);
        for n in 0..200 {
            let ws = windows(n, 16);
            for i in 0..n {
                assert!(ws.iter().any(|r| r.contains(&i)), "piece {i} of {n} uncovered");
            }
            assert!(ws.iter().all(|r| r.len() <= 16));
        }
    }

    fn toks(offsets: Vec<(usize, usize)>, windows: Vec<Range<usize>>) -> Tokenized {
        Tokenized { ids: vec![0; offsets.len()], offsets, windows }
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn spans_map_to_pieces() {
        // "Erdogan's army": Er ##dogan ' s army
        let t = toks(vec![(0, 2), (2, 7), (7, 8), (8, 9), (10, 14)], vec![0..5]);
        assert_eq!(t.pieces_for_span(0, 7), 0..2);
        assert_eq!(t.pieces_for_span(10, 14), 4..5);
        assert_eq!(t.pieces_for_span(9, 10), 3..4, "a whitespace span maps to the nearest piece (ties: the earlier)");
        assert_eq!(t.place(&(0..2)), (0, 1..3));
    }

    #[test]
    fn mentions_go_to_the_most_central_window() {
        let t = toks((0..25).map(|i| (i, i + 1)).collect(), windows(25, 10));
        // piece 12 is in windows 5..15 (margin 2) and 10..20 (margin 2) -> first best kept.
        let (w, pos) = t.place(&(12..13));
        assert_eq!(t.windows[w], 5..15);
        assert_eq!(pos, 8..9);
        let (w, _) = t.place(&(24..25));
        assert_eq!(t.windows[w], 15..25);
        // A span wider than any window is clipped, never dropped.
        let (w, pos) = t.place(&(0..25));
        assert_eq!(w, 0);
        assert_eq!(pos, 1..11);
    }
}
