//! Turns normalised text into hashed features for the intent classifier.
//!
//! Chinese has no spaces, so runs of CJK characters give character
//! unigrams, bigrams and trigrams (bigrams approximate words without a
//! segmenter and its dictionary). Latin and digit runs give words, word
//! bigrams, and character 3- to 5-grams of each word with boundary marks
//! (`<ru`, `run`, `ns>`), so that `running`, `runs` and the typo `runing`
//! still share most of their features.
//!
//! A feature is a 64-bit hash of its kind and characters, so no strings
//! are built and two features collide with negligible probability.

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

// Distinct seeds per kind so that the word `abc` and the trigram `abc`
// are different features.
const WORD: u64 = 1;
const WORD_BIGRAM: u64 = 2;
const CHAR_NGRAM: u64 = 3;
const CJK_NGRAM: u64 = 4;
const NUMBER: u64 = 5;

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

fn hash_chars(kind: u64, chars: &[char]) -> u64 {
    let mut h = FNV_OFFSET ^ kind.wrapping_mul(FNV_PRIME);
    for &c in chars {
        h = (h ^ u64::from(c)).wrapping_mul(FNV_PRIME);
    }
    finish(h)
}

/// Appends the features of `text` (already normalised) to `out`; a feature
/// that occurs twice is pushed twice, so callers can count frequencies.
fn flags() -> &'static (bool, bool, bool, usize, usize) {
    static F: std::sync::OnceLock<(bool, bool, bool, usize, usize)> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let g = |k: &str, d: usize| std::env::var(k).ok().map_or(d, |v| v.parse().unwrap());
        (g("F_WORD", 1) == 1, g("F_BI", 1) == 1, g("F_CH", 1) == 1, g("F_CMIN", 3), g("F_CMAX", 5))
    })
}

pub fn features(text: &str, out: &mut Vec<u64>) {
    let f = flags();
    let chars: Vec<char> = text.chars().collect();
    let mut previous_word: Option<u64> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if is_cjk(c) {
            while i < chars.len() && is_cjk(chars[i]) {
                i += 1;
            }
            cjk_features(&chars[start..i], out);
            previous_word = None;
        } else if is_word_char(c) {
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let word = hash_chars(WORD, &chars[start..i]);
            if f.0 { out.push(word); }
            if let Some(previous) = previous_word {
                if f.1 { out.push(finish(previous ^ word.rotate_left(17) ^ WORD_BIGRAM)); }
            }
            previous_word = Some(word);
            if f.2 { word_features(&chars[start..i], out); }
        } else {
            i += 1;
        }
    }
}

fn cjk_features(run: &[char], out: &mut Vec<u64>) {
    for n in 1..=3 {
        for gram in run.windows(n) {
            out.push(hash_chars(CJK_NGRAM, gram));
        }
    }
}

fn word_features(word: &[char], out: &mut Vec<u64>) {
    if word.iter().any(char::is_ascii_digit) {
        out.push(hash_chars(NUMBER, &[]));
        if word.iter().all(char::is_ascii_digit) {
            return;
        }
    }
    // Boundary marks cannot occur inside a word, which is alphanumeric.
    let mut marked = Vec::with_capacity(word.len() + 2);
    marked.push('<');
    marked.extend_from_slice(word);
    marked.push('>');
    for n in flags().3..=flags().4 {
        for gram in marked.windows(n) {
            out.push(hash_chars(CHAR_NGRAM, gram));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Vec<u64> {
        let mut out = Vec::new();
        features(text, &mut out);
        out
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
        // 4 unigrams + 3 bigrams + 2 trigrams.
        assert_eq!(of("我要跑鞋").len(), 9);
        // Shares 跑, 鞋 and 跑鞋 with the above.
        let shared = of("买跑鞋").iter().filter(|f| of("我要跑鞋").contains(f)).count();
        assert_eq!(shared, 3);
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
