//! A JSON object parsed for the event parser: known field names go into fixed slots, found
//! without allocating a key; only unknown fields build a map, and that map becomes `extra`.
//!
//! Parsing into `serde_json::Map` and then removing the known fields one by one cost a B-tree
//! insert and remove per field; this keeps the same interface (`remove`, `get`, `contains_key`).

use std::fmt;

use std::cell::{Cell, RefCell};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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
    "traceback",
    "exc_text",
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
    "cached_input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
);

const SLOTS: usize = 47;

/// Why a line is not an object of fields.
#[derive(Debug)]
pub enum ParseError {
    /// Not JSON, or JSON but not an object (the caller parses again to say which).
    Json,
    /// A name appears twice in one object, so which value was meant is unknown. Holds the path of
    /// the repeated name: `cost`, `extra.a`, `ctx[1].k`.
    Duplicate(String),
}

pub struct Fields {
    slots: [Option<Value>; SLOTS],
    rest: Map<String, Value>,
    /// Exact digits of known fields whose value is an integer outside the 64-bit range; their
    /// slots hold the number as serde_json reads it (a float) so that type checks see a number.
    exact: Vec<(usize, String)>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}

impl Fields {
    pub fn new() -> Fields {
        Fields {
            slots: std::array::from_fn(|_| None),
            rest: Map::new(),
            exact: Vec::new(),
        }
    }

    /// Parses one JSON object into these (empty) fields; anything else (or trailing characters)
    /// is an error, and so is a name repeated in any object of the line. In place, because the
    /// slots are large: moving them around cost more than parsing some lines.
    ///
    /// Integers outside the 64-bit signed range (which serde_json turns into floats, and BSON cannot
    /// hold) are kept as strings of their exact digits. They are rare, so they cost a second pass:
    /// the first notices a number that may be one, the second parses again with every number
    /// token's digits at hand.
    pub fn parse(&mut self, text: &str) -> Result<(), ParseError> {
        let state = State::default();
        self.parse_with(text, &state)?;
        if !state.maybe_big_integer.get() {
            return Ok(());
        }
        *self = Fields::new();
        let state = State {
            numbers: Some(NumberTokens::of(text)),
            ..State::default()
        };
        self.parse_with(text, &state)
    }

    fn parse_with(&mut self, text: &str, state: &State) -> Result<(), ParseError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = de.deserialize_map(FieldsVisitor { state, fields: self });
        parsed
            .and_then(|()| de.end())
            .map_err(|_| match state.duplicate.take() {
                Some(path) => ParseError::Duplicate(path),
                None => ParseError::Json,
            })
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

    /// The exact digits of a known field's integer that lies outside the 64-bit range.
    pub fn exact_digits(&self, key: &str) -> Option<&str> {
        let slot = slot_of(key)?;
        self.exact.iter().find(|(i, _)| *i == slot).map(|(_, d)| d.as_str())
    }

    /// Everything not removed, known or not, under its original name; big integers as their
    /// digits. Leaves the fields empty.
    pub fn take_rest(&mut self) -> Map<String, Value> {
        let mut rest = std::mem::take(&mut self.rest);
        let mut exact = std::mem::take(&mut self.exact);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(v) = slot.take() {
                let v = match exact.iter().position(|(slot, _)| *slot == i) {
                    Some(at) => Value::String(exact.swap_remove(at).1),
                    None => v,
                };
                rest.insert(KNOWN[i].to_string(), v);
            }
        }
        rest
    }
}

/// What one parse of a line learns beside its values.
#[derive(Default)]
struct State {
    /// Set on a number that may come from an integer outside the 64-bit range: an unsigned one
    /// over `i64::MAX`, or a float that is whole and at least 2^63 in magnitude.
    maybe_big_integer: Cell<bool>,
    /// The path of a repeated name, built from the inside out as the error unwinds.
    duplicate: RefCell<Option<String>>,
    /// Second pass only: the line's number tokens, in order.
    numbers: Option<NumberTokens>,
    /// Second pass only: the digits of the big integer a known field just read, if it was one.
    known_field_digits: RefCell<Option<String>>,
}

impl State {
    fn repeated<E: de::Error>(&self, name: &str) -> E {
        *self.duplicate.borrow_mut() = Some(name.to_string());
        E::custom(format_args!("field `{name}` appears twice"))
    }

    /// Called as an error from inside a value unwinds through the field `name` (or array index).
    fn inside(&self, name: PathPart<'_>) {
        if let Some(path) = self.duplicate.borrow_mut().as_mut() {
            *path = match name {
                PathPart::Field(name) if path.starts_with('[') => format!("{name}{path}"),
                PathPart::Field(name) => format!("{name}.{path}"),
                PathPart::Index(i) if path.starts_with('[') => format!("[{i}]{path}"),
                PathPart::Index(i) => format!("[{i}].{path}"),
            };
        }
    }

    /// The next number token: its exact digits if it is an integer outside the 64-bit range.
    fn next_number(&self) -> Option<String> {
        self.numbers.as_ref().and_then(NumberTokens::next)
    }

    fn note_u64(&self, v: u64) {
        if v > i64::MAX as u64 {
            self.maybe_big_integer.set(true);
        }
    }

    fn note_f64(&self, v: f64) {
        if v.fract() == 0.0 && v.abs() >= TWO_POW_63 {
            self.maybe_big_integer.set(true);
        }
    }
}

const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

enum PathPart<'a> {
    Field(&'a str),
    Index(usize),
}

/// Every number token of a JSON text in order: for an integer outside the 64-bit signed range its
/// digits, for any other number `None`. serde_json reads numbers in the same order, one visit
/// each, so the n-th visit takes the n-th entry.
struct NumberTokens {
    tokens: Vec<Option<String>>,
    next: Cell<usize>,
}

