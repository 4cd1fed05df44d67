use unicode_normalization::UnicodeNormalization;

/// Canonical form of a user message that everything downstream sees (and
/// that entity offsets refer to): NFKC, so full-width `３９` and `ＡＢＣ`
/// become ASCII; lowercase; control and zero-width characters dropped; any
/// run of whitespace (tabs, newlines, U+3000) collapsed into one space and
/// trimmed at both ends.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Starting "inside" a space trims leading whitespace for free.
    let mut pending_space = false;
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if !c.is_control() && !is_invisible(c) {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Format characters that users paste in from other apps; they are not
/// `is_control` but would split words and shift offsets.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}' | '\u{00ad}'
    )
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn folds_width_case_and_space() {
        assert_eq!(normalize("  Hello\t\nWORLD  "), "hello world");
        assert_eq!(normalize("３９码"), "39码");
        assert_eq!(normalize("ＡＢＣ　ｄｅｆ"), "abc def");
        assert_eq!(normalize("我要\u{200b}买\u{7}鞋"), "我要买鞋");
        assert_eq!(normalize("ＮＩＫＥ，好"), "nike,好");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{3000} "), "");
    }

    proptest::proptest! {
        #[test]
        fn idempotent(text in "[a-zA-Z0-9 \t\n,.!?ÄÖÜäöüİﬁ①ＡＢｃ１２３　，。三十九码\u{200b}\u{7}]{0,30}") {
            let once = normalize(&text);
            proptest::prop_assert_eq!(normalize(&once), once.clone());
            proptest::prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
        }
    }
}
