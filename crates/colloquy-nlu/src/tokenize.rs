//! Turns normalised text into hashed features for the intent classifier.
//!
//! Chinese has no spaces, so runs of CJK characters give character
//! unigrams and bigrams (bigrams approximate words without a segmenter and
//! its dictionary), plus the first and last one or two characters of the
//! run marked as such: commands tend to start with the verb (`播放…`) and
//! end with the kind of thing wanted (`…的诗`). Latin and digit runs give
//! words, word bigrams, and character 2- to 4-grams of each word with
//! boundary marks (`<r`, `run`, `ns>`), so that `running`, `runs` and the
//! typo `runing` still share most of their features. (Trigrams for Chinese
//! and 3- to 5-grams for English did no better on CAIS and CLINC150.)
//!
//! With a bot's thesaurus, a word of a synonym group also gives the
//! group's feature (see `thesaurus`).
//!
//! A feature is a 64-bit hash of its kind and characters, so no strings
//! are built and two features collide with negligible probability.

use crate::thesaurus::Thesaurus;

/// Chinese, Japanese and Korean characters: scripts written without
/// spaces between words.
pub fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}' // hiragana, katakana
        | '\u{3400}'..='\u{4dbf}'
        | '\u{4e00}'..='\u{9fff}'
        | '\u{ac00}'..='\u{d7af}' // hangul
        | '\u{f900}'..='\u{faff}'
        | '\u{20000}'..='\u{2ebef}')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

// Distinct seeds per kind so that the word `abc` and the character
// n-gram `abc` are different features.
pub(crate) const WORD: u64 = 1;
const WORD_BIGRAM: u64 = 2;
const CHAR_NGRAM: u64 = 3;
const CJK_NGRAM: u64 = 4;
const NUMBER: u64 = 5;
const THESAURUS_GROUP: u64 = 6;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Murmur3's finaliser: FNV leaves the low bits depending only on the low
/// bits of the input, and hash tables index by low bits.
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

pub(crate) fn hash_chars(kind: u64, chars: &[char]) -> u64 {
    let mut h = FNV_OFFSET ^ kind.wrapping_mul(FNV_PRIME);
    for &c in chars {
        h = (h ^ u64::from(c)).wrapping_mul(FNV_PRIME);
    }
    finish(h)
}

/// The feature of a thesaurus group.
pub(crate) fn group_feature(id: u32) -> u64 {
    finish(FNV_OFFSET ^ THESAURUS_GROUP.wrapping_mul(FNV_PRIME) ^ (u64::from(id) << 8))
}

/// A hashed feature and its weight relative to a whole word.
pub type Feature = (u64, f32);

/// A word has many character n-grams; at full weight they would drown out
/// the words themselves (measured on CLINC150's validation set).
const SUBWORD_WEIGHT: f32 = 0.5;

/// Appends the features of `text` (already normalised) to `out`, with
/// those of `thesaurus` groups; a feature that occurs twice is pushed
/// twice, so callers can count frequencies.
pub fn features(text: &str, thesaurus: &Thesaurus, out: &mut Vec<Feature>) {
    let chars: Vec<char> = text.chars().collect();
    let mut marked = Vec::new();
    let mut expansion = Vec::new();
    let mut previous_word: Option<u64> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if is_cjk(c) {
            while i < chars.len() && is_cjk(chars[i]) {
                i += 1;
            }
            cjk_features(&chars[start..i], &mut marked, out);
            thesaurus.cjk_run(&chars[start..i], out);
            previous_word = None;
        } else if is_word_char(c) {
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let run = &chars[start..i];
            let mut emit = |word: &[char]| {
                let hash = hash_chars(WORD, word);
                out.push((hash, 1.0));
                if let Some(previous) = previous_word {
                    out.push((finish(previous ^ hash.rotate_left(17) ^ WORD_BIGRAM), 1.0));
                }
                previous_word = Some(hash);
                word_features(word, &mut marked, out);
                thesaurus.word(hash, out);
            };
            match shorthand(run) {
                Some(words) => {
                    for word in words {
                        expansion.clear();
                        expansion.extend(word.chars());
                        emit(&expansion);
                    }
                }
                None => emit(run),
            }
        } else {
            i += 1;
        }
    }
}

