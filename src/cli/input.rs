//! Reading articles from files, directories and stdin for the CLI faces: one reader, one JSONL
//! schema and one set of messages for `stance score` and `stance batch`.
//!
//! A JSONL record is `{"id", "text", "mentions"?, "actors"?, "sentences"?, "meta"?}`; `id` is required,
//! a non-empty string (it names the article in the output, and `stance batch` resumes by it).
//! Every problem with a line is reported as `NAME:LINE: what`, and a bad line never hides the
//! good ones around it.

use std::io::Read;
use std::path::Path;

use serde_json::Value;
use stance::input::{validate_meta, ArticleInput, ArticleRecord, Meta};

/// How input files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `.jsonl` files as JSONL, everything else as plain text.
    Auto,
    /// One article per file.
    Text,
    /// One JSON object per line: `{"id", "text", "mentions"?, "actors"?, "sentences"?, "meta"?}`.
    Jsonl,
}

impl InputFormat {
    /// Whether `source` is read as JSONL.
    pub fn is_jsonl(self, source: &str) -> bool {
        match self {
            InputFormat::Jsonl => true,
            InputFormat::Text => false,
            InputFormat::Auto => Path::new(source).extension().is_some_and(|e| e == "jsonl"),
        }
    }
}

/// One input record: its key (the article's id, or `NAME:LINE` when the record has no usable
/// id) and the article, or why it cannot be scored, and its metadata (echoed in the result).
#[derive(Debug)]
pub struct Record {
    pub key: String,
    pub article: Result<ArticleInput, String>,
    pub meta: Meta,
}

impl Record {
    pub fn failed(key: String, why: String) -> Self {
        Record { key, article: Err(why), meta: Meta::new() }
    }
}

/// The name messages use for `source`: `stdin` for `-`, else the file name.
pub fn source_name(source: &str) -> String {
    if source == "-" {
        return "stdin".to_string();
    }
    Path::new(source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| source.to_string())
}

/// The whole of `source` (a path, or `-` for stdin) as UTF-8 text, or why it cannot be read.
pub fn read_text(source: &str) -> Result<String, String> {
    let name = source_name(source);
    let bytes = if source == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("stdin: cannot read: {e}"))?;
        buf
    } else {
        std::fs::read(source).map_err(|e| format!("{source}: cannot read: {e}"))?
    };
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("{name}: not valid UTF-8 (first bad byte at offset {at}); convert the file to UTF-8")
    })
}

/// Parses one JSONL line (line number `n` of `name`).
pub fn parse_line(name: &str, n: usize, line: &str) -> Record {
    let fallback = format!("{name}:{n}");
    let fail = |key: String, what: String| Record::failed(key, format!("{name}:{n}: {what}"));
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return fail(fallback, format!("invalid JSON: {e}")),
    };
    let id = match v.get("id") {
        _ if !v.is_object() => {
            Err("not a JSON object; each line is one record `{\"id\": ..., \"text\": ...}`".to_string())
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err("bad id: the id is empty; ids are non-empty strings".to_string()),
        Some(other) => Err(format!("bad id {other}: ids are non-empty strings")),
        None => Err("missing id: every record needs a non-empty string \"id\"".to_string()),
    };
    match id {
        Err(e) => fail(fallback, e),
        Ok(id) => match serde_json::from_value::<ArticleRecord>(v) {
            Ok(ArticleRecord { mut article, meta }) => {
                if let Err(e) = validate_meta(&meta) {
                    return fail(id, e.to_string());
                }
                article.id = id.clone();
                Record { key: id, article: Ok(article), meta }
            }
            Err(e) => fail(id, format!("invalid record: {e}")),
        },
    }
}

/// Parses JSONL text, one record per non-blank line.
pub fn parse_jsonl(name: &str, text: &str) -> Vec<Record> {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| parse_line(name, i + 1, l)).collect()
}

