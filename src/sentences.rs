//! News-grade sentence splitting with byte offsets.
//!
//! [`split`] cuts a scraped news article into [`Segment`]s: sentences, headings
//! (headlines, bylines, captions, section titles) and media lines (Markdown
//! images, bare URLs). Offsets are UTF-8 byte offsets into the input, so callers
//! can slice the original text (`&text[seg.start..seg.end]`) without copying.
//!
//! How the text is cut:
//!
//! 1. **Lines.** `\n`, `\r\n`, lone `\r` and the Unicode line/paragraph
//!    separators are line breaks. A line break always ends a segment, with one
//!    exception: inside a paragraph (no blank line between), a line that does
//!    not end in sentence-final punctuation (or ends in a non-final abbreviation
//!    such as `approx.`) is joined with the next line when that line starts with
//!    a lowercase letter (hard-wrapped prose).
//! 2. **Media.** A line starting with `![` / `[![` / `<img`, or consisting only
//!    of a URL, is one [`SegmentKind::Media`] segment, caption included; it is
//!    never joined with prose.
//! 3. **Sentences.** Within a block of prose, a sentence ends after a run of
//!    `.` `!` `?` `…` (plus any closing quotes/brackets, which stay with the
//!    sentence) that is followed by whitespace and then by something that can
//!    start a sentence. It does not end when the next word starts lowercase,
//!    or after a title (`Mr.`, `Dr.`, `Gen.` …), `e.g.`/`i.e.`/`vs.`, or a
//!    number prefix before a digit (`No. 5`, `Jan. 5`, `p. 12`). Dotted
//!    abbreviations (`U.S.`, `a.m.`, `Ph.D.`), initials (`W.`) and words such
//!    as `Inc.`/`Jr.`/`etc.` are ambiguous: they end a sentence only when the
//!    next word is a common sentence starter (`The`, `He`, `But`, …), so
//!    `the U.S. Army` stays whole but `moved to the U.S. The move` splits.
//!    An ellipsis attached to a word (`wait... The`) ends a sentence before a
//!    capital; a free-standing one (`said ... Paris`) only before a starter.
//!    Full-width `。！？` end sentences without needing a following space.
//! 4. **Kinds.** A block that forms one segment with no final `.`/`!`/`?`/`…`
//!    and at most [`HEADING_MAX_WORDS`] words, or a Markdown `#` heading, is a
//!    [`SegmentKind::Heading`]; everything else is a [`SegmentKind::Sentence`].
//!    A trailing parenthetical without punctuation, such as a wire credit
//!    `(AFP)`, stays with the sentence before it.
//! 5. **Attributed quotes.** A multi-sentence quotation (`“…”`, `«…»`, or
//!    balanced `"…"`) that closes mid-sentence, i.e. with `,”` or before a
//!    lowercase word (`“We lost. It is over,” he said.`), is kept in one
//!    segment with its attribution, up to [`MAX_QUOTE_SEGMENT_CHARS`].
//!
//! Whitespace is [`char::is_whitespace`] plus zero-width space, word joiner and
//! BOM; segments are trimmed of it and every other character of the input lies
//! in exactly one segment.

use std::ops::Range;

/// What a segment of the article is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// A sentence of running prose.
    Sentence,
    /// A headline, section title, byline, caption or similar unpunctuated line.
    Heading,
    /// A Markdown image line (caption included) or a line that is only a URL.
    Media,
}

/// One segment, `start..end` are UTF-8 byte offsets into the input text,
/// trimmed of surrounding whitespace; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
    pub kind: SegmentKind,
}

impl Segment {
    /// The byte range `start..end`.
    #[must_use]
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The segment's text in `source` (the string it was split from); empty if
    /// the offsets do not fit `source`.
    #[must_use]
    pub fn text<'a>(&self, source: &'a str) -> &'a str {
        source.get(self.range()).unwrap_or("")
    }
}

/// Longest unpunctuated single-segment line (in words) classed as a heading.
pub const HEADING_MAX_WORDS: usize = 20;

/// Split an article into segments in text order. Deterministic, never panics
/// on any input (including empty, whitespace-only, arbitrary Unicode, `\r\n`
/// line endings).
#[must_use]
pub fn split(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut block: Option<Block> = None;
    for raw in lines(text) {
        let Some(mut line) = trim_range(text, raw) else {
            // Blank line: paragraph break.
            flush(text, block.take(), &mut out);
            continue;
        };
        let mut s = &text[line.clone()];
        if is_markdown_heading(s) {
            flush(text, block.take(), &mut out);
            out.push(Segment { start: line.start, end: line.end, kind: SegmentKind::Heading });
            continue;
        }
        if let Some(media_len) = media_len(s) {
            flush(text, block.take(), &mut out);
            out.push(Segment { start: line.start, end: line.start + media_len, kind: SegmentKind::Media });
            // Prose after the image markup (not a caption) starts a new block.
            let Some(rest) = trim_range(text, line.start + media_len..line.end) else {
                continue;
            };
            line = rest;
            s = &text[line.clone()];
        }
        match &mut block {
            Some(b) if can_join(&text[b.last_line.clone()], s) => {
                b.end = line.end;
                b.last_line = line;
            }
            _ => {
                flush(text, block.take(), &mut out);
                block = Some(Block { start: line.start, end: line.end, last_line: line });
            }
        }
    }
    flush(text, block, &mut out);
    out
}