/// `run` between boundary marks, which cannot occur inside a run (runs
/// are made of letters, digits or CJK characters).
fn mark(run: &[char], marked: &mut Vec<char>) {
    marked.clear();
    marked.push('<');
    marked.extend_from_slice(run);
    marked.push('>');
}

fn cjk_features(run: &[char], marked: &mut Vec<char>, out: &mut Vec<Feature>) {
    for n in 1..=2 {
        for gram in run.windows(n) {
            out.push((hash_chars(CJK_NGRAM, gram), 1.0));
        }
    }
    mark(run, marked);
    let len = marked.len();
    out.push((hash_chars(CJK_NGRAM, &marked[..2]), 1.0));
    out.push((hash_chars(CJK_NGRAM, &marked[len - 2..]), 1.0));
    if len > 3 {
        out.push((hash_chars(CJK_NGRAM, &marked[..3]), 1.0));
        out.push((hash_chars(CJK_NGRAM, &marked[len - 3..]), 1.0));
    }
}

fn word_features(word: &[char], marked: &mut Vec<char>, out: &mut Vec<Feature>) {
    if word.iter().any(char::is_ascii_digit) {
        out.push((hash_chars(NUMBER, &[]), 1.0));
        if word.iter().all(char::is_ascii_digit) {
            return;
        }
    }
    mark(word, marked);
    for n in 2..=4 {
        for gram in marked.windows(n) {
            out.push((hash_chars(CHAR_NGRAM, gram), SUBWORD_WEIGHT));
        }
    }
}

/// English chat shorthand and contractions typed without an apostrophe,
/// sorted, with the words they stand for. A word listed here gives the
/// features of those words instead of its own, so that `thx` is `thanks`
/// and `r u open` is `are you open`: users type these to bots all the time,
/// and a bot's examples are written out in full. Only forms with one common
/// reading: not `y` (why, yes), `ill` or `4`.
const SHORTHAND: &[(&str, &[&str])] = &[
    ("2day", &["today"]),
    ("2moro", &["tomorrow"]),
    ("2nite", &["tonight"]),
    ("abt", &["about"]),
    ("b4", &["before"]),
    ("bc", &["because"]),
    ("btw", &["by", "the", "way"]),
    ("cant", &["can", "not"]),
    ("coz", &["because"]),
    ("cuz", &["because"]),
    ("cya", &["see", "you"]),
    ("didnt", &["did", "not"]),
    ("doesnt", &["does", "not"]),
    ("dont", &["do", "not"]),
    ("dunno", &["do", "not", "know"]),
    ("gimme", &["give", "me"]),
    ("gonna", &["going", "to"]),
    ("gotta", &["got", "to"]),
    ("hows", &["how", "is"]),
    ("hru", &["how", "are", "you"]),
    ("idk", &["i", "do", "not", "know"]),
    ("im", &["i", "am"]),
    ("isnt", &["is", "not"]),
    ("ive", &["i", "have"]),
    ("kinda", &["kind", "of"]),
    ("l8r", &["later"]),
    ("lemme", &["let", "me"]),
    ("msg", &["message"]),
    ("pls", &["please"]),
    ("plz", &["please"]),
    ("r", &["are"]),
    ("rn", &["right", "now"]),
    ("smth", &["something"]),
    ("sth", &["something"]),
    ("thanx", &["thanks"]),
    ("thats", &["that", "is"]),
    ("theres", &["there", "is"]),
    ("thnx", &["thanks"]),
    ("thx", &["thanks"]),
    ("tmr", &["tomorrow"]),
    ("tmrw", &["tomorrow"]),
    ("tonite", &["tonight"]),
    ("ty", &["thank", "you"]),
    ("u", &["you"]),
    ("ur", &["your"]),
    ("wanna", &["want", "to"]),
    ("whats", &["what", "is"]),
    ("whens", &["when", "is"]),
    ("wheres", &["where", "is"]),
    ("whos", &["who", "is"]),
    ("wont", &["will", "not"]),
    ("ya", &["you"]),
    ("yall", &["you", "all"]),
];