impl NumberTokens {
    fn of(text: &str) -> NumberTokens {
        let b = text.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                        i += 1;
                    }
                    let token = &text[start..i];
                    let is_integer = !token.contains(['.', 'e', 'E']);
                    tokens.push((is_integer && token.parse::<i64>().is_err()).then(|| token.to_string()));
                }
                _ => i += 1,
            }
        }
        NumberTokens {
            tokens,
            next: Cell::new(0),
        }
    }

    fn next(&self) -> Option<String> {
        let n = self.next.get();
        self.next.set(n + 1);
        self.tokens.get(n).cloned().flatten()
    }
}

struct FieldsVisitor<'s, 'f> {
    state: &'s State,
    fields: &'f mut Fields,
}

impl<'de> Visitor<'de> for FieldsVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let FieldsVisitor { state, fields } = self;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Known(i) => {
                    if fields.slots[i].is_some() {
                        return Err(state.repeated(KNOWN[i]));
                    }
                    let value = map.next_value_seed(ValueSeed {
                        state,
                        keep_number: true,
                    });
                    let value = value.inspect_err(|_| state.inside(PathPart::Field(KNOWN[i])))?;
                    if let Some(digits) = state.known_field_digits.take() {
                        fields.exact.push((i, digits));
                    }
                    fields.slots[i] = Some(value);
                }
                Key::Other(name) => {
                    if fields.rest.contains_key(&name) {
                        return Err(state.repeated(&name));
                    }
                    let value = map.next_value_seed(ValueSeed {
                        state,
                        keep_number: false,
                    });
                    let value = value.inspect_err(|_| state.inside(PathPart::Field(&name)))?;
                    fields.rest.insert(name, value);
                }
            }
        }
        Ok(())
    }
}
/// A field's value as a `serde_json::Value`, with the two checks `Value`'s own `Deserialize` lacks:
/// names repeated inside objects, and integers outside the 64-bit range.
struct ValueSeed<'s> {
    state: &'s State,
    /// A known field's own value: a big integer stays a number (so that the field's type check
    /// sees a number) and its digits are noted; anywhere else it becomes a string of its digits.
    keep_number: bool,
}

impl ValueSeed<'_> {
    fn number(&self, n: Value) -> Value {
        match self.state.next_number() {
            Some(digits) if self.keep_number => {
                *self.state.known_field_digits.borrow_mut() = Some(digits);
                n
            }
            Some(digits) => Value::String(digits),
            None => n,
        }
    }

    fn nested(&self) -> ValueSeed<'_> {
        ValueSeed {
            state: self.state,
            keep_number: false,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(self.number(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        self.state.note_u64(v);
        Ok(self.number(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        self.state.note_f64(v);
        Ok(self.number(Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let item = seq.next_element_seed(self.nested());
            match item.inspect_err(|_| self.state.inside(PathPart::Index(items.len())))? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(self.state.repeated(&key));
            }
            let value = map.next_value_seed(self.nested());
            let value = value.inspect_err(|_| self.state.inside(PathPart::Field(&key)))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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

    fn parse(text: &str) -> Result<Fields, ParseError> {
        let mut fields = Fields::new();
        fields.parse(text).map(|()| fields)
    }

    #[test]
    fn every_known_name_has_its_own_slot() {
        assert_eq!(KNOWN.len(), SLOTS);
        for (i, name) in KNOWN.iter().enumerate() {
            assert_eq!(slot_of(name), Some(i));
        }
    }

    #[test]
    fn known_and_unknown_fields_round_trip() {
        let mut f = parse(r#"{"message": "m", "x\u0041": 1, "level": "INFO"}"#).unwrap();
        assert_eq!(f.remove("message"), Some(Value::from("m")));
        assert!(f.contains_key("level") && f.contains_key("xA"));
        let rest = f.take_rest();
        assert_eq!(rest.len(), 2);
        assert!(matches!(parse("[1]"), Err(ParseError::Json)));
        assert!(matches!(parse("{} x"), Err(ParseError::Json)));
    }

    #[test]
    fn a_repeated_name_is_an_error_naming_its_path() {
        let dup = |text: &str| match parse(text) {
            Err(ParseError::Duplicate(path)) => path,
            other => panic!(
                "{text}: expected a duplicate, got {:?}",
                other.map(|mut f| f.take_rest())
            ),
        };
        assert_eq!(dup(r#"{"message": "m", "message": "last"}"#), "message");
        assert_eq!(dup(r#"{"x": 1, "y": 2, "x": 1}"#), "x");
        assert_eq!(dup(r#"{"x\u0041": 1, "xA": 2}"#), "xA");
        assert_eq!(
            dup(r#"{"extra": {"a": {"b": [0, {"c": 1, "c": 1}]}}}"#),
            "extra.a.b[1].c"
        );
    }

    #[test]
    fn big_integers_become_strings_except_as_direct_known_values() {
        let mut f = parse(r#"{"line": 99999999999999999999, "z": {"n": -99999999999999999999}}"#).unwrap();
        assert_eq!(f.exact_digits("line"), Some("99999999999999999999"));
        assert_eq!(f.remove("line").and_then(|v| v.as_f64()), Some(1e20));
        let mut f = parse(r#"{"line": 99999999999999999999, "z": {"n": -99999999999999999999}}"#).unwrap();
        assert_eq!(f.remove("z"), Some(serde_json::json!({"n": "-99999999999999999999"})));
        assert_eq!(f.take_rest()["line"], "99999999999999999999");
    }
}