/// A run of prose lines that is split into sentences together.
struct Block {
    start: usize,
    end: usize,
    /// Trimmed range of the block's last line, for the join decision.
    last_line: Range<usize>,
}

/// Split one prose block into sentences and append them to `out`.
fn flush(text: &str, block: Option<Block>, out: &mut Vec<Segment>) {
    let Some(b) = block else { return };
    let Some(body) = text.get(b.start..b.end) else {
        return;
    };

    let chars: Vec<(usize, char)> = body.char_indices().collect();
    let mut ends = sentence_ends(body, &chars);
    keep_attributed_quotes_whole(body, &chars, &mut ends);

    let mut pieces: Vec<Range<usize>> = Vec::new();
    let mut prev = 0;
    for end in ends.into_iter().chain(std::iter::once(body.len())) {
        if let Some(r) = trim_range(body, prev..end) {
            match pieces.last_mut() {
                // Keep credits like "(AFP)" with the sentence they follow.
                Some(last) if is_bare_parenthetical(&body[r.clone()]) => last.end = r.end,
                _ => pieces.push(r),
            }
        }
        prev = end;
    }

    let single = pieces.len() == 1;
    for r in pieces {
        let kind =
            if single && looks_like_heading(&body[r.clone()]) { SegmentKind::Heading } else { SegmentKind::Sentence };
        out.push(Segment { start: b.start + r.start, end: b.start + r.end, kind });
    }
}

/// Byte ranges of the lines of `text`, without their line terminators.
fn lines(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if !is_line_break(c) {
            continue;
        }
        out.push(start..i);
        start = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = it.peek() {
                it.next();
                start = j + 1;
            }
        }
    }
    out.push(start..text.len());
    out
}

/// `r` with whitespace trimmed from both ends, or `None` if nothing is left.
fn trim_range(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let s = text.get(r.clone())?;
    let lead = s.len() - s.trim_start_matches(is_space).len();
    let trimmed = s.trim_matches(is_space);
    if trimmed.is_empty() {
        None
    } else {
        Some(r.start + lead..r.start + lead + trimmed.len())
    }
}

/// Byte offsets (relative to `body`) just after each sentence-final
/// punctuation run (closing quotes/brackets included) where a sentence ends.
fn sentence_ends(body: &str, chars: &[(usize, char)]) -> Vec<usize> {
    let n = chars.len();
    let mut ends = Vec::new();
    let mut i = 0;
    while i < n {
        if !is_terminal(chars[i].1) {
            i += 1;
            continue;
        }
        let run_start = i;
        let mut j = i;
        while j < n && is_terminal(chars[j].1) {
            j += 1;
        }
        let run_end = j;
        loop {
            if j < n && (is_closer(chars[j].1) || is_terminal(chars[j].1)) {
                j += 1;
                continue;
            }
            // French spacing: `Non. »` keeps the guillemet with the sentence.
            let mut k = j;
            while k < n && is_space(chars[k].1) && !is_line_break(chars[k].1) {
                k += 1;
            }
            if k > j && k < n && matches!(chars[k].1, '»' | '›') {
                j = k + 1;
                continue;
            }
            break;
        }
        if j >= n {
            break; // The block's end ends the sentence anyway.
        }
        let fullwidth = chars[run_start..run_end].iter().any(|&(_, c)| matches!(c, '。' | '！' | '？'));
        if (fullwidth || is_space(chars[j].1)) && is_boundary(body, chars, run_start, run_end, j) {
            ends.push(chars[j].0);
        }
        i = j;
    }
    ends
}

/// Drop the sentence ends inside a quotation that closes mid-sentence with an
/// attribution (`“We lost. It is over,” he said.`), so the quote stays with its
/// speaker, unless that would make the segment longer than
/// [`MAX_QUOTE_SEGMENT_CHARS`]. `ends` is sorted and stays sorted.
fn keep_attributed_quotes_whole(body: &str, chars: &[(usize, char)], ends: &mut Vec<usize>) {
    if ends.is_empty() {
        return;
    }
    // Straight quotes open and close alike; pair them only when balanced.
    let straight_ok = chars.iter().filter(|c| c.1 == '"').count() % 2 == 0;
    let mut open: Option<(usize, char)> = None;
    for (i, &(_, c)) in chars.iter().enumerate() {
        let Some((o, closer)) = open else {
            open = match c {
                '“' => Some((i, '”')),
                '«' => Some((i, '»')),
                '"' if straight_ok => Some((i, '"')),
                _ => None,
            };
            continue;
        };
        if c != closer {
            continue;
        }
        open = None;
        let before = chars[..i].iter().rev().map(|c| c.1).find(|&c| !is_space(c));
        let after = chars[i + 1..].iter().map(|c| c.1).find(|&c| !is_space(c));
        if before != Some(',') && !after.is_some_and(char::is_lowercase) {
            continue;
        }
        let (open_at, close_at) = (chars[o].0, chars[i].0);
        let (lo, hi) = (ends.partition_point(|&e| e <= open_at), ends.partition_point(|&e| e <= close_at));
        if lo == hi {
            continue; // Nothing to keep together.
        }
        let from = lo.checked_sub(1).map_or(0, |k| ends[k]);
        let to = ends.get(hi).copied().unwrap_or(body.len());
        if body.get(from..to).is_some_and(|s| s.chars().count() <= MAX_QUOTE_SEGMENT_CHARS) {
            ends.drain(lo..hi);
        }
    }
}

