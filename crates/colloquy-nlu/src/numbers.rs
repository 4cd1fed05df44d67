//! Numbers written with Arabic digits (`39`, `39.5`, `1,200`, full-width
//! `３９`) or Chinese numerals (`三十九`, `两百零五`, `三万五千`, `三点五`),
//! mixtures such as `3万`, a trailing half (`三十九码半`, `两个半`), and
//! English words up to ninety-nine (`two`, `twenty five`), which is how
//! people answer "how many?".

/// The value of a Chinese digit character, including the financial forms
/// (壹贰叁…), traditional 兩, and 幺 (how 1 is read out in phone numbers).
fn chinese_digit(c: char) -> Option<u32> {
    Some(match c {
        '零' | '〇' => 0,
        '一' | '壹' | '幺' => 1,
        '二' | '贰' | '貳' | '两' | '兩' => 2,
        '三' | '叁' | '參' => 3,
        '四' | '肆' => 4,
        '五' | '伍' => 5,
        '六' | '陆' | '陸' => 6,
        '七' | '柒' => 7,
        '八' | '捌' => 8,
        '九' | '玖' => 9,
        _ => return None,
    })
}

/// Multipliers inside a myriad group (十, 百, 千).
fn small_unit(c: char) -> Option<f64> {
    match c {
        '十' | '拾' => Some(10.0),
        '百' | '佰' => Some(100.0),
        '千' | '仟' => Some(1000.0),
        _ => None,
    }
}

/// Multipliers that close a myriad group (万, 亿).
fn big_unit(c: char) -> Option<f64> {
    match c {
        '万' | '萬' => Some(1e4),
        '亿' | '億' => Some(1e8),
        _ => None,
    }
}

/// ASCII or full-width digit; callers may pass text that was not normalised.
fn arabic_digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => c.to_digit(10),
        '０'..='９' => Some(c as u32 - '０' as u32),
        _ => None,
    }
}

fn is_decimal_point(c: char) -> bool {
    matches!(c, '.' | '．' | '点' | '點')
}

fn is_numeral_char(c: char) -> bool {
    chinese_digit(c).is_some() || small_unit(c).is_some() || big_unit(c).is_some()
}

/// `zero` to `ninety`: the words that can start an English number.
fn english_number(word: &str) -> Option<u32> {
    const WORDS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(n) = WORDS.iter().position(|&w| w == word) {
        return Some(n as u32);
    }
    TENS.iter()
        .position(|&w| w == word)
        .map(|n| 20 + 10 * n as u32)
}

/// `twenty` + `five`: a tens word and a unit word make one number. `tens`
/// is the value of a word, and the only words from 20 up are the tens.
fn english_compound(tens: u32, unit: &str) -> Option<u32> {
    let unit = english_number(unit).filter(|u| (1..=9).contains(u))?;
    (tens >= 20).then_some(tens + unit)
}

fn parse_english(s: &str) -> Option<f64> {
    let mut words = s.split([' ', '-']);
    let first = english_number(words.next()?)?;
    let value = match words.next() {
        None => first,
        Some(unit) => english_compound(first, unit)?,
    };
    words.next().is_none().then_some(f64::from(value))
}

/// Words between a number and 半 that say what the half is of: `三十九码半`
/// is size 39.5, `两个半` 2.5, `三点半` half past three.
fn is_half_unit(c: char) -> bool {
    matches!(
        c,
        '码' | '号' | '个' | '岁' | '斤' | '米' | '点' | '天' | '年'
    )
}

/// `s` without a trailing `<unit>半`, if it has one. A bare `N半` is not
/// a half: `一半` is "a half" and `两半` "two halves".
fn strip_half(s: &str) -> Option<&str> {
    s.strip_suffix('半')?.strip_suffix(is_half_unit)
}

