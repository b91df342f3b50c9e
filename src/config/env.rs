//! Environment overrides: `LNGPT_COLLECTOR_<SECTION>_<KEY>` for every key, and the names the app
//! already uses (its `.env`) for the keys they mean.

use serde_json::Value as Json;

use crate::problems::Problems;

/// Prefix of the environment variables that override keys: `LNGPT_COLLECTOR_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "LNGPT_COLLECTOR_";

/// The Python client's variables (clients/python), which an app and its daemon may share (a shell,
/// an `EnvironmentFile`): not configuration keys, so they are skipped rather than refused.
const CLIENT_ENV: &[&str] = &["LNGPT_COLLECTOR_SOCKET", "LNGPT_COLLECTOR_API"];
const CLIENT_ENV_PREFIX: &str = "LNGPT_COLLECTOR_CLIENT_";

/// The names the Python app already uses, and the keys they set.
const APP_ENV: &[(&str, &str, &str)] = &[
    ("LOG_LEVEL", "log", "level"),
    ("HOURLY_LIMIT_RMB", "budget", "hourly_limit_rmb"),
    ("DAILY_LIMIT_RMB", "budget", "daily_limit_rmb"),
    ("USD_TO_RMB_RATE", "budget", "usd_to_rmb_rate"),
    ("MONGODB_URI", "mongodb", "uri"),
    ("MONGODB_DB_NAME", "mongodb", "database"),
];

/// One segment of a key path: a table key, or an entry of an array of tables.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if s.is_empty() => s.push_str(k),
            Segment::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Applies `LNGPT_COLLECTOR_<SECTION>_<KEY>` and the app's names; returns (key path, variable) pairs.
///
/// Nested keys continue the name (`…_MONGODB_COLLECTIONS_API_LOGS`); an entry of an array of tables
/// is named by its position or by its `name` key (`…_FILE_0_PATH`, `…_WEBHOOK_OPS_SECRET`), so a
/// secret can come from an `EnvironmentFile` while the rest stays in the file.
pub(super) fn apply_env(
    table: &mut toml::Table,
    schema: &Json,
    env: impl IntoIterator<Item = (String, String)>,
    p: &mut Problems,
) -> Vec<(String, String)> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env.into_iter().collect();
    vars.sort();
    for (var, raw) in &vars {
        let app_name = APP_ENV.iter().find(|(name, ..)| name == var);
        let path: Vec<Segment> = if let Some((_, section, key)) = app_name {
            // The prefixed form wins when both are set.
            let prefixed = format!("{ENV_PREFIX}{}_{}", section, key).to_ascii_uppercase();
            if vars.iter().any(|(k, _)| *k == prefixed) {
                continue;
            }
            // The app sets MONGODB_DB_NAME even without MongoDB; only a URI (or a [mongodb]
            // section) chooses MongoDB as the store.
            let uri_set = vars
                .iter()
                .any(|(k, v)| (k == "MONGODB_URI" || k == "LNGPT_COLLECTOR_MONGODB_URI") && !v.is_empty());
            if *var == "MONGODB_DB_NAME" && !uri_set && !table.contains_key("mongodb") {
                continue;
            }
            vec![Segment::Key(section.to_string()), Segment::Key(key.to_string())]
        } else if CLIENT_ENV.contains(&var.as_str()) || var.starts_with(CLIENT_ENV_PREFIX) {
            continue;
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            match env_path(&rest.to_ascii_lowercase(), schema, table) {
                Ok(path) => path,
                Err(problem) => {
                    p.add_env(var, "", problem);
                    continue;
                }
            }
        } else {
            continue;
        };
        let key = dotted(&path);
        let kind = leaf_kind(&path, schema);
        let value = match env_value(raw, kind) {
            Ok(v) => v,
            Err(expected) => {
                p.add_env(var, &key, format!("expects {expected}, got {raw:?}"));
                continue;
            }
        };
        match set_path(table, &path, value) {
            Ok(()) => applied.push((key, var.clone())),
            Err(problem) => p.add_env(var, &key, problem),
        }
    }
    applied
}

/// The schema's example value at `path` (arrays of tables have one example entry).
fn leaf_kind<'a>(path: &[Segment], schema: &'a Json) -> &'a Json {
    path.iter()
        .try_fold(schema, |s, seg| match seg {
            Segment::Key(k) => s.get(k),
            Segment::Index(_) => s.get(0),
        })
        .unwrap_or(&Json::Null)
}

