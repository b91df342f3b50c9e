//! Environment overrides: `LNGPT_COLLECTOR_<SECTION>_<KEY>` for every key, and the names the app
//! already uses (its `.env`) for the keys they mean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::problems::Problems;

/// Prefix of the environment variables that override keys: `LNGPT_COLLECTOR_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "LNGPT_COLLECTOR_";

/// The Python client's variables (clients/python), which an app and its daemon may share (a shell,
/// an `EnvironmentFile`): not configuration keys, so they are skipped rather than refused.
const CLIENT_ENV: &[&str] = &["LNGPT_COLLECTOR_SOCKET", "LNGPT_COLLECTOR_API"];
const CLIENT_ENV_PREFIX: &str = "LNGPT_COLLECTOR_CLIENT_";

/// A name the app reads (its `config.py`) and the key it sets.
struct AppName {
    var: &'static str,
    section: &'static str,
    key: &'static str,
}

const fn app(var: &'static str, section: &'static str, key: &'static str) -> AppName {
    AppName { var, section, key }
}

/// The app's names, read as the app reads them: the budget's limits and rate (`API_COST_LIMITS`),
/// its MongoDB (`ENABLE_MONGODB` is handled apart: it decides whether the other two count), and the
/// log level.
const APP_NAMES: &[AppName] = &[
    app("LOG_LEVEL", "log", "level"),
    app("API_HOURLY_LIMIT_RMB", "budget", "hourly_limit_rmb"),
    app("API_DAILY_LIMIT_RMB", "budget", "daily_limit_rmb"),
    app("API_USD_TO_RMB_RATE", "budget", "usd_to_rmb_rate"),
    app("MONGODB_URI", "mongodb", "uri"),
    app("MONGODB_DB_NAME", "mongodb", "database"),
];

/// Names earlier versions of this collector read for the budget, which the app never had: still
/// applied, with a warning naming the app's.
const RENAMED: &[(&str, &str)] = &[
    ("HOURLY_LIMIT_RMB", "API_HOURLY_LIMIT_RMB"),
    ("DAILY_LIMIT_RMB", "API_DAILY_LIMIT_RMB"),
    ("USD_TO_RMB_RATE", "API_USD_TO_RMB_RATE"),
];

/// Where a variable was set.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Process,
    /// The app's `.env` (`env_file`, `--env-file`).
    EnvFile(PathBuf),
}

/// The variables the configuration reads: the process environment, over the app's `.env` when one
/// is given (a name set in both keeps the process's value, as python-dotenv's `load_dotenv()` and
/// docker compose do: the operator's own setting for this daemon wins).
#[derive(Debug, Default)]
pub struct Environment {
    vars: BTreeMap<String, (String, Origin)>,
}

impl Environment {
    pub fn new(process: impl IntoIterator<Item = (String, String)>) -> Environment {
        Environment {
            vars: process.into_iter().map(|(k, v)| (k, (v, Origin::Process))).collect(),
        }
    }

