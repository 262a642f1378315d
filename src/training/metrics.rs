//! Classification metrics over the three labels.

use serde::Serialize;

use crate::scores::Label;

/// A 3×3 confusion matrix, `m[gold][predicted]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Confusion {
    pub m: [[usize; 3]; 3],
}

impl Confusion {
    pub fn add(&mut self, gold: Label, predicted: Label) {
        self.m[gold.index()][predicted.index()] += 1;
    }

    pub fn total(&self) -> usize {
        self.m.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let right: usize = (0..3).map(|i| self.m[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// F1 of one class (0 when it is neither predicted nor present).
    pub fn f1(&self, class: usize) -> f64 {
        let tp = self.m[class][class] as f64;
        let predicted: usize = (0..3).map(|g| self.m[g][class]).sum();
        let gold: usize = self.m[class].iter().sum();
        if predicted + gold == 0 {
            return 0.0;
        }
        2.0 * tp / (predicted + gold) as f64
    }

    /// Unweighted mean of the three classes' F1.
    pub fn f1_macro(&self) -> f64 {
        (0..3).map(|c| self.f1(c)).sum::<f64>() / 3.0
    }
}

/// Expected calibration error over `bins` equal-width confidence bins: the
/// item-weighted mean of |accuracy − mean confidence| per bin, the confidence being the
/// probability of the predicted (most probable) class.
pub fn ece(items: &[([f32; 3], Label)], bins: usize) -> f64 {
    if items.is_empty() {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut right = vec![0usize; bins];
    for (p, gold) in items {
        let predicted = crate::scores::Polarity::from_probs(*p);
        let c = predicted.confidence() as f64;
        let b = ((c * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += c;
        right[b] += usize::from(predicted.label == *gold);
    }
    let n = items.len() as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (count[b] as f64 / n) * (right[b] as f64 / count[b] as f64 - conf[b] / count[b] as f64).abs())
        .sum()
}

/// Probabilities at temperature `t` from probabilities at temperature 1: `p^(1/t)`,
/// renormalised (the same as `softmax(logits / t)`).
pub fn at_temperature(p: [f32; 3], t: f64) -> [f32; 3] {
    let w = p.map(|x| (x.max(1e-30) as f64).powf(1.0 / t));
    let total: f64 = w.iter().sum();
    w.map(|x| (x / total) as f32)
}

/// Mean negative log-likelihood of the gold labels.
pub fn nll(items: &[([f32; 3], Label)], t: f64) -> f64 {
    let sum: f64 = items.iter().map(|(p, g)| -(at_temperature(*p, t)[g.index()].max(1e-30) as f64).ln()).sum();
    sum / items.len().max(1) as f64
}

/// The temperature that minimises the NLL of `items` (probabilities at temperature 1): a grid
/// over 0.25..=4 in steps of 0.01, which is exact enough for a one-parameter fit and has no
/// convergence to get wrong. 1.0 for no items.
pub fn fit_temperature(items: &[([f32; 3], Label)]) -> f64 {
    if items.is_empty() {
        return 1.0;
    }
    (25..=400).map(|i| i as f64 / 100.0).min_by(|a, b| nll(items, *a).total_cmp(&nll(items, *b))).unwrap_or(1.0)
}

/// Spearman's rank correlation (average ranks for ties); `None` for fewer than two items or
/// a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0 + 1.0;
            for &k in &idx[i..=j] {
                r[k] = avg;
            }
            i = j + 1;
        }
        r
    }
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_of_hand_made_bins() {
        // Two items at confidence 0.9 (one right), two at 0.6 (both right):
        // |0.5 - 0.9| * 0.5 + |1.0 - 0.6| * 0.5 = 0.4.
        let items = [
            ([0.9, 0.05, 0.05], Label::Negative),
            ([0.9, 0.05, 0.05], Label::Neutral),
            ([0.2, 0.6, 0.2], Label::Neutral),
            ([0.2, 0.6, 0.2], Label::Neutral),
        ];
        assert!((ece(&items, 10) - 0.4).abs() < 1e-6, "{}", ece(&items, 10));
        assert_eq!(ece(&[], 10), 0.0);
    }

    #[test]
    fn temperature_fit_softens_overconfidence_and_sharpens_underconfidence() {
        // Always 95% sure, right 60% of the time: the fit must raise the temperature.
        let mut over = Vec::new();
        for i in 0..100 {
            let gold = if i < 60 { Label::Negative } else { Label::Positive };
            over.push(([0.95, 0.025, 0.025], gold));
        }
        let t = fit_temperature(&over);
        assert!(t > 1.5, "{t}");
        assert!(ece(&over.iter().map(|(p, g)| (at_temperature(*p, t), *g)).collect::<Vec<_>>(), 10) < ece(&over, 10));
        // Hesitant but always right: the fit lowers it.
        let under: Vec<_> = (0..50).map(|_| ([0.5, 0.3, 0.2], Label::Negative)).collect();
        assert!(fit_temperature(&under) < 1.0);
        let p = at_temperature([0.5, 0.3, 0.2], 1.0);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[2] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn spearman_ranks_with_ties() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // x ties: ranks 1.5, 1.5, 3 against 1, 2, 3 -> r = 0.866.
        assert!((spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap() - 0.8660254).abs() < 1e-6);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn macro_f1_matches_a_hand_count() {
        let mut c = Confusion::default();
        // gold neg: 2 right, 1 called neutral; gold neu: 1 right; gold pos: 1 called neg.
        for (g, p) in [
            (Label::Negative, Label::Negative),
            (Label::Negative, Label::Negative),
            (Label::Negative, Label::Neutral),
            (Label::Neutral, Label::Neutral),
            (Label::Positive, Label::Negative),
        ] {
            c.add(g, p);
        }
        // neg: tp 2, predicted 3, gold 3 -> 2/3; neu: tp 1, predicted 2, gold 1 -> 2/3; pos: 0.
        assert!((c.f1_macro() - (4.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
    }
}
