//! The known keys, read off the serialized defaults (the structs are the schema), and the check
//! that refuses unknown keys with a suggestion.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::Config;
use crate::monitor::budget::BudgetConfig;
use crate::notify::WebhookConfig;
use crate::problems::Problems;
use crate::source::file::FileConfig;
use crate::store::mongo::MongoConfig;

/// The known keys and their kinds, read off the serialized defaults.
pub(super) fn schema() -> Json {
    let mut prices = crate::event::prices::PriceTable::new();
    prices.insert(
        "<model>".into(),
        crate::event::prices::Price {
            input_per_million: 0.0,
            output_per_million: 0.0,
            cached_input_per_million: Some(0.0),
            currency: "$".into(),
        },
    );
    let mut budget = BudgetConfig::default();
    budget
        .models
        .insert("<model>".into(), crate::monitor::budget::ModelLimits::default());
    let with_optional_sections = Config {
        env_file: Some(Default::default()),
        budget,
        mongodb: Some(MongoConfig::default()),
        // Keys without a default are shown set, so that they count as known.
        file: vec![FileConfig {
            pattern: Some(String::new()),
            datefmt: Some(String::new()),
            ..FileConfig::default()
        }],
        prices,
        webhook: vec![WebhookConfig::default()],
        ..Config::default()
    };
    serde_json::to_value(with_optional_sections).unwrap_or(Json::Null)
}

/// Reports the keys `schema` does not know and takes them out of `table`, so that deserializing
/// the rest does not report them a second time.
pub(super) fn check_unknown_keys(table: &mut toml::Table, schema: &Json, prefix: &str, p: &mut Problems) {
    let Some(known) = schema.as_object() else {
        return;
    };
    // A table keyed by names the user chooses (`[prices."gpt-4o"]`): the schema holds one example
    // entry under a `<placeholder>` key, and every entry is checked against it.
    let map_entry = (known.len() == 1)
        .then(|| known.iter().next())
        .flatten()
        .filter(|(k, _)| k.starts_with('<'))
        .map(|(_, v)| v);
    let mut unknown = Vec::new();
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let known_value = known.get(key).or(map_entry);
        match known_value {
            None => {
                let mut problem = if prefix.is_empty() {
                    "is not a known key or section".to_string()
                } else {
                    format!("is not a known key in [{}]", section_name(prefix))
                };
                if let Some(hint) = suggest(key, prefix, schema_root()) {
                    problem.push_str(&format!("; did you mean `{hint}`?"));
                } else {
                    let names: Vec<&str> = known.keys().map(String::as_str).collect();
                    problem.push_str(&format!("; expected one of: {}", names.join(", ")));
                }
                p.add(&path, problem);
                unknown.push(key.clone());
            }
            Some(sub @ Json::Object(_)) => {
                if let toml::Value::Table(t) = value {
                    check_unknown_keys(t, sub, &path, p);
                }
            }
            // An array of tables ([[file]]): each entry against the one example entry.
            Some(Json::Array(example)) => {
                if let (Some(sub), toml::Value::Array(items)) = (example.first(), value) {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let toml::Value::Table(t) = item {
                            check_unknown_keys(t, sub, &format!("{path}[{i}]"), p);
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
    for key in unknown {
        table.remove(&key);
    }
}

/// `file[0]` → `file`, for "a known key in [file]".
fn section_name(prefix: &str) -> String {
    prefix.split('[').next().unwrap_or(prefix).to_string()
}

pub(super) fn schema_root() -> &'static Json {
    static ROOT: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    ROOT.get_or_init(schema)
}

/// Keys people look for in one section that live in another, where spelling alone would point
/// to the wrong one: a text log's times are read in the one `naive_timezone`, not a `[[file]]`
/// key (and not `budget.timezone`, which only says where the budget's days begin).
const ELSEWHERE: &[(&str, &str, &str)] = &[("file", "timezone", "naive_timezone")];

/// The closest known key: a near spelling in the same section, or the same name in another section.
pub(super) fn suggest(key: &str, section: &str, root: &Json) -> Option<String> {
    // Every (section, key) pair at any depth, sections included.
    fn walk(section: &str, v: &Json, out: &mut Vec<(String, String)>) {
        let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        for (k, sub) in v.as_object().into_iter().flatten() {
            out.push((section.to_string(), k.clone()));
            walk(&full(section, k), sub, out);
        }
    }
    fn full(s: &str, k: &str) -> String {
        if s.is_empty() {
            k.to_string()
        } else {
            format!("{s}.{k}")
        }
    }
    let section = section_name(section);
    if let Some((_, _, there)) = ELSEWHERE.iter().find(|(s, k, _)| *s == section && *k == key) {
        return Some(there.to_string());
    }
    let mut all = Vec::new();
    walk("", root, &mut all);
    let near = all
        .iter()
        .filter(|(s, _)| *s == section)
        .map(|(s, k)| (strsim::damerau_levenshtein(key, k), full(s, k)))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    near.or_else(|| {
        all.iter()
            .find(|(s, k)| k == key && *s != section)
            .map(|(s, k)| full(s, k))
    })
}

/// Names of all keys, for documentation tests: every key must appear in `config.example.toml`.
pub fn all_key_paths() -> BTreeSet<String> {
    fn walk(prefix: &str, v: &Json, out: &mut BTreeSet<String>) {
        if let Some(first) = v.as_array().and_then(|a| a.first()) {
            return walk(prefix, first, out);
        }
        match v.as_object() {
            Some(map) => {
                for (k, sub) in map {
                    walk(
                        &if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        },
                        sub,
                        out,
                    );
                }
            }
            None => {
                out.insert(prefix.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", &schema(), &mut out);
    out
}