/// Parses one whole number; `None` if any part of `s` (after trimming) is
/// not part of a number. An integer may end in a half: `39码半`,
/// `三十九码半` and `两个半` are 39.5, 39.5 and 2.5. Chinese integers follow the usual grammar, plus
/// the spoken shortcut where a final digit after a unit means the next
/// lower unit (`两百五` = 250, `三万五` = 35 000); a string of bare digits
/// is read digit by digit (`二零二四` = 2024). Fractions after 点 or `.`
/// are always read digit by digit.
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return parse_english(&s.to_lowercase());
    }
    if let Some(whole) = strip_half(s) {
        // Only a whole number takes a half: `3.5半` means nothing.
        let n = parse_number(whole).filter(|n| n.fract() == 0.0 && *n >= 0.0)?;
        return Some(n + 0.5);
    }
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let value = match s.char_indices().find(|&(_, c)| is_decimal_point(c)) {
        None => parse_integer(s)?,
        Some((i, point)) => {
            let int = parse_integer(&s[..i])?;
            let frac = &s[i + point.len_utf8()..];
            let last = frac.chars().last()?;
            // `1.5万`, `三点五亿`: a decimal scaled by a trailing unit.
            match big_unit(last).or_else(|| small_unit(last)) {
                Some(unit) => (int + parse_fraction(&frac[..frac.len() - last.len_utf8()])?) * unit,
                None => int + parse_fraction(frac)?,
            }
        }
    };
    // A long run of digits or of 亿 overflows to infinity: not a number
    // anyone meant, and not one JSON (hence the event log) can hold.
    let value = if negative { -value } else { value };
    value.is_finite().then_some(value)
}

fn parse_fraction(s: &str) -> Option<f64> {
    let mut value = 0.0;
    let mut scale = 0.1;
    let mut any = false;
    for c in s.chars() {
        let d = arabic_digit(c).or_else(|| chinese_digit(c))?;
        value += f64::from(d) * scale;
        scale /= 10.0;
        any = true;
    }
    any.then_some(value)
}

fn parse_integer(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    if !s
        .chars()
        .any(|c| small_unit(c).is_some() || big_unit(c).is_some())
    {
        return parse_digit_string(s);
    }
    let mut total = 0.0; // completed 万/亿 groups
    let mut section = 0.0; // the current group below 万
    let mut pending: Option<f64> = None; // a digit not yet given a unit
    let mut last_unit = f64::INFINITY; // the last unit, to reject 五百三千
    let mut after_zero = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(unit) = small_unit(c) {
            if unit >= last_unit || (pending.is_none() && unit != 10.0) {
                return None;
            }
            // 十九 and 一百一十 leave out the 一 before 十.
            section += pending.take().unwrap_or(1.0) * unit;
            last_unit = unit;
            after_zero = false;
        } else if let Some(unit) = big_unit(c) {
            let group = section + pending.take().unwrap_or(0.0);
            if group == 0.0 && total == 0.0 {
                return None;
            }
            total = if unit > 1e4 {
                (total + group) * unit
            } else {
                total + group * unit
            };
            section = 0.0;
            last_unit = unit;
            after_zero = false;
        } else if chinese_digit(c) == Some(0) {
            if pending.is_some() {
                return None;
            }
            after_zero = true;
        } else if let Some(d) = chinese_digit(c) {
            if pending.is_some() {
                return None;
            }
            pending = Some(f64::from(d));
        } else if arabic_digit(c).is_some() {
            // `3万`, `1,200万`: an Arabic number standing in for a digit.
            let mut run = String::from(c);
            while let Some(&next) = chars.peek() {
                if arabic_digit(next).is_none() && next != ',' {
                    break;
                }
                run.push(next);
                chars.next();
            }
            if pending.is_some() {
                return None;
            }
            pending = Some(parse_digit_string(&run)?);
        } else {
            return None;
        }
    }
    if let Some(d) = pending {
        // 两百五 = 250, but 一百零五 = 105 and 十五 = 15.
        let scale = if after_zero || last_unit.is_infinite() || last_unit == 10.0 {
            1.0
        } else if last_unit > 1e4 {
            1e7
        } else {
            last_unit / 10.0
        };
        section += d * scale;
    }
    Some(total + section)
}

/// Digits read one by one: Arabic (with `,` thousands separators) or
/// Chinese, but not mixed.
fn parse_digit_string(s: &str) -> Option<f64> {
    let mut value = 0.0;
    let mut any = false;
    let (mut arabic, mut chinese) = (false, false);
    for (i, c) in s.chars().enumerate() {
        if c == ',' && i > 0 {
            continue;
        }
        let d = if let Some(d) = arabic_digit(c) {
            arabic = true;
            d
        } else {
            chinese = true;
            chinese_digit(c)?
        };
        value = value * 10.0 + f64::from(d);
        any = true;
    }
    (any && !(arabic && chinese) && !s.ends_with(',')).then_some(value)
}

