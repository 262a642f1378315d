//! Text folding for matching: case, diacritics, apostrophes and whitespace folded away
//! (Erdoğan = Erdogan, Türkiye = Turkiye, Əliyev = Aliyev), with a map from every folded byte
//! back to the original text, so that matches keep exact offsets. The lexicon folds aliases
//! with it to compare them; the matcher folds the text to search.

/// A folded copy of a text with a map back to the original.
#[derive(Debug)]
pub(crate) struct Folded {
    pub text: String,
    /// `map[i]` is the original byte offset of the char that produced folded
    /// byte `i`; `map[text.len()]` is the original length.
    pub map: Vec<usize>,
}

impl Folded {
    /// Whether `start..end` is bounded by non-word chars and does not split
    /// the expansion of one original char (e.g. "ss" from "ß").
    pub fn is_whole_word(&self, start: usize, end: usize) -> bool {
        let before = self.text.get(..start).and_then(|s| s.chars().next_back());
        let after = self.text.get(end..).and_then(|s| s.chars().next());
        let at = |i: usize| self.map.get(i).copied();
        start < end
            && !before.is_some_and(is_word_char)
            && !after.is_some_and(is_word_char)
            && (start == 0 || at(start - 1) != at(start))
            && at(end - 1) != at(end)
    }

    /// The original byte range of folded `start..end`. The end extends over
    /// trailing chars that fold to nothing (combining marks).
    pub fn original_span(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        Some((*self.map.get(start)?, *self.map.get(end)?))
    }

    /// Whether the original text of folded `start..end`, folded without
    /// lowercasing, equals one of `forms`.
    pub fn original_is_one_of(&self, original: &str, start: usize, end: usize, forms: &[String]) -> bool {
        let Some(span) = self.original_span(start, end).and_then(|(s, e)| original.get(s..e)) else {
            return false;
        };
        let cased = fold(span, false);
        forms.contains(&cased.text)
    }
}

/// Letters and digits make up words; everything else is a boundary.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2018}'
            | '\u{2019}'
            | '\u{201B}'
            | '\u{02BC}'
            | '\u{02BB}'
            | '\u{2032}'
            | '`'
            | '\u{00B4}'
            | '\u{FF07}'
    )
}

/// Folds `text` for matching (see the module docs), lowercasing if asked.
pub(crate) fn fold(text: &str, lowercase: bool) -> Folded {
    let mut out = Folded { text: String::with_capacity(text.len() + 8), map: Vec::with_capacity(text.len() + 9) };
    let mut push = |c: char, origin: usize| {
        let c = if c.is_whitespace() {
            ' '
        } else if lowercase {
            c.to_ascii_lowercase()
        } else {
            c
        };
        if c == ' ' && out.text.ends_with(' ') {
            return;
        }
        out.text.push(c);
        out.map.extend(std::iter::repeat_n(origin, c.len_utf8()));
    };
    for (i, c) in text.char_indices() {
        if is_apostrophe(c) {
            push('\'', i);
        } else if c.is_ascii() {
            push(c, i);
        } else if c.is_whitespace() {
            push(' ', i);
        } else if c == 'Ə' {
            push('A', i); // Azerbaijani schwa: Əliyev = Aliyev
        } else if c == 'ə' {
            push('a', i);
        } else {
            match deunicode::deunicode_char(c) {
                // A symbol that transliterates to letters ("€" -> "EUR",
                // emoji -> names) must not glue onto neighbouring words.
                Some(s) if !c.is_alphanumeric() && s.chars().any(|x| x.is_ascii_alphanumeric()) => push(' ', i),
                Some(s) => s.chars().for_each(|x| push(x, i)),
                None if lowercase => c.to_lowercase().for_each(|x| push(x, i)),
                None => push(c, i),
            }
        }
    }
    out.map.push(text.len());
    out
}

/// The folded, trimmed form of an alias or phrase, used as pattern and as
/// the key for duplicate detection.
pub(crate) fn fold_key(s: &str) -> String {
    fold(s, true).text.trim().to_string()
}

/// Whether `haystack[start..end]` stands as whole words: no word character right before or
/// right after it.
pub(crate) fn is_whole_word(haystack: &str, start: usize, end: usize) -> bool {
    let before = haystack[..start].chars().next_back();
    let after = haystack[end..].chars().next();
    start < end && !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_map_points_to_char_starts() {
        let text = "Çß日 Ə\u{301}x\u{a0}\u{a0}y’";
        let f = fold(text, true);
        assert_eq!(f.text, "cssri ax y'");
        assert_eq!(f.map.len(), f.text.len() + 1);
        assert!(f.map.iter().all(|&i| text.is_char_boundary(i)));
    }
}