    /// Adds what the `.env` file at `path` sets, under the names the process has not set.
    pub fn add_env_file(&mut self, path: &Path, vars: Vec<(String, Option<String>)>) {
        for (name, value) in vars {
            if let Some(value) = value {
                self.vars
                    .entry(name)
                    .or_insert((value, Origin::EnvFile(path.to_path_buf())));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|(v, _)| v.as_str())
    }

    /// `NAME`, or `NAME (in /srv/app/.env)`: where a value is blamed on or credited to.
    pub fn describe(&self, name: &str) -> String {
        match self.vars.get(name) {
            Some((_, Origin::EnvFile(path))) => format!("{name} (in {})", path.display()),
            _ => name.to_string(),
        }
    }

    /// The app's `ENABLE_MONGODB`, as its `config.py` reads it: true only for "true" in any case.
    fn app_enables_mongodb(&self) -> Option<bool> {
        self.get("ENABLE_MONGODB").map(|v| v.to_lowercase() == "true")
    }
}

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

/// Applies `LNGPT_COLLECTOR_<SECTION>_<KEY>` and the app's names; returns (key path, where it
/// came from) for each key set, and warnings.
///
/// Nested keys continue the name (`…_MONGODB_COLLECTIONS_API_LOGS`); an entry of an array of tables
/// is named by its position or by its `name` key (`…_FILE_0_PATH`, `…_WEBHOOK_OPS_SECRET`), so a
/// secret can come from an `EnvironmentFile` while the rest stays in the file. Where a prefixed
/// name and an app's name set the same key, the prefixed one wins.
pub(super) fn apply_env(
    table: &mut toml::Table,
    schema: &Json,
    env: &Environment,
    p: &mut Problems,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut applied = Vec::new();
    let mut warnings = Vec::new();
    let prefixed_set = |section: &str, key: &str| {
        let name = format!("{ENV_PREFIX}{section}_{key}").to_ascii_uppercase();
        env.get(&name).is_some()
    };
    // The app's ENABLE_MONGODB decides whether its MongoDB names count: the app ships
    // `ENABLE_MONGODB=false` with `MONGODB_URI` set. Unset, a URI alone chooses MongoDB.
    let mongodb_chosen = match env.get("LNGPT_COLLECTOR_MONGODB_ENABLED") {
        Some(v) => env_value(v, &Json::Bool(true)).ok().and_then(|v| v.as_bool()),
        None => env.app_enables_mongodb(),
    };
    let mut sets: Vec<(String, Vec<Segment>, String)> = Vec::new();
    if let (Some(enabled), false) = (env.app_enables_mongodb(), prefixed_set("mongodb", "enabled")) {
        let path = vec![Segment::Key("mongodb".into()), Segment::Key("enabled".into())];
        sets.push(("ENABLE_MONGODB".into(), path, enabled.to_string()));
        let file_enables = table
            .get("mongodb")
            .is_some_and(|m| m.get("enabled").and_then(|e| e.as_bool()) != Some(false));
        if !enabled && file_enables {
            warnings.push(format!(
                "{} turns off the [mongodb] section of the file: events go to the embedded store. To keep MongoDB, remove ENABLE_MONGODB or set LNGPT_COLLECTOR_MONGODB_ENABLED=true",
                env.describe("ENABLE_MONGODB")
            ));
        }
    }
    for (var, (raw, _)) in &env.vars {
        let renamed = RENAMED.iter().find(|(old, _)| old == var);
        let app_var = renamed.map_or(var.as_str(), |(_, new)| new);
        let app_name = APP_NAMES.iter().find(|a| a.var == app_var);
        let path: Vec<Segment> = if let Some(a) = app_name {
            if prefixed_set(a.section, a.key) {
                continue;
            }
            if let Some((old, new)) = renamed {
                if env.get(new).is_some() {
                    continue;
                }
                warnings.push(format!(
                    "{} is read for now, but the app names it {new}: rename it (the app does not read {old})",
                    env.describe(old)
                ));
            }
            if a.section == "mongodb" {
                let uri_set = ["MONGODB_URI", "LNGPT_COLLECTOR_MONGODB_URI"]
                    .iter()
                    .any(|n| env.get(n).is_some_and(|v| !v.is_empty()));
                let counts = match mongodb_chosen {
                    Some(chosen) => chosen,
                    // The app sets MONGODB_DB_NAME even without MongoDB; only a URI (or a
                    // [mongodb] section) chooses MongoDB as the store.
                    None => a.key == "uri" || uri_set || table.contains_key("mongodb"),
                };
                if !counts {
                    continue;
                }
            }
            vec![Segment::Key(a.section.to_string()), Segment::Key(a.key.to_string())]
        } else if CLIENT_ENV.contains(&var.as_str()) || var.starts_with(CLIENT_ENV_PREFIX) {
            continue;
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            match env_path(&rest.to_ascii_lowercase(), schema, table) {
                Ok(path) => path,
                Err(problem) => {
                    p.add_env(&env.describe(var), "", problem);
                    continue;
                }
            }
        } else {
            continue;
        };
        sets.push((var.clone(), path, raw.clone()));
    }
    for (var, path, raw) in sets {
        let key = dotted(&path);
        let origin = env.describe(&var);
        let kind = leaf_kind(&path, schema);
        let value = match env_value(&raw, kind) {
            Ok(v) => v,
            Err(expected) => {
                p.add_env(&origin, &key, format!("expects {expected}, got {raw:?}"));
                continue;
            }
        };
        match set_path(table, &path, value) {
            Ok(()) => applied.push((key, origin)),
            Err(problem) => p.add_env(&origin, &key, problem),
        }
    }
    (applied, warnings)
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
