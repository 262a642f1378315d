//! The human-readable table of `stance score`.

use std::fmt::Write;

use stance::scores::{ArticleScore, Label, Polarity};

fn short(l: Label) -> &'static str {
    match l {
        Label::Negative => "neg",
        Label::Neutral => "neu",
        Label::Positive => "pos",
    }
}

fn pol(p: &Polarity) -> String {
    format!("{} {:+.2}", short(p.label), p.score)
}

fn clip(s: &str, n: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= n {
        flat
    } else {
        format!("{}…", flat.chars().take(n - 1).collect::<String>())
    }
}

/// Renders one article: sentences with their actors, then the per-actor aggregates.
pub fn render(a: &ArticleScore) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "== {}  ({} {})", a.id, a.model.name, a.model.version);
    let _ = writeln!(o, "{:>4}  {:<10}  {:<34}  text", "#", "sentiment", "actors (stance)");
    for s in &a.sentences {
        let actors =
            s.actors.iter().map(|x| format!("{} {}", x.actor, pol(&x.polarity))).collect::<Vec<_>>().join(", ");
        let _ = writeln!(o, "{:>4}  {:<10}  {:<34}  {}", s.index, pol(&s.sentiment), actors, clip(&s.text, 90));
    }
    let _ = writeln!(o);
    if a.actors.is_empty() {
        let _ = writeln!(o, "no actor mentioned");
    } else {
        let _ = writeln!(
            o,
            "{:<14} {:>8} {:>9} {:>6}  {:<8} {:>4} {:>4} {:>4}  evidence",
            "actor", "mentions", "sentences", "score", "label", "neg", "neu", "pos"
        );
        for x in &a.actors {
            let text = |i: usize| a.sentences.get(i).map(|s| clip(&s.text, 60)).unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<14} {:>8} {:>9} {:>+6.2}  {:<8} {:>4} {:>4} {:>4}  most negative #{}: {}",
                x.actor,
                x.mentions,
                x.sentences,
                x.score,
                x.label.as_str(),
                x.negative,
                x.neutral,
                x.positive,
                x.evidence.most_negative,
                text(x.evidence.most_negative)
            );
            let _ = writeln!(
                o,
                "{:>74}  most positive #{}: {}",
                "",
                x.evidence.most_positive,
                text(x.evidence.most_positive)
            );
        }
    }
    let _ = writeln!(o, "article sentiment: {} {:+.2}", a.sentiment.label.as_str(), a.sentiment.score);
    o
}