/// A plain-text article: its id is the file name.
pub fn text_article(source: &str, text: String) -> Record {
    let id = source_name(source);
    if text.trim().is_empty() {
        return Record::failed(id.clone(), format!("{id}: the input is empty; give a file with the article's text"));
    }
    Record { key: id.clone(), article: Ok(ArticleInput { id, text, ..Default::default() }), meta: Meta::new() }
}

/// Reads `source` (a path, or `-` for stdin) as `format` for `stance score`: a source that
/// cannot be read, or holds nothing, is one error record.
pub fn read_source(source: &str, format: InputFormat) -> Vec<Record> {
    let name = source_name(source);
    let text = match read_text(source) {
        Ok(t) => t,
        Err(e) => return vec![Record::failed(name, e)],
    };
    if !format.is_jsonl(source) {
        return vec![text_article(source, text)];
    }
    let records = parse_jsonl(&name, &text);
    if records.is_empty() {
        return vec![Record::failed(
            name.clone(),
            format!("{name}: the input is empty; give one JSON object per line"),
        )];
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_keep_their_line() {
        let recs = parse_jsonl("x.jsonl", "{\"id\":\"a\",\"text\":\"Hi.\"}\n\nnot json\n{\"text\":\"Yo.\"}\n");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].article.as_ref().unwrap().id, "a");
        let err = recs[1].article.as_ref().unwrap_err();
        assert!(err.starts_with("x.jsonl:3: invalid JSON"), "{err}");
        assert_eq!(recs[1].key, "x.jsonl:3");
        assert!(recs[2].article.as_ref().unwrap_err().starts_with("x.jsonl:4: missing id"), "{:?}", recs[2]);
    }

    #[test]
    fn lines_and_ids() {
        assert_eq!(parse_line("x.jsonl", 3, "{\"id\":\"a\",\"text\":\"Hi.\"}").key, "a");
        let bad = parse_line("x.jsonl", 4, "{\"id\":");
        assert_eq!(bad.key, "x.jsonl:4");
        assert!(bad.article.unwrap_err().starts_with("x.jsonl:4: invalid JSON"));
        let e = parse_line("x.jsonl", 5, "{\"id\":7,\"text\":\"Hi.\"}").article.unwrap_err();
        assert!(e.starts_with("x.jsonl:5: bad id 7"), "{e}");
        assert!(parse_line("x.jsonl", 6, "{\"id\":\" \",\"text\":\"Hi.\"}")
            .article
            .unwrap_err()
            .contains("the id is empty"));
        assert!(parse_line("x.jsonl", 6, "[1]").article.unwrap_err().contains("not a JSON object"));
        let r =
            parse_line("x.jsonl", 8, r#"{"id":"m","text":"Hi.","meta":{"source":"Wire","published":"2020-11-10"}}"#);
        assert_eq!(r.meta["source"], "Wire");
        let r = parse_line("x.jsonl", 9, r#"{"id":"m","text":"Hi.","meta":{"published":"Nov 10"}}"#);
        assert!(r.article.unwrap_err().starts_with("x.jsonl:9: meta.published: \"Nov 10\" is not an ISO date"));
        let r = parse_line("x.jsonl", 7, "{\"id\":\"b\",\"txt\":1}");
        assert_eq!(r.key, "b", "a record with an id keeps it, even when it is invalid");
        assert!(r.article.unwrap_err().starts_with("x.jsonl:7: invalid record"));
    }

    #[test]
    fn unreadable_and_non_utf8_are_reported() {
        let r = read_source("/nonexistent/file.txt", InputFormat::Auto);
        assert!(r[0].article.as_ref().unwrap_err().contains("cannot read"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, b"Russia \xff\xfe said").unwrap();
        let r = read_source(p.to_str().unwrap(), InputFormat::Auto);
        let err = r[0].article.as_ref().unwrap_err();
        assert!(err.contains("bad.txt: not valid UTF-8 (first bad byte at offset 7)"), "{r:?}");
    }
}
