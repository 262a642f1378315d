//! Actor lexicon: actors, their aliases and exclusion phrases, loaded from
//! TOML and validated.
//!
//! The file format is documented at the top of `default_actors.toml`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

use super::fold::{fold_key, is_whole_word};

/// The built-in lexicon (Russia, Turkey, Armenia, Azerbaijan).
const DEFAULT_ACTORS_TOML: &str = include_str!("default_actors.toml");

/// The longest alias or exclude phrase, in bytes: they are names, not passages, and each byte
/// becomes matcher states.
pub const MAX_PHRASE_BYTES: usize = 200;

/// One actor and the surface forms that refer to it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActorDef {
    /// Display name, unique (case-insensitively) within a lexicon.
    pub name: String,
    /// Aliases matched as whole words, ignoring case and diacritics.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Aliases that match only with exactly this case or in ALL CAPS
    /// (e.g. "Turkey", so that the bird "turkey" is not a mention).
    /// They need not be repeated in `aliases`; if they are, this rule wins.
    #[serde(default)]
    pub case_sensitive: Vec<String>,
    /// Phrases that contain one of this actor's aliases but do not refer to
    /// the actor ("Moscow Times"); an alias occurrence inside one is dropped.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl ActorDef {
    /// How many aliases and exclude phrases it has.
    pub fn phrase_count(&self) -> usize {
        self.aliases.len() + self.case_sensitive.len() + self.exclude.len()
    }

    /// All aliases, case-insensitive ones first.
    pub fn all_aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.iter().chain(&self.case_sensitive).map(String::as_str)
    }
}

/// A validated set of actors. Actor indices (as used in
/// [`Mention::actor`](super::Mention)) are positions in `actors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lexicon {
    #[serde(rename = "actor")]
    pub actors: Vec<ActorDef>,
}

/// On-disk shape of a lexicon file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LexiconFile {
    #[serde(rename = "actor", default)]
    actors: Vec<ActorDef>,
}

/// Why a lexicon could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    #[error("cannot read actor lexicon file {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    #[error(
        "actor lexicon ({origin}) is not valid: {message}\n\
         expected one or more tables like:\n  \
         [[actor]]\n  name = \"Russia\"\n  aliases = [\"Russia\", \"Moscow\"]\n  \
         case_sensitive = []  # optional\n  exclude = []         # optional"
    )]
    Parse { origin: String, message: String },

    #[error("actor lexicon defines no actors; add at least one [[actor]] table with a name and aliases")]
    NoActors,

    #[error("actor #{position} has an empty name; set `name = \"...\"` in that [[actor]] table")]
    EmptyName { position: usize },

    #[error(
        "actor name {name:?} is defined twice (names are compared ignoring case); \
         merge the two [[actor]] tables or rename one"
    )]
    DuplicateName { name: String },

    #[error("actor {actor:?} has no aliases; add at least one to `aliases` or `case_sensitive`")]
    NoAliases { actor: String },

    #[error(
        "actor {actor:?} has an empty alias {alias:?} (no letters or digits); \
         remove it from `aliases`/`case_sensitive`"
    )]
    EmptyAlias { actor: String, alias: String },

    #[error(
        "alias {alias:?} of actor {second:?} is already an alias of actor {first:?} \
         (aliases are compared ignoring case and diacritics); an alias may belong to only one actor, \
         remove it from one of them"
    )]
    SharedAlias { alias: String, first: String, second: String },

    #[error("actor {actor:?}: {what} of {bytes} bytes (starting {start:?}), above the limit of {max} bytes; aliases and exclude phrases are names, shorten it")]
    PhraseTooLong { actor: String, what: &'static str, start: String, bytes: usize, max: usize },

    #[error("actor {actor:?} has an empty exclude phrase {phrase:?}; remove it from `exclude`")]
    EmptyExclude { actor: String, phrase: String },

    #[error(
        "exclude phrase {phrase:?} of actor {actor:?} is also one of its aliases, \
         so that alias could never match; remove it from `exclude` or from the aliases"
    )]
    ExcludeIsAlias { actor: String, phrase: String },

    #[error(
        "exclude phrase {phrase:?} of actor {actor:?} contains none of that actor's aliases \
         as a whole word, so it can never suppress a mention; fix its spelling or remove it"
    )]
    ExcludeWithoutAlias { actor: String, phrase: String },

    #[error("in actor lexicon file {}: {error}", path.display())]
    InFile { path: PathBuf, error: Box<LexiconError> },

    #[error("cannot build the actor matcher: {0}")]
    Automaton(String),
}