/// Longest segment that [`keep_attributed_quotes_whole`] may produce.
pub const MAX_QUOTE_SEGMENT_CHARS: usize = 600;

/// Whether the punctuation run `chars[run_start..run_end]`, whose closing
/// quotes end before `chars[after]`, ends a sentence.
fn is_boundary(body: &str, chars: &[(usize, char)], run_start: usize, run_end: usize, after: usize) -> bool {
    let n = chars.len();
    let mut k = after;
    while k < n && is_space(chars[k].1) {
        k += 1;
    }
    while k < n && is_opener(chars[k].1) {
        k += 1;
    }
    let Some(&(_, next)) = chars.get(k) else {
        return true;
    };
    if next.is_lowercase() || is_continuation(next) {
        return false;
    }
    let starter = next_is_starter(chars, k);

    let run = &chars[run_start..run_end];
    if run.iter().any(|&(_, c)| !matches!(c, '.' | '…')) {
        return true; // `?`, `!` and friends.
    }
    let space_before = run_start == 0 || is_space(chars[run_start - 1].1);
    if run.len() > 1 || run[0].1 == '…' {
        // Ellipsis: "wait... The" splits, "he said ... Paris" does not.
        return !space_before || starter;
    }

    let (token, at_block_start) = token_before(body, chars, run_start);
    match classify(token) {
        Abbrev::None => true,
        Abbrev::Title => false,
        Abbrev::NumberPrefix => !next.is_numeric(),
        Abbrev::DatePrefix | Abbrev::Ambiguous => !next.is_numeric() && (!next.is_uppercase() || starter),
        Abbrev::Numeral => !at_block_start, // "1. First item" is a list marker.
    }
}

/// The word before the period at `chars[run_start]`, without leading opening
/// punctuation and hyphenated prefixes; and whether it starts the block.
fn token_before<'a>(body: &'a str, chars: &[(usize, char)], run_start: usize) -> (&'a str, bool) {
    let mut s = run_start;
    while s > 0 && !is_space(chars[s - 1].1) {
        s -= 1;
    }
    let (from, to) = (chars.get(s).map_or(0, |c| c.0), chars.get(run_start).map_or(body.len(), |c| c.0));
    let token = body.get(from..to).unwrap_or("");
    let token = token.trim_start_matches(is_opener);
    let token = token.rsplit(['-', '–', '—']).next().unwrap_or(token);
    (token, s == 0)
}

/// Whether the word starting at `chars[k]` is a common sentence starter (and
/// not a single-letter initial such as the `A` of `A. Smith`).
fn next_is_starter(chars: &[(usize, char)], k: usize) -> bool {
    let mut e = k;
    while e < chars.len() && chars[e].1.is_alphabetic() {
        e += 1;
    }
    if e == k || e - k > 12 || (e - k == 1 && chars.get(e).is_some_and(|c| c.1 == '.')) {
        return false;
    }
    let word: String = chars[k..e].iter().map(|c| c.1).collect();
    STARTERS.iter().any(|s| matches_word(&word, s))
}

/// How a word followed by a period behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abbrev {
    /// An ordinary word: the period ends the sentence.
    None,
    /// Always followed by more of the sentence (`Mr.`, `e.g.`, `vs.`).
    Title,
    /// Does not end a sentence before a number (`No. 5`, `p. 12`).
    NumberPrefix,
    /// A month: no split before a number, else like [`Abbrev::Ambiguous`].
    DatePrefix,
    /// May end a sentence; split only before a common sentence starter.
    Ambiguous,
    /// A short number; a list marker when it starts the block.
    Numeral,
}

const TITLES: &[&str] = &[
    "Mr", "Mrs", "Ms", "Mx", "Messrs", "Mmes", "Mme", "Mlle", "Dr", "Drs", "Prof", "Profs", "Gen", "Lt", "Col", "Maj",
    "Capt", "Cpt", "Cmdr", "Cdr", "Adm", "Brig", "Sgt", "Cpl", "Pvt", "Pfc", "Gov", "Sen", "Sens", "Rep", "Reps",
    "Pres", "Supt", "Det", "Insp", "Rev", "Hon", "Amb", "Fr", "Msgr", "St", "Ste", "Mt", "Ft", "vs", "v", "e.g", "i.e",
    "cf", "viz",
];
const NUMBER_PREFIXES: &[&str] =
    &["No", "Nos", "Nr", "Vol", "Vols", "Fig", "Figs", "p", "pp", "Art", "Sec", "Ch", "Pt", "Op", "Tel", "Ed", "Para"];
