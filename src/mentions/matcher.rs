//! Finding actor mentions with an Aho-Corasick automaton over a folded copy
//! of the text.
//!
//! Folding (`fold`) lowercases, transliterates to ASCII (deunicode, with
//! Azerbaijani `Ə` → `a`), maps typographic apostrophes to `'` and collapses
//! whitespace runs (including non-breaking spaces) to one space, while keeping
//! a map from folded bytes back to original byte offsets. Matching rules:
//!
//! * aliases match whole words only: the characters around a match must not
//!   be letters or digits, so "Russian-backed", "pro-Russian" and "Russia's"
//!   match (the span excludes the possessive) but "Belorussian" does not;
//! * `case_sensitive` aliases must appear with their exact case or in ALL CAPS;
//! * an occurrence inside one of the same actor's `exclude` phrases is dropped;
//! * among the remaining candidates the leftmost, then longest, wins and
//!   mentions never overlap. The automaton reports overlapping candidates so
//!   that a longer alias failing a word-boundary or case check does not hide
//!   a shorter valid one at the same position.

use std::cmp::Reverse;
use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};

use super::fold::{fold, fold_key};
use super::lexicon::{Lexicon, LexiconError};

/// One occurrence of an actor in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mention {
    /// Index into [`Lexicon::actors`].
    pub actor: usize,
    /// UTF-8 byte offsets into the searched text (always char boundaries).
    pub start: usize,
    pub end: usize,
}

/// What one pattern of the automaton stands for.
#[derive(Debug, Clone, Default)]
struct PatternRoles {
    /// `(actor, exact)`: an alias of `actor`. If `exact` is non-empty the
    /// original text, folded without lowercasing, must equal one of its forms.
    aliases: Vec<(usize, Vec<String>)>,
    /// Actors for which this pattern is an exclusion phrase.
    excludes: Vec<usize>,
}

/// Distinct folded patterns and their roles, under construction.
#[derive(Default)]
struct PatternSet {
    patterns: Vec<String>,
    roles: Vec<PatternRoles>,
    ids: HashMap<String, usize>,
}

impl PatternSet {
    /// The roles of `phrase`'s folded pattern, adding the pattern if new.
    fn entry(&mut self, phrase: &str) -> &mut PatternRoles {
        let key = fold_key(phrase);
        let id = match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                self.patterns.push(key.clone());
                self.roles.push(PatternRoles::default());
                self.ids.insert(key, self.roles.len() - 1);
                self.roles.len() - 1
            }
        };
        &mut self.roles[id]
    }
}

/// Finds mentions of a lexicon's actors in text.
#[derive(Debug, Clone)]
pub struct ActorMatcher {
    automaton: AhoCorasick,
    /// Roles of each pattern, indexed by pattern id.
    roles: Vec<PatternRoles>,
    names: Vec<String>,
}

