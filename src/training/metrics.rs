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

#[cfg(test)]
mod tests {
    use super::*;

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
