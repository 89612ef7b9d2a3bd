//! The strict JSON parser every remote document goes through (tokens, key
//! sets, metadata, token responses): duplicate object members at any depth
//! are an error (RFC 8725 §3.11 / RFC 7515 §5.2), as are trailing bytes,
//! lone surrogates, non-finite numbers and nesting deeper than serde_json's
//! limit.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// A JSON object parsed with duplicate members rejected.
pub(crate) type Object = Map<String, Value>;

/// Parse a JSON object, rejecting duplicate members at any depth.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Object> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(StrictValue(Value::Object(map))) => Some(map),
        _ => None,
    }
}

/// A `serde_json::Value` whose deserializer refuses duplicate object keys.
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    // JSON `null` (serde_json never calls `visit_none` or `visit_string`
    // here; their defaults would refuse or forward to `visit_str`).
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member"));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_parser_keeps_every_json_type() {
        let text = br#"{"t":true,"f":false,"neg":-5,"pos":5,"big":18446744073709551615,"x":1.5,"s":"a\"b\u00e9","z":null,"a":[1,"x",[]],"o":{"k":{"v":-1}}}"#;
        let strict = Value::Object(parse_object(text).unwrap());
        let plain: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(strict, plain);
    }

    #[test]
    fn duplicate_members_are_rejected_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_none());
        assert!(parse_object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(parse_object(br#"{"a":[{"b":1,"b":1}]}"#).is_none());
        assert!(parse_object(br#"{"a":1,"b":2}"#).is_some());
    }

    #[test]
    fn non_objects_and_trailing_bytes_are_rejected() {
        assert!(parse_object(b"[]").is_none());
        assert!(parse_object(b"1").is_none());
        assert!(parse_object(br#"{"a":1} x"#).is_none());
        assert!(parse_object(br#"{"a":"\ud800"}"#).is_none());
    }

    #[test]
    fn deep_nesting_is_rejected_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse_object(format!("{{\"a\":{deep}").as_bytes()).is_none());
    }
}