impl ActorMatcher {
    /// Builds a matcher; re-validates the lexicon (its fields are public).
    pub fn new(lexicon: &Lexicon) -> Result<ActorMatcher, LexiconError> {
        let lexicon = Lexicon::from_defs(lexicon.actors.clone())?;
        let mut set = PatternSet::default();
        for (actor, def) in lexicon.actors.iter().enumerate() {
            for phrase in &def.exclude {
                set.entry(phrase).excludes.push(actor);
            }
            for (alias, exact) in
                def.aliases.iter().map(|a| (a, false)).chain(def.case_sensitive.iter().map(|a| (a, true)))
            {
                let aliases = &mut set.entry(alias).aliases;
                let forms = match aliases.iter().position(|(a, _)| *a == actor) {
                    Some(i) => &mut aliases[i].1,
                    None => {
                        aliases.push((actor, Vec::new()));
                        &mut aliases.last_mut().expect("just pushed").1
                    }
                };
                if exact {
                    let form = fold(alias, false).text.trim().to_string();
                    let upper = form.to_uppercase();
                    for f in [form, upper] {
                        if !forms.contains(&f) {
                            forms.push(f);
                        }
                    }
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&set.patterns)
            .map_err(|e| LexiconError::Automaton(e.to_string()))?;
        Ok(ActorMatcher { automaton, roles: set.roles, names: lexicon.actors.into_iter().map(|a| a.name).collect() })
    }

    /// All mentions in `text`, sorted by start and non-overlapping.
    pub fn find(&self, text: &str) -> Vec<Mention> {
        let folded = fold(text, true);
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, actor), folded
        let mut excluded: Vec<(usize, usize, usize)> = Vec::new();
        for m in self.automaton.find_overlapping_iter(&folded.text) {
            let (start, end) = (m.start(), m.end());
            if !folded.is_whole_word(start, end) {
                continue;
            }
            let Some(roles) = self.roles.get(m.pattern().as_usize()) else {
                continue;
            };
            excluded.extend(roles.excludes.iter().map(|&actor| (start, end, actor)));
            for (actor, exact) in &roles.aliases {
                if exact.is_empty() || folded.original_is_one_of(text, start, end, exact) {
                    candidates.push((start, end, *actor));
                }
            }
        }
        candidates.sort_by_key(|&(s, e, _)| (s, Reverse(e)));
        if !excluded.is_empty() {
            // Sweep: a candidate is inside an exclusion of its actor iff some
            // exclusion starting at or before it ends at or after its end.
            excluded.sort_unstable();
            let mut reach = vec![0usize; self.names.len()]; // per actor
            let mut next = 0;
            candidates.retain(|&(s, e, actor)| {
                while let Some(&(_, xe, xa)) = excluded.get(next).filter(|x| x.0 <= s) {
                    if let Some(r) = reach.get_mut(xa) {
                        *r = (*r).max(xe);
                    }
                    next += 1;
                }
                reach.get(actor).is_none_or(|&r| r < e)
            });
        }
        let mut mentions = Vec::new();
        let mut taken_until = 0;
        for (s, e, actor) in candidates {
            if s < taken_until {
                continue;
            }
            taken_until = e;
            if let Some((start, end)) = folded.original_span(s, e) {
                mentions.push(Mention { actor, start, end });
            }
        }
        mentions
    }

    /// Number of mentions of each actor in `text`, indexed like the lexicon.
    pub fn count(&self, text: &str) -> Vec<usize> {
        let mut counts = vec![0; self.names.len()];
        for m in self.find(text) {
            if let Some(c) = counts.get_mut(m.actor) {
                *c += 1;
            }
        }
        counts
    }

    /// Name of actor `actor`, or `""` if there is no such actor.
    pub fn actor_name(&self, actor: usize) -> &str {
        self.names.get(actor).map_or("", String::as_str)
    }

    /// Number of actors.
    pub fn actor_count(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexicon::ActorDef;
    use super::*;

    fn matcher() -> ActorMatcher {
        ActorMatcher::new(&Lexicon::default_actors()).expect("default lexicon builds")
    }

    /// (actor name, original substring) for each mention, checking offsets.
    fn found(m: &ActorMatcher, text: &str) -> Vec<(String, String)> {
        let mentions = m.find(text);
        for w in mentions.windows(2) {
            assert!(w[0].end <= w[1].start, "overlap/order in {mentions:?}");
        }
        mentions
            .iter()
            .map(|x| {
                let s = text.get(x.start..x.end).expect("offsets are char boundaries");
                (m.actor_name(x.actor).to_string(), s.to_string())
            })
            .collect()
    }

    fn check(cases: &[(&str, &[(&str, &str)])]) {
        let m = matcher();
        for (text, expected) in cases {
            let got = found(&m, text);
            let expected: Vec<(String, String)> =
                expected.iter().map(|(a, s)| (a.to_string(), s.to_string())).collect();
            assert_eq!(got, expected, "text: {text:?}");
        }
    }

    #[test]
    fn whole_words_and_compounds() {
        check(&[
            ("Russia and Belorussian media", &[("Russia", "Russia")]),
            ("Bakunin was not from Baku.", &[("Azerbaijan", "Baku")]),
            ("Turkic peoples, Armenianness, Russia2020", &[]),
            ("Russian-backed and pro-Russian forces", &[("Russia", "Russian"), ("Russia", "Russian")]),
            ("Turkish-made drones hit Armenian-populated areas", &[("Turkey", "Turkish"), ("Armenia", "Armenian")]),
            ("the Moscow-led bloc", &[("Russia", "Moscow")]),
            ("#Russia #Karabakh", &[("Russia", "Russia")]),
            (
                "Russians, Turks, Armenians, Azerbaijanis and Azeris",
                &[
                    ("Russia", "Russians"),
                    ("Turkey", "Turks"),
                    ("Armenia", "Armenians"),
                    ("Azerbaijan", "Azerbaijanis"),
                    ("Azerbaijan", "Azeris"),
                ],
            ),
        ]);
    }

    #[test]
    fn possessives() {
        check(&[
            ("Russia's role", &[("Russia", "Russia")]),
            ("Russia’s role", &[("Russia", "Russia")]),
            ("Erdogan’s plan", &[("Turkey", "Erdogan")]),
            ("the Armenians' homes", &[("Armenia", "Armenians")]),
            ("Aliyev‘s speech and Putin`s", &[("Azerbaijan", "Aliyev"), ("Russia", "Putin")]),
            ("TURKEY’S ROLE", &[("Turkey", "TURKEY")]),
        ]);
    }

    #[test]
    fn case_rules() {
        check(&[
            ("We ate turkey and two turkeys.", &[]),
            ("Turkey sent drones.", &[("Turkey", "Turkey")]),
            ("TURKEY SENDS DRONES", &[("Turkey", "TURKEY")]),
            ("TuRkEy", &[]),
            ("young turks and Turks", &[("Turkey", "Turks")]),
            ("russia, MOSCOW, kremlin", &[("Russia", "russia"), ("Russia", "MOSCOW"), ("Russia", "kremlin")]),
            ("the Duma and a duma", &[("Russia", "Duma")]),
            ("republic of turkey", &[("Turkey", "republic of turkey")]),
        ]);
    }

    #[test]
    fn diacritics_keep_exact_offsets() {
        check(&[
            ("Erdoğan and Erdogan", &[("Turkey", "Erdoğan"), ("Turkey", "Erdogan")]),
            ("Türkiye, Turkiye, TÜRKİYE", &[("Turkey", "Türkiye"), ("Turkey", "Turkiye"), ("Turkey", "TÜRKİYE")]),
            ("Mevlüt Çavuşoğlu met Cavusoglu", &[("Turkey", "Mevlüt Çavuşoğlu"), ("Turkey", "Cavusoglu")]),
            ("İlham Əliyev / Aliyev", &[("Azerbaijan", "İlham Əliyev"), ("Azerbaijan", "Aliyev")]),
            ("Paşinyan", &[("Armenia", "Paşinyan")]),
            // Combining marks: "Erdog\u{306}an" is Erdoğan in decomposed form.
            ("Erdog\u{306}an said", &[("Turkey", "Erdog\u{306}an")]),
            ("Baku\u{301} today", &[("Azerbaijan", "Baku\u{301}")]),
        ]);
    }

    #[test]
    fn multibyte_prefix_offsets() {
        let m = matcher();
        let text = "«Путин» 😀 日本 — ß€ Putin’s 🇷🇺 Moscow";
        let mentions = m.find(text);
        let slices: Vec<&str> = mentions.iter().map(|m| &text[m.start..m.end]).collect();
        // Cyrillic is transliterated, so "Путин" is Putin too.
        assert_eq!(slices, ["Путин", "Putin", "Moscow"]);
        assert_eq!(mentions[0].start, "«".len());
        assert_eq!(mentions[1].start, text.find("Putin").unwrap());
        assert_eq!(mentions[2].end, text.len());
    }

    #[test]
    fn exclusions() {
        check(&[
            ("The Moscow Times reported", &[]),
            ("at 0 am Moscow time, Moscow said", &[("Russia", "Moscow")]),
            ("correspondent of The Moscow Post", &[]),
            ("Russian roulette in Russia", &[("Russia", "Russia")]),
            ("Turkish delight from Turkey", &[("Turkey", "Turkey")]),
            ("Turkey Point nuclear plant", &[]),
            ("the Turks and Caicos Islands", &[]),
            ("Tabriz, capital of East Azerbaijan province", &[]),
            ("the Armenian Church", &[("Armenia", "Armenian")]),
            ("Moscow Times, Moscow, Moscow time", &[("Russia", "Moscow")]),
        ]);
        // Many exclusions stay fast (sweep, not pairwise).
        let text = format!("{}Moscow", "The Moscow Times; Turkey Point. ".repeat(20_000));
        let mentions = matcher().find(&text);
        assert_eq!(mentions.len(), 1);
        assert_eq!(&text[mentions[0].start..], "Moscow");
    }

    #[test]
    fn leftmost_longest() {
        check(&[
            ("President Vladimir Putin said", &[("Russia", "Vladimir Putin")]),
            ("Recep Tayyip Erdogan", &[("Turkey", "Recep Tayyip Erdogan")]),
            ("the Russian Federation Council", &[("Russia", "Russian Federation")]),
            // A longer alias failing the word boundary must not hide a shorter one.
            ("Armenian governmental reform", &[("Armenia", "Armenian")]),
            ("Nagorno-Karabakh Republic leader", &[("Armenia", "Nagorno-Karabakh Republic")]),
        ]);
    }

    #[test]
    fn whitespace_is_normalised() {
        check(&[
            ("Vladimir\u{a0}Putin", &[("Russia", "Vladimir\u{a0}Putin")]),
            ("Vladimir \n\t Putin", &[("Russia", "Vladimir \n\t Putin")]),
            ("Ilham\u{202f}Aliyev", &[("Azerbaijan", "Ilham\u{202f}Aliyev")]),
        ]);
    }

    #[test]
    fn custom_lexicon_and_shared_exclusion_phrases() {
        let defs = vec![
            ActorDef {
                name: "A".into(),
                aliases: vec!["Alpha".into()],
                case_sensitive: vec!["AB".into()],
                exclude: vec!["Alpha Beta".into()],
            },
            ActorDef {
                name: "B".into(),
                aliases: vec!["Alpha Beta".into(), "Beta".into()],
                case_sensitive: vec![],
                exclude: vec![],
            },
        ];
        let m = ActorMatcher::new(&Lexicon::from_defs(defs).unwrap()).unwrap();
        let got = found(&m, "Alpha Beta, alpha, ab, AB");
        let want = [("B", "Alpha Beta"), ("A", "alpha"), ("A", "AB")];
        assert_eq!(got, want.map(|(a, s)| (a.to_string(), s.to_string())));
        assert_eq!(m.actor_name(7), "");
        assert_eq!(m.count("Beta, Alpha; beta"), vec![1, 2]);
    }

    #[test]
    fn invalid_lexicon_is_rejected_by_new() {
        let mut lex = Lexicon::default_actors();
        lex.actors[0].aliases.push("Baku".into());
        let err = ActorMatcher::new(&lex).unwrap_err().to_string();
        assert!(err.contains("Baku") && err.contains("Russia") && err.contains("Azerbaijan"), "{err}");
    }

    #[test]
    fn never_panics_on_odd_unicode() {
        let m = matcher();
        let odd = [
            "",
            " ",
            "\u{a0}",
            "'",
            "’s",
            "\u{0}",
            "\u{feff}Russia",
            "Russia\u{200d}",
            "\u{301}Putin",
            "ﬁRussia",
            "Ｒｕｓｓｉａ",
            "𝐑𝐮𝐬𝐬𝐢𝐚",
            "Ǆ",
            "İİİ",
            "ßßß Baku ß",
            "Ə",
            "ə",
            "\u{10FFFF}",
            "\u{D7FF}Turkey\u{E000}",
            "🇹🇷Turkey🇦🇲",
            "a\u{2028}Baku\u{2029}",
            "日本Russia語",
            "\r\n\r\n",
            "Russia's’'",
            "'Baku'",
            "---Baku---",
            "ǅungla Putin",
            "Ⅻ Yerevan Ⅻ",
            "Baku\u{301}\u{301}\u{301}",
        ];
        let long: String = odd.concat().repeat(20);
        for text in odd.iter().copied().chain([long.as_str()]) {
            for mention in m.find(text) {
                let slice = text.get(mention.start..mention.end);
                assert!(slice.is_some_and(|s| !s.is_empty()), "{text:?} {mention:?}");
            }
        }
        // Every char boundary prefix/suffix of a mixed string, too.
        let mixed = "Çavuşoğlu’s Türkiye 日本 Əliyev\u{a0}Baku ß Putin";
        for (i, _) in mixed.char_indices() {
            for t in [&mixed[i..], &mixed[..i]] {
                for mention in m.find(t) {
                    assert!(t.get(mention.start..mention.end).is_some());
                }
            }
        }
    }

    #[test]
    #[ignore = "needs ../shared"]
    fn articles() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/articles"));
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
            panic!("cannot read {}: {e}; this test needs ../shared/articles beside the repository", dir.display())
        });
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no .txt articles in {}", dir.display());
        let m = matcher();
        let mut totals = vec![0usize; m.actor_count()];
        for path in &paths {
            let text = std::fs::read_to_string(path).expect("article is UTF-8 text");
            let counts = m.count(&text);
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let row: Vec<String> = counts.iter().enumerate().map(|(i, c)| format!("{}={c}", m.actor_name(i))).collect();
            println!("{file}: {}", row.join(" "));
            for (t, c) in totals.iter_mut().zip(&counts) {
                *t += c;
            }
        }
        println!("total over {} articles:", paths.len());
        for (i, t) in totals.iter().enumerate() {
            println!("  {:<11} {t}", m.actor_name(i));
            assert!(*t > 0, "actor {} never found in the articles", m.actor_name(i));
        }
    }
}
