//! The strict JSON parser every remote document goes through (tokens, key
//! sets, metadata, token responses): duplicate object members at any depth
//! are an error (RFC 8725 §3.11 / RFC 7515 §5.2), as are trailing bytes,
//! lone surrogates, non-finite numbers and nesting deeper than serde_json's
//! limit.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
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

/// Parse a JSON object as strictly as [`parse_object`], except the elements
/// of its array member `list`: each is `None` when it is not a strict JSON
/// object itself (a duplicate member, which RFC 7517 §4 says to reject such
/// a key for; a lone surrogate; nesting too deep), and the others stay
/// usable. Nesting depth counts from each member and element. The elements
/// come apart from the object, and only when `list` is present and an array.
pub(crate) fn parse_object_with_list(
    bytes: &[u8],
    list: &str,
) -> Option<(Object, Option<Vec<Option<Object>>>)> {
    let Members(members) = serde_json::from_slice::<Members<'_>>(bytes).ok()?;
    let mut out = Map::new();
    let mut elements = None;
    for (name, raw) in members {
        let text = raw.get().as_bytes();
        if name == list
            && let Ok(items) = serde_json::from_slice::<Vec<&RawValue>>(text)
        {
            elements = Some(
                items
                    .iter()
                    .map(|i| parse_object(i.get().as_bytes()))
                    .collect(),
            );
            continue;
        }
        let StrictValue(value) = serde_json::from_slice(text).ok()?;
        out.insert(name, value);
    }
    Some((out, elements))
}

/// An object's members, unparsed; a duplicate member is an error.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut out: Vec<(String, &'a RawValue)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    out.push((key, map.next_value()?));
                }
                Ok(Members(out))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
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
        for doc in [format!("{{\"l\":[{deep}"), format!("{{\"a\":{deep}")] {
            assert!(parse_object_with_list(doc.as_bytes(), "l").is_none());
        }
        for depth in [200, 100_000] {
            let closed = format!("{{\"l\":[{}{}]}}", "[".repeat(depth), "]".repeat(depth));
            let (_, list) = parse_object_with_list(closed.as_bytes(), "l").unwrap();
            assert_eq!(list, Some(vec![None]), "too deep is one bad element");
        }
    }

    #[test]
    fn a_list_element_with_a_duplicate_is_none_the_rest_is_strict() {
        let (object, list) = parse_object_with_list(
            br#"{"a":1,"l":[{"k":1},{"k":1,"k":2},"s",{"k":"\ud800"}]}"#,
            "l",
        )
        .unwrap();
        assert_eq!(Value::Object(object), serde_json::json!({"a":1}));
        let list = list.unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0].as_ref().map(|o| o.len()), Some(1));
        assert!(list[1..].iter().all(Option::is_none));
        // Not an array: an ordinary member, and no list.
        let (object, list) = parse_object_with_list(br#"{"l":{"k":1}}"#, "l").unwrap();
        assert_eq!(Value::Object(object), serde_json::json!({"l":{"k":1}}));
        assert_eq!(list, None);
        for bad in [
            &br#"{"l":[],"l":[]}"#[..],
            br#"{"a":1,"a":1,"l":[]}"#,
            br#"{"a":{"b":1,"b":1},"l":[]}"#,
            br#"{"l":[]} x"#,
            br#"[{"l":[]}]"#,
            br#"{"l":[{"k":1}"#,
        ] {
            assert!(
                parse_object_with_list(bad, "l").is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
