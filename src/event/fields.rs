//! A JSON object parsed for the event parser: known field names go into fixed slots, found
//! without allocating a key; only unknown fields build a map, and that map becomes `extra`.
//!
//! Parsing into `serde_json::Map` and then removing the known fields one by one cost a B-tree
//! insert and remove per field; this keeps the same interface (`remove`, `get`, `contains_key`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

macro_rules! known_fields {
    ($($name:literal),* $(,)?) => {
        const KNOWN: &[&str] = &[$($name),*];

        fn slot_of(key: &str) -> Option<usize> {
            let mut i = 0;
            $(
                if key == $name {
                    return Some(i);
                }
                i += 1;
            )*
            let _ = i;
            None
        }
    };
}

// Every name the parser looks for, in any kind of event.
known_fields!(
    "type",
    "timestamp",
    "created_at",
    "created",
    "level",
    "levelname",
    "message",
    "msg",
    "module",
    "function",
    "funcName",
    "line",
    "lineno",
    "logger",
    "name",
    "extra",
    "model",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "cost",
    "currency_symbol",
    "currency",
    "input_tokens",
    "gen_ai.usage.input_tokens",
    "prompt_tokens",
    "gen_ai.usage.prompt_tokens",
    "output_tokens",
    "gen_ai.usage.output_tokens",
    "completion_tokens",
    "gen_ai.usage.completion_tokens",
    "total_tokens",
    "provider",
    "gen_ai.provider.name",
    "gen_ai.system",
    "request_id",
    "response_time",
    "duration",
    "duration_ms",
    "status",
    "ok",
    "error",
    "first_chunk_time",
    "chunk_count",
);

const SLOTS: usize = 43;

pub struct Fields {
    slots: [Option<Value>; SLOTS],
    rest: Map<String, Value>,
}

impl Fields {
    /// Parses one JSON object; anything else (or trailing characters) is an error.
    pub fn parse(text: &str) -> Result<Fields, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = de.deserialize_map(FieldsVisitor)?;
        de.end()?;
        Ok(fields)
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        match slot_of(key) {
            Some(i) => self.slots[i].take(),
            None => self.rest.remove(key),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match slot_of(key) {
            Some(i) => self.slots[i].as_ref(),
            None => self.rest.get(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Everything not removed, known or not, under its original name.
    pub fn into_rest(self) -> Map<String, Value> {
        let mut rest = self.rest;
        for (i, v) in self.slots.into_iter().enumerate() {
            if let Some(v) = v {
                rest.insert(KNOWN[i].to_string(), v);
            }
        }
        rest
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields {
            slots: std::array::from_fn(|_| None),
            rest: Map::new(),
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: Value = map.next_value()?;
            match key {
                Key::Known(i) => fields.slots[i] = Some(value),
                Key::Other(name) => {
                    fields.rest.insert(name, value);
                }
            }
        }
        Ok(fields)
    }
}

enum Key {
    Known(usize),
    Other(String),
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(slot_of(key).map_or_else(|| Key::Other(key.to_string()), Key::Known))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Key, E> {
        Ok(slot_of(&key).map_or(Key::Other(key), Key::Known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_has_its_own_slot() {
        assert_eq!(KNOWN.len(), SLOTS);
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(slot_of(name), Some(i));
        }
    }

    #[test]
    fn known_and_unknown_fields_round_trip() {
        let mut f =
            Fields::parse(r#"{"message": "m", "x\u0041": 1, "level": "INFO", "message": "last wins"}"#).unwrap();
        assert_eq!(f.remove("message"), Some(Value::from("last wins")));
        assert!(f.contains_key("level") && f.contains_key("xA"));
        let rest = f.into_rest();
        assert_eq!(rest.len(), 2);
        assert!(Fields::parse("[1]").is_err());
        assert!(Fields::parse("{} x").is_err());
    }
}