const DATE_PREFIXES: &[&str] =
    &["Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "approx", "ca", "est"];
const AMBIGUOUS: &[&str] = &[
    "Inc", "Ltd", "Co", "Corp", "Cos", "Bros", "Jr", "Sr", "Esq", "etc", "al", "Ave", "Blvd", "Rd", "Dept", "Univ",
    "Assn", "Intl", "Mfg", "Ph.D",
];
/// Capitalised words that commonly open a sentence; used to resolve `U.S. The`.
const STARTERS: &[&str] = &[
    "The",
    "A",
    "An",
    "He",
    "She",
    "It",
    "They",
    "We",
    "I",
    "You",
    "This",
    "That",
    "These",
    "Those",
    "There",
    "Here",
    "His",
    "Her",
    "Its",
    "Their",
    "Our",
    "My",
    "Your",
    "But",
    "And",
    "Or",
    "So",
    "Yet",
    "Still",
    "However",
    "Meanwhile",
    "Moreover",
    "Furthermore",
    "Nevertheless",
    "Then",
    "Now",
    "Today",
    "Yesterday",
    "In",
    "On",
    "At",
    "For",
    "With",
    "By",
    "From",
    "After",
    "Before",
    "During",
    "When",
    "While",
    "If",
    "As",
    "Although",
    "Though",
    "Because",
    "Since",
    "Once",
    "Some",
    "Many",
    "Most",
    "Several",
    "All",
    "Both",
    "Each",
    "No",
    "Not",
    "One",
    "What",
    "Why",
    "How",
    "Who",
    "Where",
    "Which",
    "Such",
    "Also",
    "Only",
    "Even",
    "Thus",
    "Instead",
    "Others",
    "Earlier",
    "Later",
    "Officials",
];

/// Whether `word` is `pattern` as written or in all capitals (`MR` for `Mr`).
fn matches_word(word: &str, pattern: &str) -> bool {
    word == pattern
        || (word.len() == pattern.len() && word.bytes().zip(pattern.bytes()).all(|(w, p)| w == p.to_ascii_uppercase()))
}

fn classify(token: &str) -> Abbrev {
    let in_list = |list: &[&str]| list.iter().any(|a| matches_word(token, a));
    if token.is_empty() {
        Abbrev::None
    } else if in_list(TITLES) {
        Abbrev::Title
    } else if in_list(NUMBER_PREFIXES) {
        Abbrev::NumberPrefix
    } else if in_list(DATE_PREFIXES) {
        Abbrev::DatePrefix
    } else if in_list(AMBIGUOUS) || is_dotted_abbreviation(token) || is_initial(token) {
        Abbrev::Ambiguous
    } else if token.len() <= 3 && token.bytes().all(|b| b.is_ascii_digit()) {
        Abbrev::Numeral
    } else {
        Abbrev::None
    }
}

/// `U.S`, `a.m`, `U.S.A`, `Ph.D`: letter groups of one or two letters between dots.
fn is_dotted_abbreviation(token: &str) -> bool {
    token.contains('.')
        && token.split('.').all(|p| (1..=2).contains(&p.chars().count()) && p.chars().all(char::is_alphabetic))
}

/// A single capital letter, as in `George W. Bush`.
fn is_initial(token: &str) -> bool {
    let mut cs = token.chars();
    matches!((cs.next(), cs.next()), (Some(c), None) if c.is_uppercase())
}

/// Whether a prose line that is followed by `next` on the following line
/// continues into it (hard-wrapped prose).
fn can_join(prev: &str, next: &str) -> bool {
    if !next.chars().next().is_some_and(char::is_lowercase) {
        return false;
    }
    let core = prev.trim_end_matches(is_closer);
    let Some(last) = core.chars().next_back() else {
        return true;
    };
    match last {
        '.' if !core.ends_with("..") => {
            let body = &core[..core.len() - 1];
            let token = body.rsplit(is_space).next().unwrap_or(body).trim_start_matches(is_opener);
            let token = token.rsplit(['-', '–', '—']).next().unwrap_or(token);
            !matches!(classify(token), Abbrev::None | Abbrev::Numeral)
        }
        '.' | '…' => true,
        c => !is_terminal(c),
    }
}

/// Byte length of the media segment at the start of the trimmed line `s`:
/// the whole line for a lone URL or an image with a short caption, only the
/// image markup when longer prose follows it; `None` for other lines.
fn media_len(s: &str) -> Option<usize> {
    let t = s.strip_prefix('<').and_then(|t| t.strip_suffix('>')).unwrap_or(s);
    if !t.contains(is_space) && ["http://", "https://", "ftp://", "www."].iter().any(|p| starts_with_ignore_case(t, p))
    {
        return Some(s.len());
    }
    let short = |x: &str| word_count(x) <= HEADING_MAX_WORDS;
    match media_markup_len(s) {
        Some(m) if short(&s[m..]) => Some(s.len()),
        Some(m) => Some(m),
        // Malformed image markup: a short line is still media.
        None if (s.starts_with("![") || s.starts_with("[![") || starts_with_ignore_case(s, "<img")) && short(s) => {
            Some(s.len())
        }
        None => None,
    }
}

/// Byte length of the image markup at the start of `s`: one or more
/// `![alt](src)`, `[![alt](src)](link)` or `<img …>`, separated by spaces.
fn media_markup_len(s: &str) -> Option<usize> {
    let mut end = 0;
    loop {
        let rest = &s[end..];
        let skip = rest.len() - rest.trim_start_matches(is_space).len();
        let Some(len) = image_len(&rest[skip..]) else {
            break;
        };
        end += skip + len;
    }
    (end > 0).then_some(end)
}

/// Byte length of one image element at the start of `s`.
fn image_len(s: &str) -> Option<usize> {
    if starts_with_ignore_case(s, "<img") {
        return s.find('>').map(|i| i + 1);
    }
    if s.starts_with("[![") {
        let img = image_len(&s[1..])?;
        let link = s[1 + img..].strip_prefix("](")?;
        return Some(1 + img + 2 + closing_index(link, '(', ')')? + 1);
    }
    let alt = s.strip_prefix("![")?;
    let a = closing_index(alt, '[', ']')?;
    let src = alt[a + 1..].strip_prefix('(')?;
    Some(2 + a + 2 + closing_index(src, '(', ')')? + 1)
}

/// Index in `s` of the `close` that balances an `open` just before `s`.
fn closing_index(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

fn word_count(s: &str) -> usize {
    s.split(is_space).filter(|w| !w.is_empty()).count()
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// `# Title` … `###### Title`.
fn is_markdown_heading(s: &str) -> bool {
    let rest = s.trim_start_matches('#');
    let hashes = s.len() - rest.len();
    (1..=6).contains(&hashes) && rest.starts_with([' ', '\t'])
}

/// An unpunctuated, short segment: headline, byline, caption, label.
fn looks_like_heading(s: &str) -> bool {
    // "…the region. (AFP)" is punctuated prose with a credit.
    let core = match s.rfind('(') {
        Some(i) if i > 0 && is_bare_parenthetical(&s[i..]) => s[..i].trim_end_matches(is_space),
        _ => s,
    };
    let ends_punctuated = core.trim_end_matches(is_closer).chars().next_back().is_some_and(is_terminal);
    !ends_punctuated && word_count(s) <= HEADING_MAX_WORDS
}

/// `(AFP)`, `(AFP/Z-3)`: a short parenthetical without sentence punctuation.
fn is_bare_parenthetical(s: &str) -> bool {
    s.starts_with('(') && s.ends_with(')') && !s.contains(is_terminal) && word_count(s) <= 6
}

/// Whitespace for trimming: Unicode `White_Space` plus zero-width characters.
#[must_use]
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Sentence-final punctuation.
fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '‽' | '‼' | '⁇' | '⁈' | '⁉' | '。' | '！' | '？' | '؟' | '।' | '॥')
}

/// Closing quotes and brackets that stay with the sentence they end.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '»' | '›' | ')' | ']' | '}' | '*' | '_' | '」' | '』' | '）')
}

