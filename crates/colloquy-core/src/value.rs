//! Slot values: the small set of types a slot can hold.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{self, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A slot's value, written untagged so that events and snapshots read
/// naturally in JSON and in SQL rows (`"星云跑鞋"`, `39`, `true`,
/// `["a","b"]`). A `Float` is always finite: JSON has no infinity, and
/// serde_json would write one as `null` and then fail to read it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Value>),
}

/// Refuses a non-finite float instead of writing it as `null`, so a bad
/// value fails the write that carries it, never the reads after it.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(x) if x.is_finite() => serializer.serialize_f64(*x),
            Value::Float(x) => Err(ser::Error::custom(format!("{x} is not a finite number"))),
            Value::Text(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// What `#[serde(untagged)]` would decode, without its way of getting
/// there: it tries each variant in turn and builds an error message for
/// every miss, which made reading a state or an event log several times
/// slower than it needs to be. A whole number becomes `Int` unless it does
/// not fit, then `Float`, as before.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, number, string or list")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Float(x))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Text(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::Text(s))
    }

    /// Before non-finite numbers were refused, serde_json wrote them as
    /// `null`, and such a log could not be read at all. The number is lost;
    /// an empty text keeps the rest of the log readable.
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Text(String::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
}

/// Reads an `f32` (a confidence) that is finite. A JSON number beyond
/// `f32`'s range reads as infinity, which serde_json then writes as `null`
/// and cannot read back: a record holding one is refused when read, as a
/// non-finite `Value` is when written.
pub(crate) fn finite_f32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
    let x = f32::deserialize(deserializer)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(de::Error::custom(format!(
            "{x} is not a finite 32-bit number"
        )))
    }
}

impl Value {
    /// The value as a finite number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        let x = match self {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Text(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        x.is_finite().then_some(x)
    }

    /// False for a non-finite float anywhere in the value, which cannot be
    /// stored.
    pub fn is_finite(&self) -> bool {
        match self {
            Value::Float(x) => x.is_finite(),
            Value::List(items) => items.iter().all(Value::is_finite),
            _ => true,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_they_were_written() {
        let values = vec![
            Value::Bool(true),
            Value::Int(-39),
            Value::Int(i64::MAX),
            Value::Float(24.5),
            Value::Float(2.0),
            Value::Text("星云跑鞋".into()),
            Value::Text("39".into()),
            Value::List(vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::List(vec![]),
            ]),
        ];
        for v in values {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), v, "{json}");
        }
        assert_eq!(
            serde_json::from_str::<Value>("18446744073709551615").unwrap(),
            Value::Float(u64::MAX as f64)
        );
        let err = serde_json::from_str::<Value>(r#"{"a":1}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("a boolean, number, string or list"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_floats_are_refused_when_written() {
        for x in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let err = serde_json::to_string(&Value::Float(x)).unwrap_err();
            assert!(err.to_string().contains("not a finite number"), "{err}");
            let nested = Value::List(vec![Value::Int(1), Value::Float(x)]);
            assert!(serde_json::to_string(&nested).is_err());
            assert!(!nested.is_finite());
        }
        assert!(Value::List(vec![Value::Float(1.5)]).is_finite());
        assert_eq!(Value::Text("1e400".into()).as_f64(), None);
        assert_eq!(Value::Text(" 39.5 ".into()).as_f64(), Some(39.5));
    }

    #[test]
    fn null_written_by_older_versions_reads_as_empty_text() {
        assert_eq!(
            serde_json::from_str::<Value>("null").unwrap(),
            Value::Text(String::new())
        );
        assert_eq!(
            serde_json::from_str::<Value>("[1,null]").unwrap(),
            Value::List(vec![Value::Int(1), Value::Text(String::new())])
        );
    }
}