/// Measure words after which a lone 两 is a quantity of things, not a value
/// the user is giving (`两个`, `两双`).
fn is_measure_word(c: char) -> bool {
    matches!(
        c,
        '款' | '双'
            | '个'
            | '下'
            | '起'
            | '些'
            | '点'
            | '件'
            | '只'
            | '种'
            | '次'
            | '位'
            | '条'
            | '张'
    )
}

/// Words before which `one` is a pronoun (`that one`), not a number.
fn is_determiner(word: &str) -> bool {
    matches!(
        word,
        "a" | "the"
            | "this"
            | "that"
            | "which"
            | "each"
            | "every"
            | "any"
            | "another"
            | "other"
            | "some"
            | "no"
    )
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !crate::tokenize::is_cjk(c)
}

/// Every number in `text` (normalised, so full-width digits are already
/// ASCII), as `(start char, end char, value)` in order.
///
/// Deliberately conservative, because a policy waiting for a numeric slot
/// takes the first number it is given:
/// - a lone 一 followed by a Chinese character is not a number: 一下,
///   一起, 一款, 一样 and so on are far more common than "one" (`选一`, `一`
///   on its own, or `一,` still count);
/// - a lone 两 followed by a measure word (`两个`, `两双`, `两款`) is not a
///   number either;
/// - digits glued to a preceding Latin letter (`mp3`, `iphone15`) are part
///   of a name;
/// - 点 is a decimal point only between numerals (`三点五`), so `三点` is 3;
/// - a number starts at a digit or 十, never at a bare 百, 千, 万 or 亿;
/// - `one` after a determiner (`that one`, `which one`) is a pronoun.
pub fn find_numbers(text: &str) -> Vec<(usize, usize, f64)> {
    let chars: Vec<char> = text.chars().collect();
    let is_digit = |i: usize| chars.get(i).is_some_and(|&c| arabic_digit(c).is_some());
    let is_numeral = |i: usize| chars.get(i).is_some_and(|&c| is_numeral_char(c));
    let is_any_numeral = |i: usize| is_digit(i) || is_numeral(i);
    let mut found = Vec::new();
    let mut previous_word = String::new();
    let mut i = 0;
    while i < chars.len() {
        if is_letter(chars[i]) {
            let start = i;
            let word = |from: usize| -> (usize, String) {
                let end = (from..chars.len())
                    .find(|&j| !is_letter(chars[j]))
                    .unwrap_or(chars.len());
                (end, chars[from..end].iter().collect())
            };
            let (mut end, first) = word(start);
            if let Some(mut value) = english_number(&first) {
                let after = chars.get(end).copied();
                if matches!(after, Some(' ' | '-'))
                    && chars.get(end + 1).is_some_and(|&c| is_letter(c))
                {
                    let (next_end, next) = word(end + 1);
                    if let Some(compound) = english_compound(value, &next) {
                        (end, value) = (next_end, compound);
                    }
                }
                if !(value == 1 && is_determiner(&previous_word)) {
                    found.push((start, end, f64::from(value)));
                }
            }
            previous_word = first;
            i = end;
            continue;
        }
        let starts_number = is_digit(i)
            || chinese_digit(chars[i]).is_some()
            || (small_unit(chars[i]) == Some(10.0));
        if !starts_number {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        loop {
            if is_any_numeral(end) {
                end += 1;
            } else if chars.get(end) == Some(&',')
                && is_digit(end - 1)
                && (1..=3).all(|k| is_digit(end + k))
                && !is_digit(end + 4)
            {
                end += 4;
            } else if chars.get(end).is_some_and(|&c| is_decimal_point(c))
                && is_any_numeral(end - 1)
                && is_any_numeral(end + 1)
                && (is_digit(end - 1) == is_digit(end + 1))
            {
                end += 2;
            } else {
                break;
            }
        }
        let integral = !chars[start..end].iter().any(|&c| is_decimal_point(c));
        // `两个半` is 2.5, not the quantity word `两个`.
        let halved = integral
            && chars.get(end).is_some_and(|&c| is_half_unit(c))
            && chars.get(end + 1) == Some(&'半');
        if halved {
            end += 2;
        }
        i = end;
        let glued_to_name = start > 0 && chars[start - 1].is_ascii_alphabetic() && is_digit(start);
        if glued_to_name {
            continue;
        }
        if end - start == 1 && !halved {
            let next = chars.get(end).copied();
            let ambiguous = match chars[start] {
                '一' => next.is_some_and(crate::tokenize::is_cjk),
                '两' => next.is_some_and(is_measure_word),
                _ => false,
            };
            if ambiguous {
                continue;
            }
        }
        let run: String = chars[start..end].iter().collect();
        if let Some(value) = parse_number(&run) {
            found.push((start, end, value));
        }
    }
    found
}

/// `n` in Chinese numerals as people write them: `三十九`, `十五` (not
/// `一十五`), `一百零五`, `两千`… for `n` below 10 000. Used to teach the
/// classifier that `三十九码` is said like `39码`.
pub fn chinese_numeral(n: u32) -> Option<String> {
    const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];
    if n >= 10_000 {
        return None;
    }
    if n < 10 {
        return Some(DIGITS[n as usize].to_string());
    }
    let mut out = String::new();
    let mut zero = false;
    for (unit, scale) in [("千", 1000), ("百", 100), ("十", 10), ("", 1)] {
        let d = (n / scale % 10) as usize;
        if d == 0 {
            zero = !out.is_empty();
            continue;
        }
        if zero {
            out.push('零');
            zero = false;
        }
        // 十五, not 一十五; but 一百一十五 keeps it.
        if !(scale == 10 && d == 1 && out.is_empty()) {
            out.push(DIGITS[d]);
        }
        out.push_str(unit);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{chinese_numeral, find_numbers, parse_number};
    use proptest::prelude::*;

    /// The formal reading of `n < 10^8`: 一千零五, 三万零二百, 一十五.
    fn chinese(n: u64) -> String {
        const DIGITS: [char; 10] = ['零', '一', '二', '三', '四', '五', '六', '七', '八', '九'];
        fn group(n: u64, out: &mut String) {
            let mut zero = false;
            for (unit, scale) in [("千", 1000), ("百", 100), ("十", 10), ("", 1)] {
                let d = (n / scale % 10) as usize;
                if d == 0 {
                    zero = !out.is_empty();
                    continue;
                }
                if zero {
                    out.push('零');
                    zero = false;
                }
                out.push(DIGITS[d]);
                out.push_str(unit);
            }
        }
        let mut out = String::new();
        if n == 0 {
            out.push('零');
        } else if n >= 10_000 {
            group(n / 10_000, &mut out);
            out.push('万');
            let low = n % 10_000;
            if low > 0 {
                if low < 1000 {
                    out.push('零');
                }
                group(low, &mut out);
            }
        } else {
            group(n, &mut out);
        }
        out
    }

    proptest! {
        #[test]
        fn reads_every_chinese_integer(n in 0u64..100_000_000) {
            prop_assert_eq!(parse_number(&chinese(n)), Some(n as f64), "{}", chinese(n));
        }

        #[test]
        fn reads_every_arabic_integer(n in 0u64..1_000_000_000) {
            prop_assert_eq!(parse_number(&n.to_string()), Some(n as f64));
        }

        #[test]
        fn chinese_numerals_round_trip(n in 0u32..10_000) {
            let written = chinese_numeral(n).unwrap();
            prop_assert_eq!(parse_number(&written), Some(f64::from(n)), "{}", written);
            let found = find_numbers(&format!("要{written}码"));
            if written == "一" {
                // A lone 一 before a Chinese character is not read as a
                // number (一下, 一款, …); no size is 1 anyway.
                prop_assert_eq!(found, vec![]);
            } else {
                prop_assert_eq!(found, vec![(1, 1 + written.chars().count(), f64::from(n))]);
            }
        }

        #[test]
        fn halves_round_trip(n in 0u32..10_000, unit in "[码号个岁点]") {
            let written = format!("{}{unit}半", chinese_numeral(n).unwrap());
            prop_assert_eq!(parse_number(&written), Some(f64::from(n) + 0.5));
            prop_assert_eq!(parse_number(&format!("{n}{unit}半")), Some(f64::from(n) + 0.5));
        }

        #[test]
        fn never_panics_and_never_infinite(text in "[-0-9０-９.．,点半码个两兩一二三四五六七八九十百千万亿億 a-z]{0,40}") {
            if let Some(n) = parse_number(&text) {
                prop_assert!(n.is_finite());
            }
            for (_, _, n) in find_numbers(&text) {
                prop_assert!(n.is_finite());
            }
        }

        #[test]
        fn found_numbers_are_in_bounds_and_parse(text in "[a-z0-9 ,.一二两三十百千万零点个下码半]{0,24}") {
            let chars: Vec<char> = text.chars().collect();
            let mut last_end = 0;
            for (start, end, value) in find_numbers(&text) {
                prop_assert!(last_end <= start && start < end && end <= chars.len());
                let span: String = chars[start..end].iter().collect();
                prop_assert_eq!(parse_number(&span), Some(value));
                last_end = end;
            }
        }
    }

    #[test]
    fn chinese_numerals_table() {
        let cases: &[(&str, f64)] = &[
            ("零", 0.0),
            ("〇", 0.0),
            ("一", 1.0),
            ("幺", 1.0),
            ("两", 2.0),
            ("十", 10.0),
            ("十九", 19.0),
            ("二十", 20.0),
            ("三十九", 39.0),
            ("四十五", 45.0),
            ("一百", 100.0),
            ("一百零五", 105.0),
            ("一百一十", 110.0),
            ("一百一", 110.0),
            ("两百零五", 205.0),
            ("两百五", 250.0),
            ("二百五十", 250.0),
            ("一千二百", 1200.0),
            ("一千二", 1200.0),
            ("一千零二十", 1020.0),
            ("三万五千", 35000.0),
            ("三万五", 35000.0),
            ("十万", 100000.0),
            ("一万零一", 10001.0),
            ("一亿五千万", 150_000_000.0),
            ("两千零二十四", 2024.0),
            ("二零二四", 2024.0),
            ("幺三八", 138.0),
            ("三点五", 3.5),
            ("零点五", 0.5),
            ("十二点二五", 12.25),
            ("叁佰伍拾", 350.0),
            ("兩萬", 20000.0),
            ("3万", 30000.0),
            ("1.5万", 15000.0),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_number(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn arabic_numbers() {
        let cases: &[(&str, f64)] = &[
            ("39", 39.0),
            ("39.5", 39.5),
            ("1,200", 1200.0),
            ("1,200,000", 1_200_000.0),
            ("３９", 39.0),
            ("３９．５", 39.5),
            ("007", 7.0),
            ("-4", -4.0),
            (" 12 ", 12.0),
            ("two", 2.0),
            ("Twelve", 12.0),
            ("twenty five", 25.0),
            ("ninety-nine", 99.0),
            ("zero", 0.0),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_number(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn numbers_too_large_for_a_float_are_not_numbers() {
        let nines = "9".repeat(400);
        assert_eq!(parse_number(&nines), None);
        assert_eq!(parse_number(&format!("-{nines}")), None);
        assert_eq!(
            parse_number(&"亿".repeat(40).replacen('亿', "一亿", 1)),
            None
        );
        assert_eq!(parse_number(&format!("{nines}.5")), None);
        assert!(values(&format!("我脚长{nines}cm")).is_empty());
        assert!(values(&format!("一{}", "亿".repeat(40))).is_empty());
        // The largest finite ones still parse.
        assert!(parse_number(&"9".repeat(300)).is_some_and(|x| x > 9.9e299 && x.is_finite()));
    }

    #[test]
    fn rejects_non_numbers() {
        for text in [
            "",
            "abc",
            "百",
            "千",
            "万",
            "五百三千",
            "三三十",
            "点",
            "三点",
            "3a",
            "一3",
            "十十",
            "1,",
            ".",
        ] {
            assert_eq!(parse_number(text), None, "{text}");
        }
    }

    fn values(text: &str) -> Vec<f64> {
        find_numbers(text).into_iter().map(|(_, _, v)| v).collect()
    }

    #[test]
    fn finds_numbers_with_char_offsets() {
        assert_eq!(find_numbers("我穿三十九码"), vec![(2, 5, 39.0)]);
        assert_eq!(
            find_numbers("size 39 or 40.5"),
            vec![(5, 7, 39.0), (11, 15, 40.5)]
        );
        assert_eq!(find_numbers("价格1,200元"), vec![(2, 7, 1200.0)]);
        assert_eq!(values("两百零五块"), vec![205.0]);
        assert_eq!(values("三点五公斤"), vec![3.5]);
        assert_eq!(values("下午三点"), vec![3.0]);
        assert_eq!(values("3万以内"), vec![30000.0]);
        assert_eq!(values("一,二,三"), vec![1.0, 2.0, 3.0]);
        assert_eq!(values("第一"), vec![1.0]);
        assert_eq!(values("一"), vec![1.0]);
        assert_eq!(values("1, 2"), vec![1.0, 2.0]);
        assert_eq!(values("1,2345"), vec![1.0, 2345.0]);
    }

    #[test]
    fn conservative_about_ambiguous_words() {
        for text in [
            "等一下",
            "一起去",
            "推荐一款跑鞋",
            "买一双",
            "一些",
            "一点儿",
            "两个",
            "两双鞋",
            "mp3",
            "iphone15",
            "万一不合适",
        ] {
            assert_eq!(find_numbers(text), vec![], "{text}");
        }
        assert_eq!(values("两"), vec![2.0]);
        assert_eq!(values("两百"), vec![200.0]);
        assert_eq!(values("一百个"), vec![100.0]);
        assert_eq!(values("iphone 15"), vec![15.0]);
    }

    #[test]
    fn halves_and_ranges() {
        assert_eq!(parse_number("三十九码半"), Some(39.5));
        assert_eq!(parse_number("39码半"), Some(39.5));
        assert_eq!(parse_number("两个半"), Some(2.5));
        assert_eq!(parse_number("兩个半"), Some(2.5));
        assert_eq!(parse_number("３９码半"), Some(39.5));
        for text in [
            "半",
            "码半",
            "一半",
            "39半",
            "3.5个半",
            "39.5码半",
            "-3个半",
            "三十九码",
        ] {
            assert_eq!(parse_number(text), None, "{text}");
        }
        assert_eq!(find_numbers("我穿三十九码半"), vec![(2, 7, 39.5)]);
        assert_eq!(values("要两个半小时"), vec![2.5]);
        assert_eq!(values("三点半见"), vec![3.5]);
        assert_eq!(values("39.5码"), vec![39.5]);
        // A decimal takes no half, and a lone 两个 is still no number.
        assert_eq!(values("39.5码半"), vec![39.5]);
        assert_eq!(values("两个人"), vec![] as Vec<f64>);
        assert_eq!(values("吃了一半"), vec![] as Vec<f64>);
        // Both ends of a range, neither of them negative.
        assert_eq!(values("39-40"), vec![39.0, 40.0]);
        assert_eq!(find_numbers("39到40码"), vec![(0, 2, 39.0), (3, 5, 40.0)]);
        assert_eq!(values("三十九至四十码"), vec![39.0, 40.0]);
        assert_eq!(values("39~41"), vec![39.0, 41.0]);
    }

    #[test]
    fn writes_chinese_numerals_as_people_do() {
        let cases = [
            (0, "零"),
            (7, "七"),
            (10, "十"),
            (15, "十五"),
            (39, "三十九"),
            (105, "一百零五"),
            (115, "一百一十五"),
            (2024, "二千零二十四"),
        ];
        for (n, text) in cases {
            assert_eq!(chinese_numeral(n).as_deref(), Some(text));
        }
        assert_eq!(chinese_numeral(10_000), None);
    }

    #[test]
    fn finds_english_number_words() {
        assert_eq!(find_numbers("two large, please"), vec![(0, 3, 2.0)]);
        assert_eq!(find_numbers("make it twenty-five"), vec![(8, 19, 25.0)]);
        assert_eq!(values("one pizza and thirty two wings"), vec![1.0, 32.0]);
        assert_eq!(values("forty people"), vec![40.0]);
        assert!(values("I'll take that one").is_empty());
        assert!(values("which one is someone").is_empty());
        assert_eq!(values("我要two个"), vec![2.0]);
        assert_eq!(values("seven 7 七"), vec![7.0, 7.0, 7.0]);
    }
}