/// Opening quotes and brackets skipped when looking at the next word.
fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '“'
            | '‘'
            | '„'
            | '‚'
            | '«'
            | '‹'
            | '('
            | '['
            | '{'
            | '¿'
            | '¡'
            | '*'
            | '_'
            | '「'
            | '『'
            | '（'
    )
}

/// Characters that continue a sentence when they follow a period and a space.
fn is_continuation(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | ')' | ']' | '}' | '-' | '–' | '—' | '.' | '…' | '/' | '%' | '&')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// (input, expected segment texts) covering the splitting rules.
    pub(crate) const CASES: &[(&str, &[&str])] = &[
        // Titles and abbreviations.
        (
            "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
            &["Mr. Smith went to Washington.", "He arrived at 5 p.m. on Monday."],
        ),
        (
            "Dr. Jane Doe and Prof. John Roe met Gen. Milley. They talked.",
            &["Dr. Jane Doe and Prof. John Roe met Gen. Milley.", "They talked."],
        ),
        (
            "Sgt. Pepper met Lt. Col. Smith at St. Mary's. Capt. Jones arrived.",
            &["Sgt. Pepper met Lt. Col. Smith at St. Mary's.", "Capt. Jones arrived."],
        ),
        (
            "Mrs. Clinton met Ms. Ardern and Rep. Pelosi. Sen. Schumer came too.",
            &["Mrs. Clinton met Ms. Ardern and Rep. Pelosi.", "Sen. Schumer came too."],
        ),
        ("The vote was 5 vs. 3. It passed.", &["The vote was 5 vs. 3.", "It passed."]),
        (
            "Some leaders, e.g. Putin and Erdogan, disagreed. Others, i.e. Macron, agreed.",
            &["Some leaders, e.g. Putin and Erdogan, disagreed.", "Others, i.e. Macron, agreed."],
        ),
        ("Sales rose approx. five percent. Costs fell.", &["Sales rose approx. five percent.", "Costs fell."]),
        ("It happened on Jan. 5, 2020. Nobody noticed.", &["It happened on Jan. 5, 2020.", "Nobody noticed."]),
        (
            "The U.N. Security Council met on Sept. 11. It voted.",
            &["The U.N. Security Council met on Sept. 11.", "It voted."],
        ),
        ("It was No. 1 in the U.K. The rest followed.", &["It was No. 1 in the U.K.", "The rest followed."]),
        (
            "Apple Inc. The company said so. Apple Inc. CEO Tim Cook agreed.",
            &["Apple Inc.", "The company said so.", "Apple Inc. CEO Tim Cook agreed."],
        ),
        (
            "Shares of Acme Corp. rose 5%. Acme Corp. Chief Executive Jane Roe said so.",
            &["Shares of Acme Corp. rose 5%.", "Acme Corp. Chief Executive Jane Roe said so."],
        ),
        (
            "The firm hired John Smith Jr. He starts Monday.",
            &["The firm hired John Smith Jr.", "He starts Monday."],
        ),
        ("They bought apples, pears, etc. But nobody ate.", &["They bought apples, pears, etc.", "But nobody ate."]),
        // U.S. at a sentence end: split only before a common sentence starter.
        (
            "Officials in the U.S. said nothing. The U.S. Army declined.",
            &["Officials in the U.S. said nothing.", "The U.S. Army declined."],
        ),
        ("He moved to the U.S. The move was hard.", &["He moved to the U.S.", "The move was hard."]),
        ("He left at 5 p.m. The office closed.", &["He left at 5 p.m.", "The office closed."]),
        ("It starts at 8 a.m. Sunday in Baku.", &["It starts at 8 a.m. Sunday in Baku."]),
        // Initials.
        (
            "J. R. R. Tolkien wrote books. George W. Bush was president.",
            &["J. R. R. Tolkien wrote books.", "George W. Bush was president."],
        ),
        ("It was World War I. The war ended in 1918.", &["It was World War I.", "The war ended in 1918."]),
        // Numbers, URLs, emails.
        (
            "The rate rose 3.5 percent to $1,000.50 per share. Analysts were surprised.",
            &["The rate rose 3.5 percent to $1,000.50 per share.", "Analysts were surprised."],
        ),
        (
            "Visit www.example.com/a.b for details. Or email john.doe@example.com today.",
            &["Visit www.example.com/a.b for details.", "Or email john.doe@example.com today."],
        ),
        (
            "See https://example.com/path?x=1&y=2.html now. It works.",
            &["See https://example.com/path?x=1&y=2.html now.", "It works."],
        ),
        (
            "Erdogan has accused Armenia. 1000 militia were transferred.",
            &["Erdogan has accused Armenia.", "1000 militia were transferred."],
        ),
        ("1. The first point is here.", &["1. The first point is here."]),
        // Ellipses.
        ("He said ... and then he left. Nobody followed.", &["He said ... and then he left.", "Nobody followed."]),
        ("I wonder... The answer never came.", &["I wonder...", "The answer never came."]),
        ("The wait was long…and painful… But it ended.", &["The wait was long…and painful…", "But it ended."]),
        // Quotes and brackets.
        ("\"Stop,\" he said. \"Now.\"", &["\"Stop,\" he said.", "\"Now.\""]),
        ("“We will win.” Then he left.", &["“We will win.”", "Then he left."]),
        ("Is it over? “No!” she shouted. He agreed!", &["Is it over?", "“No!” she shouted.", "He agreed!"]),
        ("He asked, ‘Why?’ Nobody answered.", &["He asked, ‘Why?’", "Nobody answered."]),
        ("\"Stop!\" he said.", &["\"Stop!\" he said."]),
        (
            "The troops left (as planned.) The town was quiet.",
            &["The troops left (as planned.)", "The town was quiet."],
        ),
        (
            "Erdogan called it \"the biggest threat to peace\". His view is shared.",
            &["Erdogan called it \"the biggest threat to peace\".", "His view is shared."],
        ),
        (
            "“Russia is out, the West is in,” said Azerbaijani political expert Eldar Namazov.",
            &["“Russia is out, the West is in,” said Azerbaijani political expert Eldar Namazov."],
        ),
        ("Il a dit « Non. » Puis il est parti.", &["Il a dit « Non. »", "Puis il est parti."]),
        ("He told AFP. (AFP/Z-3)", &["He told AFP. (AFP/Z-3)"]),
        // Multi-sentence quotes stay with their attribution; unattributed ones split.
        (
            "“We can no longer depend on Russia. It’s impossible,” he told AFP. Then he left.",
            &["“We can no longer depend on Russia. It’s impossible,” he told AFP.", "Then he left."],
        ),
        ("He said \"Go. Now,\" and left.", &["He said \"Go. Now,\" and left."]),
        ("“It is over. We lost.” Then he left.", &["“It is over.", "We lost.”", "Then he left."]),
        // ? and !.
        ("What now?! Nobody knows.", &["What now?!", "Nobody knows."]),
        (
            "Does this mean victory for Moscow? asks Professor Mark Galeotti.",
            &["Does this mean victory for Moscow? asks Professor Mark Galeotti."],
        ),
        // Lowercase after terminal punctuation, stray spaces.
        ("The army left Syria. he also sent men.", &["The army left Syria. he also sent men."]),
        ("It ended with the forces . But what next?", &["It ended with the forces .", "But what next?"]),
        // Unicode spaces, dashes, apostrophes, CJK.
        ("The price\u{a0}rose. Then\u{a0}it fell.", &["The price\u{a0}rose.", "Then\u{a0}it fell."]),
        ("Russia — as usual — waited. Then it acted.", &["Russia — as usual — waited.", "Then it acted."]),
        ("I’m here. You’re there.", &["I’m here.", "You’re there."]),
        ("他来了。她走了。", &["他来了。", "她走了。"]),
        // Lines and paragraphs.
        (
            "Headline Without Punctuation\nThe body starts here. It ends here.",
            &["Headline Without Punctuation", "The body starts here.", "It ends here."],
        ),
        (
            "By: - November 19, 2020\n\nImage by DonkeyHotey\n\nText follows.",
            &["By: - November 19, 2020", "Image by DonkeyHotey", "Text follows."],
        ),
        (
            "This line wraps\nin the middle of a sentence. Next one.",
            &["This line wraps\nin the middle of a sentence.", "Next one."],
        ),
        ("Prices rose approx.\nfive percent.", &["Prices rose approx.\nfive percent."]),
        (
            "Line one ends with a period.\nline two starts lowercase.",
            &["Line one ends with a period.", "line two starts lowercase."],
        ),
        (
            "First paragraph ends here.\n\nSecond paragraph.",
            &["First paragraph ends here.", "Second paragraph."],
        ),
        ("He waited.\r\nShe came.\r\n\r\nThey left.", &["He waited.", "She came.", "They left."]),
        // Media.
        (
            "![alt text](https://example.com/img.png) Caption here.\nThe story begins. It continues.",
            &["![alt text](https://example.com/img.png) Caption here.", "The story begins.", "It continues."],
        ),
        (
            "https://example.com/some/article.html\nthe story begins.",
            &["https://example.com/some/article.html", "the story begins."],
        ),
        ("![a](a.png)\n![b](b.png)\nText.", &["![a](a.png)", "![b](b.png)", "Text."]),
        (
            "[![Putin (2020)](https://x.y/a.png)](https://x.y/p) ![b](c.png) Photo: Reuters",
            &["[![Putin (2020)](https://x.y/a.png)](https://x.y/p) ![b](c.png) Photo: Reuters"],
        ),
        (
            "![a](a.png) The story begins here and it goes on for quite a while, with many more words in it than any caption would have. It continues.",
            &["![a](a.png)", "The story begins here and it goes on for quite a while, with many more words in it than any caption would have.", "It continues."],
        ),
        // Degenerate input.
        ("", &[]),
        (" \n\t\r\n\u{a0}\u{200B} ", &[]),
    ];

    fn texts(input: &str) -> Vec<&str> {
        split(input).iter().map(|s| s.text(input)).collect()
    }

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for (input, expected) in CASES {
            let got = texts(input);
            if got != *expected {
                failures.push(format!("input:    {input:?}\nexpected: {expected:?}\ngot:      {got:?}"));
            }
        }
        assert!(CASES.len() >= 30);
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n\n"));
    }

    #[test]
    fn kinds() {
        use SegmentKind::*;
        let input = "The Winner In Nagorno-Karabakh Is Russia\n\nBy: - November 19, 2020\n\n\
                     It is obvious. Many will not return.\n\n![x](https://e.com/a.png) A caption\n\
                     https://example.com/story\n\n# Why it matters.\nSource link\n\
                     Your email address will not be published. Required fields are marked *";
        let got: Vec<(&str, SegmentKind)> = split(input).iter().map(|s| (s.text(input), s.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("The Winner In Nagorno-Karabakh Is Russia", Heading),
                ("By: - November 19, 2020", Heading),
                ("It is obvious.", Sentence),
                ("Many will not return.", Sentence),
                ("![x](https://e.com/a.png) A caption", Media),
                ("https://example.com/story", Media),
                ("# Why it matters.", Heading),
                ("Source link", Heading),
                ("Your email address will not be published.", Sentence),
                ("Required fields are marked *", Sentence),
            ]
        );
        let long = "word ".repeat(HEADING_MAX_WORDS + 1);
        assert_eq!(split(&long)[0].kind, Sentence);
    }

    /// Checks the offset invariants of `split(input)`.
    fn check_invariants(input: &str) {
        let segs = split(input);
        assert_eq!(segs, split(input), "not deterministic: {input:?}");
        let mut covered_to = 0;
        for s in &segs {
            assert!(s.start < s.end && s.end <= input.len(), "bad range {s:?} in {input:?}");
            assert!(input.is_char_boundary(s.start) && input.is_char_boundary(s.end), "{s:?} in {input:?}");
            assert!(s.start >= covered_to, "overlap/out of order {segs:?} in {input:?}");
            let text = &input[s.range()];
            assert!(!text.starts_with(is_space) && !text.ends_with(is_space), "untrimmed {text:?} in {input:?}");
            assert!(input[covered_to..s.start].chars().all(is_space), "lost text before {s:?} in {input:?}");
            covered_to = s.end;
        }
        assert!(input[covered_to..].chars().all(is_space), "lost text at end of {input:?} ({segs:?})");
    }

    /// Checks the invariants on `buf` extended by every string of up to `depth` chars.
    fn check_all_strings(buf: &mut String, alphabet: &[char], depth: usize) {
        check_invariants(buf);
        if depth == 0 {
            return;
        }
        for &c in alphabet {
            buf.push(c);
            check_all_strings(buf, alphabet, depth - 1);
            buf.pop();
        }
    }

    #[test]
    fn invariants_on_generated_text() {
        const PIECES: &[&str] = &[
            "word",
            "The",
            "he",
            "Mr.",
            "U.S.",
            "e.g.",
            "J.",
            "3.5",
            "1,000.50",
            ".",
            "...",
            "…",
            "?",
            "!",
            "?!",
            "\"",
            "“",
            "”",
            "‘",
            "’",
            "'",
            "«",
            "»",
            "(",
            ")",
            "[",
            "]",
            " ",
            " ",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\r\n",
            "\r",
            "\t",
            "\u{a0}",
            "\u{200B}",
            "\u{FEFF}",
            "\u{2028}",
            "—",
            "–",
            "-",
            "é",
            "Über",
            "中文",
            "。",
            "？",
            "🙂",
            "👩‍👩‍👧",
            "a\u{301}",
            "![img](https://x.y/a.png)",
            "https://example.com/a.b?c=d",
            "www.x.org",
            "#",
            "# ",
            "![é]",
            "(ü)",
            "[![",
            "](",
            "<img é>",
            "![",
            "No.",
            "5",
            "p.m.",
            "Inc.",
            "(AFP)",
            "Ελλάδα",
            "Россия.",
            "١٢٣",
            ",",
            ":",
            ";",
            "*",
            "_",
        ];
        // xorshift64: deterministic pseudo-random indices.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap_or(0)
        };
        for _ in 0..600 {
            let len = next(40);
            let input: String = (0..len).map(|_| PIECES[next(PIECES.len())]).collect();
            check_invariants(&input);
        }
        // Every string of up to four characters over a tricky alphabet.
        let alphabet = ['a', 'A', '.', ' ', '\n', '\r', '"', '?', 'é', '…', '(', ')'];
        check_all_strings(&mut String::new(), &alphabet, 4);
    }

    /// Known segments from the five sample articles that must come out whole.
    pub(crate) const ARTICLE_SEGMENTS: &[&str] = &[
        "By: - November 19, 2020",
        "Image by DonkeyHotey",
        "Azeri President Ilham Aliyev\u{a0}is declaring to the world that he will transform NK into a ‘paradise’.",
        "“On November 18, 2020, 936 more refugees returned to Nagorno-Karabakh from Armenia, as 23 buses travelled \
         from Yerevan to Stepanakert’s main square escorted by patrols of the Russian peacekeeping contingent and \
         military police,” declared the Russian Defense Ministry.",
        "“This is why I don’t get these hints [at changes in Moscow’s attitude to Yerevan],” he added, wrote TASS.",
        "Does the Russian-mediated ceasefire between Azerbaijan and Armenia mean victory for Moscow? asks Professor \
         Mark Galeotti, an expert on the former Soviet Union.",
        "But what has all this brought to Moscow, which for centuries has viewed this Caucasus region as an area of \
         interest?",
        "475 people and 250 people in nine buses returned to the Armenian-majority area in Azerbaijan on Saturday.",
        "![[personal profile]](https://www.dreamwidth.org/img/silk/identity/user.png)",
        "1000 militia loyal to Turkey were transferred from North-West Syria to the front-line in Nagorno-Karabakh.",
        "Meanwhile, Erdogan has accused Armenia of having triggered the war, and being \"the biggest threat to peace \
         in the region\".",
        "Therefore, \"all the talk about some kind of betrayal of Armenian interests by them is absolutely \
         groundless,\" Vladimir Putin said.",
        "This was reported by Gazeta.ru.",
        "We don't hand over Pashinyan?",
        "“We are witnessing a historic process — Russia is the first to leave (the region) in the last two \
         centuries,” independent Azerbaijani analyst Elhan Shahinoglu told AFP.",
        "Illustration – Russia, following four years of deployment in Nagorno-Karabakh, has quietly withdrawn its \
         troops from the region. (AFP)",
        "“We can no longer depend on Russia. It’s impossible. We have to expel Russia — not only from Karabakh — \
         but also from Armenia,” he told AFP. (AFP/Z-3)",
        "“Russia has once once more betrayed the Armenian people and sold us out. That’s all,” said Valery \
         Harutyunyan, who lived in Karabakh before fleeing to Armenia in September.",
        "#Russia #Quietly #Withdraws #Karabakh #Relinquishing #Influence #Permanently",
    ];

    /// Where the sample articles live: `$SENTENCES_ARTICLES_DIR` if set, else
    /// `../shared/articles` next to the crate.
    pub(crate) fn articles_dir() -> std::path::PathBuf {
        std::env::var_os("SENTENCES_ARTICLES_DIR")
            .map_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/articles").into(), Into::into)
    }

    #[test]
    #[ignore = "needs ../shared"]
    fn real_articles() {
        let dir = articles_dir();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; this test needs ../shared/articles beside the repository (or SENTENCES_ARTICLES_DIR)",
                dir.display()
            )
        });
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no .txt articles in {}", dir.display());
        let mut found = vec![false; ARTICLE_SEGMENTS.len()];
        for path in &paths {
            let text = std::fs::read_to_string(path).expect("article is UTF-8");
            check_invariants(&text);
            for s in split(&text) {
                let seg = s.text(&text);
                assert!(seg.chars().count() <= 600, "{}: overlong segment {seg:?}", path.display());
                // A segment may start lowercase only where a source line does.
                let before = text[..s.start].trim_end_matches(|c: char| is_space(c) && !is_line_break(c));
                let line_start = before.is_empty() || before.ends_with(is_line_break);
                if seg.starts_with(char::is_lowercase) {
                    assert!(line_start, "{}: lowercase segment start {seg:?}", path.display());
                }
                if s.kind == SegmentKind::Media {
                    assert!(seg.starts_with("![") || seg.starts_with("http"), "odd media {seg:?}");
                }
                for (i, known) in ARTICLE_SEGMENTS.iter().enumerate() {
                    found[i] |= seg == *known;
                }
            }
        }
        let missing: Vec<_> = ARTICLE_SEGMENTS.iter().zip(&found).filter(|(_, f)| !**f).map(|(s, _)| s).collect();
        assert!(missing.is_empty(), "known segments not produced whole: {missing:#?}");
    }
}