/// The longest key of `SHORTHAND`: longer words are not looked up.
const LONGEST_SHORTHAND: usize = 6;

/// The words `word` stands for, if it is shorthand.
fn shorthand(word: &[char]) -> Option<&'static [&'static str]> {
    if word.len() > LONGEST_SHORTHAND {
        return None;
    }
    // The keys are ASCII, so their order as strings is their order as
    // characters.
    let i = SHORTHAND
        .binary_search_by(|(key, _)| key.chars().cmp(word.iter().copied()))
        .ok()?;
    Some(SHORTHAND[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        features(text, &Thesaurus::default(), &mut out);
        out.into_iter().map(|(hash, _)| hash).collect()
    }

    #[test]
    fn deterministic_and_order_sensitive_only_in_bigrams() {
        assert_eq!(of("book a flight to paris"), of("book a flight to paris"));
        let mut a = of("red shoes");
        let mut b = of("shoes red");
        assert_ne!(a, b);
        a.sort_unstable();
        b.sort_unstable();
        // Same words and n-grams, different bigram.
        assert_eq!(a.len(), b.len());
        assert_eq!(a.iter().filter(|f| b.contains(f)).count(), a.len() - 1);
    }

    #[test]
    fn chinese_gets_character_ngrams() {
        // 4 unigrams + 3 bigrams + `<我`, `鞋>`, `<我要`, `跑鞋>`.
        assert_eq!(of("我要跑鞋").len(), 11);
        // Shares 跑, 鞋, 跑鞋, `鞋>` and `跑鞋>` with the above.
        let shared = of("买跑鞋")
            .iter()
            .filter(|f| of("我要跑鞋").contains(f))
            .count();
        assert_eq!(shared, 5);
        // One character: itself, `<嗨`, `嗨>`.
        assert_eq!(of("嗨").len(), 3);
    }

    #[test]
    fn shorthand_gives_the_words_it_stands_for() {
        assert!(SHORTHAND.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert!(SHORTHAND.iter().all(|(k, _)| k.len() <= LONGEST_SHORTHAND));
        let word = |w: &str| hash_chars(WORD, &w.chars().collect::<Vec<_>>());
        let f = of("r u open 2moro");
        for w in ["are", "you", "open", "tomorrow"] {
            assert!(f.contains(&word(w)), "{w}");
        }
        assert_eq!(of("thx"), of("thanks"));
        assert_eq!(
            of("whens ur pizza gonna come"),
            of("when is your pizza going to come")
        );
        // Only whole words: `ur` in `hour` is not `your`.
        assert!(!of("which hour").contains(&word("your")));
    }

    #[test]
    fn typos_share_char_ngrams() {
        let a = of("running");
        let b = of("runing");
        let shared = b.iter().filter(|f| a.contains(f)).count();
        assert!(shared * 2 > b.len(), "{shared} of {}", b.len());
    }

    #[test]
    fn mixed_scripts_and_numbers() {
        let f = of("我要听tfboys的歌 39");
        assert!(f.contains(&hash_chars(WORD, &"tfboys".chars().collect::<Vec<_>>())));
        assert!(f.contains(&hash_chars(NUMBER, &[])));
        assert!(f.contains(&hash_chars(CJK_NGRAM, &['的', '歌'])));
        assert!(of("!!! ...").is_empty());
    }
}
