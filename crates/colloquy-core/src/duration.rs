//! Durations as people write them in bots and settings: `500ms`, `30s`,
//! `5m` (or `5min`), `2h`, `1d`. One parser for every file colloquy reads,
//! and a serde adapter so that settings hold a [`Duration`] from the moment
//! they are read: a bad value is an error naming the key, never a silent 0.

use std::time::Duration;

/// What a bad value is told to look like.
pub const EXPECTED: &str = "a duration like 500ms, 30s, 5m, 2h or 1d";

/// Milliseconds in `s`; `None` unless it is a positive whole number
/// followed by a unit.
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|ms| *ms > 0)
}

/// `s` as a [`Duration`], as [`parse_ms`] reads it.
pub fn parse(s: &str) -> Option<Duration> {
    parse_ms(s).map(|ms| Duration::from_millis(ms as u64))
}

/// The shortest text [`parse`] reads back as `d` (whole milliseconds).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `#[serde(with = "colloquy_core::duration::text")]` on a `Duration`
/// field: written and read as text (`"30s"`).
pub mod text {
    use super::{format, parse, EXPECTED};
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| de::Error::custom(format!("`{text}` is not {EXPECTED}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse_ms("500ms"), Some(500));
        assert_eq!(parse_ms(" 30s "), Some(30_000));
        assert_eq!(parse_ms("5min"), Some(300_000));
        assert_eq!(parse_ms("2h"), Some(7_200_000));
        assert_eq!(parse_ms("1d"), Some(86_400_000));
        for bad in [
            "",
            "30",
            "s",
            "0s",
            "-1s",
            "1.5s",
            "3 weeks",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn format_reads_back() {
        for ms in [
            1,
            250,
            1000,
            1500,
            60_000,
            90_000,
            3_600_000,
            86_400_000 * 2,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Some(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn serde_adapter_names_the_bad_value() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct S {
            #[serde(with = "text")]
            wait: Duration,
        }
        let s: S = serde_json::from_str(r#"{"wait":"5m"}"#).unwrap();
        assert_eq!(s.wait, Duration::from_secs(300));
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"wait":"5m"}"#);
        let e = serde_json::from_str::<S>(r#"{"wait":"soon"}"#).unwrap_err();
        assert!(e.to_string().contains("`soon` is not a duration"), "{e}");
    }
}
