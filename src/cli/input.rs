//! Reading articles from files, directories and stdin for the CLI faces.

use std::io::Read;
use std::path::Path;

use stance::pipeline::ArticleInput;

/// How input files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `.jsonl` files as JSONL, everything else as plain text.
    Auto,
    /// One article per file.
    Text,
    /// One JSON object per line: `{"id", "text", "mentions"?, "actors"?, "sentences"?}`.
    Jsonl,
}

/// One article read, or why a piece of input could not be read. Errors keep their place so a
/// bad line never hides the good ones around it.
pub type Record = Result<ArticleInput, String>;

/// Reads `source` (a path, or `-` for stdin) as `format`.
pub fn read_source(source: &str, format: InputFormat) -> Vec<Record> {
    let name = if source == "-" { "stdin".to_string() } else { source.to_string() };
    let bytes = if source == "-" {
        let mut buf = Vec::new();
        match std::io::stdin().read_to_end(&mut buf) {
            Ok(_) => buf,
            Err(e) => return vec![Err(format!("stdin: cannot read: {e}"))],
        }
    } else {
        match std::fs::read(source) {
            Ok(b) => b,
            Err(e) => return vec![Err(format!("{source}: cannot read: {e}"))],
        }
    };
    let jsonl = match format {
        InputFormat::Jsonl => true,
        InputFormat::Text => false,
        InputFormat::Auto => Path::new(source).extension().is_some_and(|e| e == "jsonl"),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return vec![Err(format!("{name}: not valid UTF-8 (first bad byte at offset {at}); convert the file to UTF-8"))];
        }
    };
    if jsonl {
        parse_jsonl(&name, &text)
    } else {
        let id = Path::new(source).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.clone());
        if text.trim().is_empty() {
            return vec![Err(format!("{name}: the input is empty; give a file with the article's text"))];
        }
        vec![Ok(ArticleInput { id, text, ..Default::default() })]
    }
}

/// Parses JSONL, one record per non-blank line; a bad line becomes an error naming its line.
pub fn parse_jsonl(name: &str, text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        out.push(match serde_json::from_str::<ArticleInput>(line) {
            Ok(mut a) => {
                if a.id.is_empty() {
                    a.id = format!("{name}:{n}");
                }
                Ok(a)
            }
            Err(e) => Err(format!("{name}:{n}: invalid JSON record: {e}")),
        });
    }
    if out.is_empty() {
        out.push(Err(format!("{name}: the input is empty; give one JSON object per line")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_errors_keep_their_line() {
        let recs = parse_jsonl("x.jsonl", "{\"id\":\"a\",\"text\":\"Hi.\"}\n\nnot json\n{\"text\":\"Yo.\"}\n");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].as_ref().unwrap().id, "a");
        assert!(recs[1].as_ref().unwrap_err().starts_with("x.jsonl:3:"), "{:?}", recs[1]);
        assert_eq!(recs[2].as_ref().unwrap().id, "x.jsonl:4");
    }

    #[test]
    fn unreadable_and_non_utf8_are_reported() {
        let r = read_source("/nonexistent/file.txt", InputFormat::Auto);
        assert!(r[0].as_ref().unwrap_err().contains("cannot read"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, b"Russia \xff\xfe said").unwrap();
        let r = read_source(p.to_str().unwrap(), InputFormat::Auto);
        assert!(r[0].as_ref().unwrap_err().contains("not valid UTF-8 (first bad byte at offset 7)"), "{r:?}");
    }
}