/// Resolves the part of a variable's name after the prefix, lowercased, against the schema.
/// Underscores separate levels and also occur inside names, so the longest known name wins.
fn env_path(rest: &str, schema: &Json, table: &toml::Table) -> Result<Vec<Segment>, String> {
    fn walk(rest: &str, schema: &Json, file: Option<&toml::Value>, out: &mut Vec<Segment>) -> bool {
        let Some(keys) = schema.as_object() else {
            return false;
        };
        let mut candidates: Vec<&String> = keys
            .keys()
            .filter(|k| rest == k.as_str() || rest.starts_with(&format!("{k}_")))
            .collect();
        candidates.sort_by_key(|k| std::cmp::Reverse(k.len()));
        for k in candidates {
            let sub = &keys[k.as_str()];
            let file_sub = file.and_then(|f| f.get(k.as_str()));
            out.push(Segment::Key(k.clone()));
            let table_array = sub.get(0).is_some_and(Json::is_object);
            if rest == k.as_str() {
                if !sub.is_object() && !table_array {
                    return true;
                }
            } else {
                let tail = &rest[k.len() + 1..];
                if sub.is_object() && walk(tail, sub, file_sub, out) {
                    return true;
                }
                if let (true, Some(example), Some(entries)) =
                    (table_array, sub.get(0), file_sub.and_then(|f| f.as_array()))
                {
                    // `<index>_<key>` or `<name>_<key>`, the name lowercased with `-` as `_`.
                    for (i, entry) in entries.iter().enumerate() {
                        let name = entry
                            .get("name")
                            .and_then(|n| n.as_str())
                            .map(|n| n.to_ascii_lowercase().replace('-', "_"));
                        for label in [Some(i.to_string()), name].into_iter().flatten() {
                            if let Some(key_part) = tail.strip_prefix(&format!("{label}_")) {
                                out.push(Segment::Index(i));
                                if walk(key_part, example, Some(entry), out) {
                                    return true;
                                }
                                out.pop();
                            }
                        }
                    }
                }
            }
            out.pop();
        }
        false
    }
    let mut out = Vec::new();
    let root = toml::Value::Table(table.clone());
    if walk(rest, schema, Some(&root), &mut out) {
        return Ok(out);
    }
    let hint = suggest_env(rest, schema)
        .map(|h| format!("; did you mean {h}?"))
        .unwrap_or_default();
    Err(format!(
        "names no configuration key{hint} (the form is {ENV_PREFIX}<SECTION>_<KEY>; an entry of [[file]] or \
         [[webhook]] is named by its position or its name, e.g. {ENV_PREFIX}FILE_0_PATH)"
    ))
}

fn set_path(table: &mut toml::Table, path: &[Segment], value: toml::Value) -> Result<(), String> {
    let (last, parents) = match path.split_last() {
        Some((Segment::Key(k), parents)) => (k, parents),
        _ => return Err("names no key".into()),
    };
    let mut current = table;
    let mut i = 0;
    while i < parents.len() {
        let Segment::Key(section) = &parents[i] else {
            return Err("names no key".into());
        };
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match (entry, parents.get(i + 1)) {
            (toml::Value::Array(items), Some(Segment::Index(n))) => {
                i += 1;
                match items.get_mut(*n) {
                    Some(toml::Value::Table(t)) => t,
                    _ => return Err(format!("the file has no [[{section}]] entry {n}")),
                }
            }
            (toml::Value::Table(t), _) => t,
            _ => {
                return Err(format!(
                    "`{section}` is not a section in the file, so it cannot take a key"
                ))
            }
        };
        i += 1;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn suggest_env(rest: &str, schema: &Json) -> Option<String> {
    fn names(prefix: &str, v: &Json, out: &mut Vec<String>) {
        let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        match v.as_object() {
            Some(map) => {
                for (k, sub) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    names(&name, sub, out);
                }
            }
            None => out.push(prefix.to_ascii_uppercase()),
        }
    }
    let mut all = Vec::new();
    names("", schema, &mut all);
    let rest = rest.to_ascii_uppercase();
    all.into_iter()
        .map(|n| (strsim::damerau_levenshtein(&rest, &n), n))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| format!("{ENV_PREFIX}{n}"))
}

/// Converts an environment string to the TOML value the key's default has the kind of.
fn env_value(raw: &str, kind: &Json) -> Result<toml::Value, &'static str> {
    Ok(match kind {
        Json::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err("true or false"),
        },
        Json::Number(n) if n.is_f64() => toml::Value::Float(raw.trim().parse().map_err(|_| "a number")?),
        Json::Number(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| "a whole number")?),
        Json::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}
