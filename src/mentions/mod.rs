//! Finding mentions of named actors (countries and their officials,
//! institutions, capitals and demonyms) in news text.
//!
//! * [`Lexicon`] holds the actors and their aliases, loaded from TOML
//!   (see `default_actors.toml` for the format and the built-in defaults).
//! * [`ActorMatcher`] finds whole-word, case- and diacritic-insensitive alias
//!   occurrences and returns them as [`Mention`]s with exact byte offsets
//!   into the original text.
//!
//! ```
//! use stance::mentions::{ActorMatcher, Lexicon};
//!
//! let lexicon = Lexicon::default_actors();
//! let matcher = ActorMatcher::new(&lexicon).unwrap();
//! let text = "Erdoğan’s call with Pashinyan";
//! let found: Vec<(&str, &str)> =
//!     matcher.find(text).iter().map(|m| (matcher.actor_name(m.actor), &text[m.start..m.end])).collect();
//! assert_eq!(found, [("Turkey", "Erdoğan"), ("Armenia", "Pashinyan")]);
//! ```

mod fold;
pub mod lexicon;
pub mod matcher;

pub use lexicon::{ActorDef, Lexicon, LexiconError};
pub use matcher::{ActorMatcher, Mention};