impl Lexicon {
    /// The embedded default lexicon (`default_actors.toml`).
    pub fn default_actors() -> Lexicon {
        static DEFAULT: OnceLock<Lexicon> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Lexicon::parse(DEFAULT_ACTORS_TOML, "built-in default_actors.toml")
                    // Cannot fail: the embedded file is validated by the tests.
                    .expect("built-in default_actors.toml is valid")
            })
            .clone()
    }

    /// Parses and validates a lexicon from TOML text.
    pub fn from_toml_str(s: &str) -> Result<Lexicon, LexiconError> {
        Lexicon::parse(s, "TOML string")
    }

    /// Reads, parses and validates a lexicon file. Errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Lexicon, LexiconError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| LexiconError::Io { path: path.to_path_buf(), error })?;
        Lexicon::parse(&text, &path.display().to_string()).map_err(|e| match e {
            // Parse errors already carry the path as their origin.
            LexiconError::Parse { .. } => e,
            other => LexiconError::InFile { path: path.to_path_buf(), error: Box::new(other) },
        })
    }

    fn parse(s: &str, origin: &str) -> Result<Lexicon, LexiconError> {
        let file: LexiconFile = toml::from_str(s).map_err(|e| LexiconError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Lexicon::from_defs(file.actors)
    }

    /// Validates actor definitions: at least one actor; non-empty names,
    /// unique ignoring case; every actor has at least one alias and no empty
    /// ones; no alias (after case/diacritic folding) belongs to two actors;
    /// every exclude phrase contains one of its actor's aliases and is not
    /// itself an alias.
    pub fn from_defs(defs: Vec<ActorDef>) -> Result<Lexicon, LexiconError> {
        if defs.is_empty() {
            return Err(LexiconError::NoActors);
        }
        let mut names: HashSet<String> = HashSet::new();
        // folded alias -> index of the actor that owns it
        let mut owners: HashMap<String, usize> = HashMap::new();
        for (i, def) in defs.iter().enumerate() {
            let name = def.name.trim();
            if name.is_empty() {
                return Err(LexiconError::EmptyName { position: i + 1 });
            }
            let phrases = def
                .all_aliases()
                .map(|p| ("alias", p))
                .chain(def.exclude.iter().map(|p| ("exclude phrase", p.as_str())));
            for (what, phrase) in phrases {
                if phrase.len() > MAX_PHRASE_BYTES {
                    let start: String = phrase.chars().take(24).collect();
                    return Err(LexiconError::PhraseTooLong {
                        actor: name.chars().take(64).collect(),
                        what,
                        start,
                        bytes: phrase.len(),
                        max: MAX_PHRASE_BYTES,
                    });
                }
            }
            if !names.insert(name.to_lowercase()) {
                return Err(LexiconError::DuplicateName { name: name.to_string() });
            }
            if def.aliases.is_empty() && def.case_sensitive.is_empty() {
                return Err(LexiconError::NoAliases { actor: name.to_string() });
            }
            for alias in def.all_aliases() {
                let key = fold_key(alias);
                if !key.chars().any(char::is_alphanumeric) {
                    return Err(LexiconError::EmptyAlias { actor: name.to_string(), alias: alias.to_string() });
                }
                match owners.get(&key) {
                    Some(&j) if j != i => {
                        return Err(LexiconError::SharedAlias {
                            alias: alias.to_string(),
                            first: defs[j].name.trim().to_string(),
                            second: name.to_string(),
                        })
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(key, i);
                    }
                }
            }
        }
        for def in &defs {
            if def.exclude.is_empty() {
                continue;
            }
            let keys: Vec<String> = def.all_aliases().map(fold_key).collect();
            let key_set: HashSet<&str> = keys.iter().map(String::as_str).collect();
            // One automaton over the actor's aliases finds which of them each phrase contains,
            // in time linear in the phrase (comparing every phrase with every alias is
            // quadratic in a large request lexicon).
            let aliases = AhoCorasick::new(&keys).map_err(|e| LexiconError::Automaton(e.to_string()))?;
            for phrase in &def.exclude {
                let actor = || def.name.trim().to_string();
                let key = fold_key(phrase);
                if !key.chars().any(char::is_alphanumeric) {
                    return Err(LexiconError::EmptyExclude { actor: actor(), phrase: phrase.clone() });
                }
                if key_set.contains(key.as_str()) {
                    return Err(LexiconError::ExcludeIsAlias { actor: actor(), phrase: phrase.clone() });
                }
                let holds_alias = aliases.find_overlapping_iter(&key).any(|m| is_whole_word(&key, m.start(), m.end()));
                if !holds_alias {
                    return Err(LexiconError::ExcludeWithoutAlias { actor: actor(), phrase: phrase.clone() });
                }
            }
        }
        Ok(Lexicon { actors: defs })
    }

    /// Actor names in index order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.actors.iter().map(|a| a.name.as_str())
    }

    /// Index of the actor with this name (ignoring case), if any.
    pub fn actor_index(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        self.actors.iter().position(|a| a.name.trim().to_lowercase() == name.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, aliases: &[&str]) -> ActorDef {
        ActorDef {
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            case_sensitive: vec![],
            exclude: vec![],
        }
    }

    #[test]
    fn default_lexicon_loads_and_is_valid() {
        let lex = Lexicon::default_actors();
        let names: Vec<&str> = lex.names().collect();
        assert_eq!(names, ["Russia", "Turkey", "Armenia", "Azerbaijan"]);
        // Re-validating the embedded file directly must also succeed.
        Lexicon::from_toml_str(DEFAULT_ACTORS_TOML).expect("default file valid");
        for a in &lex.actors {
            assert!(a.all_aliases().count() >= 10, "{} has few aliases", a.name);
        }
        assert_eq!(lex.actor_index("turkey"), Some(1));
        assert_eq!(lex.actor_index("Mars"), None);
    }

    #[test]
    fn parses_minimal_toml_with_optional_fields() {
        let lex = Lexicon::from_toml_str(
            r#"
            [[actor]]
            name = "Russia"
            aliases = ["Russia", "Moscow"]
            exclude = ["Moscow Times"]

            [[actor]]
            name = "Turkey"
            case_sensitive = ["Turkey"]
            "#,
        )
        .unwrap();
        assert_eq!(lex.actors.len(), 2);
        assert_eq!(lex.actors[1].case_sensitive, ["Turkey"]);
        assert!(lex.actors[1].aliases.is_empty());
    }

    #[test]
    fn validation_errors() {
        type Check = fn(&LexiconError) -> bool;
        let cases: Vec<(Vec<ActorDef>, Check, &[&str])> = vec![
            (vec![], |e| matches!(e, LexiconError::NoActors), &["no actors"]),
            (vec![def("  ", &["x"])], |e| matches!(e, LexiconError::EmptyName { position: 1 }), &["#1", "empty name"]),
            (
                vec![def("Russia", &["Russia"]), def("russia", &["Moscow"])],
                |e| matches!(e, LexiconError::DuplicateName { .. }),
                &["\"russia\"", "twice"],
            ),
            (vec![def("Russia", &[])], |e| matches!(e, LexiconError::NoAliases { .. }), &["\"Russia\"", "no aliases"]),
            (
                vec![def("Russia", &["Russia", " - "])],
                |e| matches!(e, LexiconError::EmptyAlias { .. }),
                &["\"Russia\"", "empty alias"],
            ),
            (
                vec![def("Russia", &["Russia", "Baku"]), def("Azerbaijan", &["Azerbaijan", "BAKÚ"])],
                |e| matches!(e, LexiconError::SharedAlias { .. }),
                &["\"BAKÚ\"", "\"Russia\"", "\"Azerbaijan\""],
            ),
        ];
        for (defs, check, needles) in cases {
            let err = Lexicon::from_defs(defs).expect_err("should be invalid");
            assert!(check(&err), "unexpected error {err:?}");
            let msg = err.to_string();
            for n in needles {
                assert!(msg.contains(n), "{msg:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn exclusion_validation() {
        let with_excl = |phrase: &str| {
            let mut d = def("Russia", &["Russia", "Moscow"]);
            d.exclude = vec![phrase.to_string()];
            Lexicon::from_defs(vec![d])
        };
        assert!(with_excl("The Moscow Times").is_ok());
        assert!(matches!(with_excl("moscow"), Err(LexiconError::ExcludeIsAlias { .. })));
        assert!(matches!(with_excl("Muscovy"), Err(LexiconError::ExcludeWithoutAlias { .. })));
        // "Moscow" only as part of a longer word does not count.
        assert!(matches!(with_excl("Moscowite news"), Err(LexiconError::ExcludeWithoutAlias { .. })));
        assert!(matches!(with_excl(""), Err(LexiconError::EmptyExclude { .. })));
    }

    #[test]
    fn long_phrases_are_refused_and_many_excludes_validate_fast() {
        let long = "x".repeat(MAX_PHRASE_BYTES + 1);
        let err = Lexicon::from_defs(vec![def("Russia", &["Russia", &long])]).unwrap_err();
        assert!(matches!(err, LexiconError::PhraseTooLong { bytes: 201, .. }), "{err:?}");
        assert!(err.to_string().contains("alias of 201 bytes (starting \"xxxxxxxxxxxxxxxxxxxxxxxx\")"), "{err}");
        let mut d = def("Russia", &["Russia"]);
        d.exclude = vec![format!("Russia {long}")];
        assert!(matches!(Lexicon::from_defs(vec![d]), Err(LexiconError::PhraseTooLong { what: "exclude phrase", .. })));
        // 10,000 aliases and 10,000 exclude phrases: linear, not 10⁸ comparisons.
        let aliases: Vec<String> = (0..10_000).map(|i| format!("alias{i}")).collect();
        let mut d = def("Big", &aliases.iter().map(String::as_str).collect::<Vec<_>>());
        d.exclude = (0..10_000).map(|i| format!("the alias{i} times")).collect();
        let t = std::time::Instant::now();
        assert!(Lexicon::from_defs(vec![d.clone()]).is_ok());
        // The time is printed, not asserted (speed belongs in a benchmark); the error path
        // still finds a phrase that holds none of the aliases.
        println!("10,000 aliases x 10,000 excludes validated in {:?}", t.elapsed());
        d.exclude.push("alias1x times".into());
        assert!(matches!(Lexicon::from_defs(vec![d]), Err(LexiconError::ExcludeWithoutAlias { .. })));
    }

    #[test]
    fn same_alias_twice_in_one_actor_is_fine() {
        let mut d = def("Turkey", &["Türkiye", "Turkiye", "Turkey"]);
        d.case_sensitive = vec!["Turkey".into()];
        assert!(Lexicon::from_defs(vec![d]).is_ok());
    }

    #[test]
    fn bad_toml_errors_mention_the_file() {
        let dir = std::env::temp_dir().join(format!("stance-lexicon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let bad = dir.join("bad_actors.toml");
        std::fs::write(&bad, "[[actor]]\nname = \"Russia\"\naliases = [\"Russia\"\n").unwrap();
        let msg = Lexicon::from_toml_file(&bad).unwrap_err().to_string();
        assert!(msg.contains("bad_actors.toml"), "{msg}");
        assert!(msg.contains("[[actor]]"), "should show the expected format: {msg}");

        let typo = dir.join("typo_actors.toml");
        std::fs::write(&typo, "[[actor]]\nname = \"Russia\"\nalias = [\"Russia\"]\n").unwrap();
        let msg = Lexicon::from_toml_file(&typo).unwrap_err().to_string();
        assert!(msg.contains("typo_actors.toml") && msg.contains("alias"), "{msg}");

        let invalid = dir.join("shared_actors.toml");
        std::fs::write(
            &invalid,
            "[[actor]]\nname = \"A\"\naliases = [\"X\"]\n[[actor]]\nname = \"B\"\naliases = [\"x\"]\n",
        )
        .unwrap();
        let err = Lexicon::from_toml_file(&invalid).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LexiconError::InFile { .. }));
        assert!(msg.contains("shared_actors.toml") && msg.contains("\"A\"") && msg.contains("\"B\""), "{msg}");

        let missing = dir.join("missing.toml");
        let msg = Lexicon::from_toml_file(&missing).unwrap_err().to_string();
        assert!(msg.contains("missing.toml") && msg.contains("cannot read"), "{msg}");

        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_toml_string() {
        let err = Lexicon::from_toml_str("[[actors]]\nname = \"Russia\"\n").unwrap_err();
        assert!(matches!(err, LexiconError::Parse { .. }));
        assert!(err.to_string().contains("actors"), "{err}");
        assert!(matches!(Lexicon::from_toml_str(""), Err(LexiconError::NoActors)));
    }
}
