//! Configuration: a TOML file, environment overrides, and validation with precise messages.
//!
//! Loading goes file → TOML table → environment overrides → unknown-key check → typed structs →
//! range checks. The known keys are read off the serialized defaults, so the schema is the structs
//! themselves and a new key needs no second list. Every error names where the value came from (the
//! file or the environment variable), the key, what is wrong and what is expected.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;

/// Prefix of the environment variables that override keys: `LNGPT_COLLECTOR_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "LNGPT_COLLECTOR_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Embedded store, outbox and checkpoints live here; created if missing.
    pub state_dir: PathBuf,
    pub socket: SocketConfig,
    /// Tailed files: `[[file]]`, any number.
    pub file: Vec<FileConfig>,
    pub pipeline: PipelineConfig,
    pub retention: RetentionConfig,
    pub redact: RedactConfig,
    pub embedded: EmbeddedConfig,
    /// Present (and not `enabled = false`): MongoDB holds the collections and the embedded file
    /// only the outbox. Absent: the embedded store serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<MongoConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    pub enabled: bool,
    /// A MongoDB connection string; credentials and TLS options go in it (`MONGODB_URI` overrides).
    pub uri: String,
    /// `MONGODB_DB_NAME` overrides.
    pub database: String,
    pub collections: CollectionNames,
    /// Write concern: `"1"`, `"majority"`, or a number of members.
    pub w: String,
    /// Ask for the write to be in the journal before it is acknowledged.
    pub journal: bool,
    pub connect_timeout: HumanDuration,
    pub server_selection_timeout: HumanDuration,
    /// Batches that could not reach MongoDB wait in the outbox; past this size the oldest are dropped.
    pub max_outbox_bytes: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            enabled: true,
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "lngpt".into(),
            collections: CollectionNames::default(),
            w: "1".into(),
            journal: true,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            server_selection_timeout: HumanDuration(Duration::from_secs(5)),
            max_outbox_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionNames {
    pub api_logs: String,
    pub api_cost: String,
    pub api_performance: String,
    pub api_rejects: String,
}

impl Default for CollectionNames {
    fn default() -> Self {
        CollectionNames {
            api_logs: "api_logs".into(),
            api_cost: "api_cost".into(),
            api_performance: "api_performance".into(),
            api_rejects: "api_rejects".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/lngpt-collector"),
            socket: SocketConfig::default(),
            file: Vec::new(),
            pipeline: PipelineConfig::default(),
            retention: RetentionConfig::default(),
            redact: RedactConfig::default(),
            embedded: EmbeddedConfig::default(),
            mongodb: None,
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    pub enabled: bool,
    /// Defaults to `<state_dir>/collector.sock`.
    pub path: Option<PathBuf>,
    /// Octal file mode of the socket file.
    pub mode: String,
    /// Group that owns the socket file, so the app's user can connect.
    pub group: Option<String>,
    pub max_line_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            enabled: true,
            path: None,
            mode: "0660".into(),
            group: None,
            max_line_bytes: 1 << 20,
        }
    }
}

/// One tailed file or glob of files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// A path or a glob (`/var/log/lngpt/*.log`). For a plain path, rotated siblings (`app.log.1`,
    /// `app.log.2026-11-26`) are followed too.
    pub path: String,
    /// Where to start in a file never seen before: `beginning` or `end`.
    pub start_at: String,
    /// How many bytes of a file's first line identify it.
    pub fingerprint_bytes: usize,
    /// The slow poll that covers missed file-system notifications.
    pub poll_interval: HumanDuration,
    pub max_line_bytes: usize,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: String::new(),
            start_at: "beginning".into(),
            fingerprint_bytes: 256,
            poll_interval: HumanDuration(Duration::from_secs(1)),
            max_line_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events accepted but not yet stored; when full, sources wait (the app's writes block).
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub max_wait: HumanDuration,
    pub shutdown_timeout: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue_capacity: 16_384,
            max_batch: 1000,
            max_wait: HumanDuration(Duration::from_millis(200)),
            shutdown_timeout: HumanDuration(Duration::from_secs(15)),
        }
    }
}

/// How long each collection keeps its documents; `"0"` keeps them forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub api_logs: HumanDuration,
    pub api_cost: HumanDuration,
    pub api_performance: HumanDuration,
    pub api_rejects: HumanDuration,
    /// How often expired documents are deleted (the embedded store; MongoDB uses TTL indexes).
    pub interval: HumanDuration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |d: u64| HumanDuration(Duration::from_secs(d * 86_400));
        RetentionConfig {
            api_logs: days(30),
            api_cost: days(30),
            api_performance: days(30),
            api_rejects: days(7),
            interval: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    pub enabled: bool,
    /// Field names masked in addition to the built-in ones.
    pub keys: Vec<String>,
    /// Regular expressions masked in addition to the built-in ones (group 1 if present, else the match).
    pub patterns: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            keys: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// SQLite file name, relative to `state_dir`.
    pub file: PathBuf,
    /// `normal` survives a crash of the daemon; `full` also a power loss, at a cost in speed.
    pub synchronous: String,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            file: PathBuf::from("collector.db"),
            synchronous: "normal".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error`, or a tracing filter such as `info,lngpt_collector=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// How often a summary line is logged when events arrived; `"0"` switches it off.
    pub summary_interval: HumanDuration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            summary_interval: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .path
            .clone()
            .unwrap_or_else(|| self.state_dir.join("collector.sock"))
    }

    pub fn database_path(&self) -> PathBuf {
        self.state_dir.join(&self.embedded.file)
    }

    /// Reads `path`, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&origin, "", format!("cannot read the file: {e}")))?;
        Config::from_toml(&text, &origin, std::env::vars())
    }

    /// Parses TOML text, overridden by `env` (name, value) pairs, and validates.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| line_col(text, s.start))
                .map(|(l, c)| format!("line {l}, column {c}: "))
                .unwrap_or_default();
            ConfigError::new(origin, "", format!("{at}not valid TOML: {msg}"))
        })?;
        let schema = schema();
        check_unknown_keys(&table, &schema, "", origin)?;
        let from_env = apply_env(&mut table, &schema, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let source = from_env
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(origin.to_string(), |(_, var)| var.clone());
            ConfigError::new(&source, &key, e.into_inner().message().to_string())
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, problem: String| Err(ConfigError::new(origin, key, problem));
        let p = &self.pipeline;
        if !(1..=100_000).contains(&p.max_batch) {
            return err(
                "pipeline.max_batch",
                format!("is {}; expected a number from 1 to 100000", p.max_batch),
            );
        }
        if p.queue_capacity < p.max_batch {
            return err(
                "pipeline.queue_capacity",
                format!(
                    "is {}; expected at least pipeline.max_batch ({})",
                    p.queue_capacity, p.max_batch
                ),
            );
        }
        if p.max_wait.0.is_zero() {
            return err(
                "pipeline.max_wait",
                "is 0; expected a positive duration such as \"200ms\"".into(),
            );
        }
        if p.shutdown_timeout.0.is_zero() {
            return err(
                "pipeline.shutdown_timeout",
                "is 0; expected a positive duration such as \"15s\"".into(),
            );
        }
        if !(1024..=64 << 20).contains(&self.socket.max_line_bytes) {
            return err(
                "socket.max_line_bytes",
                format!(
                    "is {}; expected a number from 1024 to 67108864 (64 MiB)",
                    self.socket.max_line_bytes
                ),
            );
        }
        if self.socket_mode().is_none() {
            return err(
                "socket.mode",
                format!(
                    "is {:?}; expected an octal file mode such as \"0660\"",
                    self.socket.mode
                ),
            );
        }
        if self.state_dir.as_os_str().is_empty() {
            return err("state_dir", "is empty; expected a directory such as \"./data\"".into());
        }
        if !matches!(self.embedded.synchronous.as_str(), "normal" | "full") {
            return err(
                "embedded.synchronous",
                format!("is {:?}; expected \"normal\" or \"full\"", self.embedded.synchronous),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return err(
                "log.format",
                format!("is {:?}; expected \"text\" or \"json\"", self.log.format),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return err(
                "log.level",
                format!(
                    "is {:?}: {e}; expected trace, debug, info, warn or error",
                    self.log.level
                ),
            );
        }
        for (i, f) in self.file.iter().enumerate() {
            let key = |k: &str| format!("file[{i}].{k}");
            if f.path.is_empty() {
                return err(
                    &key("path"),
                    "is missing; expected the app's log file, such as \"/var/log/lngpt/app.log\"".into(),
                );
            }
            if let Err(e) = glob::Pattern::new(&f.path) {
                return err(&key("path"), format!("is not a valid path or glob: {e}"));
            }
            if !matches!(f.start_at.as_str(), "beginning" | "end") {
                return err(
                    &key("start_at"),
                    format!("is {:?}; expected \"beginning\" or \"end\"", f.start_at),
                );
            }
            if !(16..=64 * 1024).contains(&f.fingerprint_bytes) {
                return err(
                    &key("fingerprint_bytes"),
                    format!("is {}; expected a number from 16 to 65536", f.fingerprint_bytes),
                );
            }
            if f.poll_interval.0.is_zero() {
                return err(
                    &key("poll_interval"),
                    "is 0; expected a positive duration such as \"1s\"".into(),
                );
            }
            if !(1024..=64 << 20).contains(&f.max_line_bytes) {
                return err(
                    &key("max_line_bytes"),
                    format!("is {}; expected a number from 1024 to 67108864", f.max_line_bytes),
                );
            }
        }
        if let Some(m) = self.mongo() {
            if !m.uri.starts_with("mongodb://") && !m.uri.starts_with("mongodb+srv://") {
                return err("mongodb.uri", "does not start with mongodb:// or mongodb+srv://".into());
            }
            if m.database.is_empty() {
                return err(
                    "mongodb.database",
                    "is empty; expected a database name such as \"lngpt\"".into(),
                );
            }
            // w = 0 would not wait for an acknowledgement, so nothing could be known to be stored.
            let w_ok = m.w == "majority" || m.w.parse::<u32>().is_ok_and(|n| n >= 1);
            if !w_ok {
                return err(
                    "mongodb.w",
                    format!(
                        "is {:?}; expected \"majority\" or a number of members ≥ 1 such as \"1\"",
                        m.w
                    ),
                );
            }
            if m.max_outbox_bytes < 1 << 20 {
                return err(
                    "mongodb.max_outbox_bytes",
                    format!("is {}; expected at least 1048576 (1 MiB)", m.max_outbox_bytes),
                );
            }
        }
        crate::redact::Redactor::new(&self.redact).map_err(|e| ConfigError::new(origin, "redact.patterns", e))?;
        Ok(())
    }

    pub fn socket_mode(&self) -> Option<u32> {
        let m = self.socket.mode.trim_start_matches("0o");
        u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o777)
    }

    /// The effective configuration as TOML, for `check-config`, with passwords masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(m) = shown.mongodb.as_mut() {
            m.uri = mask_uri_password(&m.uri);
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// MongoDB settings when MongoDB is the store.
    pub fn mongo(&self) -> Option<&MongoConfig> {
        self.mongodb.as_ref().filter(|m| m.enabled)
    }

    /// A warning when the file holds a secret and other users may read it.
    pub fn secrets_readable_warning(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let has_secret = self.mongo().is_some_and(|m| mask_uri_password(&m.uri) != m.uri);
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (has_secret && mode & 0o004 != 0).then(|| {
            format!(
                "{} holds a password and is readable by every user (mode {:04o}); run chmod 640 on it, or pass the URI in MONGODB_URI",
                path.display(),
                mode & 0o777
            )
        })
    }
}

/// Where a configuration value went wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(origin: &str, key: &str, problem: String) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            key: key.to_string(),
            problem,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.problem)
        } else {
            write!(f, "{}: `{}` {}", self.origin, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The known keys and their kinds, read off the serialized defaults.
fn schema() -> Json {
    let with_optional_sections = Config {
        mongodb: Some(MongoConfig::default()),
        file: vec![FileConfig::default()],
        ..Config::default()
    };
    serde_json::to_value(with_optional_sections).unwrap_or(Json::Null)
}

fn check_unknown_keys(table: &toml::Table, schema: &Json, prefix: &str, origin: &str) -> Result<(), ConfigError> {
    let Some(known) = schema.as_object() else {
        return Ok(());
    };
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => {
                let mut problem = if prefix.is_empty() {
                    "is not a known key or section".to_string()
                } else {
                    format!("is not a known key in [{prefix}]")
                };
                if let Some(hint) = suggest(key, prefix, schema_root()) {
                    problem.push_str(&format!("; did you mean `{hint}`?"));
                } else {
                    let names: Vec<&str> = known.keys().map(String::as_str).collect();
                    problem.push_str(&format!("; expected one of: {}", names.join(", ")));
                }
                return Err(ConfigError::new(origin, &path, problem));
            }
            Some(sub @ Json::Object(_)) => {
                if let toml::Value::Table(t) = value {
                    check_unknown_keys(t, sub, &path, origin)?;
                }
            }
            // An array of tables ([[file]]): each entry against the one example entry.
            Some(Json::Array(example)) => {
                if let (Some(sub), toml::Value::Array(items)) = (example.first(), value) {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            check_unknown_keys(t, sub, &format!("{path}[{i}]"), origin)?;
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn schema_root() -> &'static Json {
    static ROOT: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    ROOT.get_or_init(schema)
}

/// The closest known key: a near spelling in the same section, or the same name in another section.
fn suggest(key: &str, section: &str, root: &Json) -> Option<String> {
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
    let mut all = Vec::new();
    walk("", root, &mut all);
    let section = section.split('[').next().unwrap_or(section);
    let near = all
        .iter()
        .filter(|(s, _)| s == section)
        .map(|(s, k)| (strsim::damerau_levenshtein(key, k), full(s, k)))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    near.or_else(|| {
        all.iter()
            .find(|(s, k)| k == key && s != section)
            .map(|(s, k)| full(s, k))
    })
}

/// The names the Python app already uses, and the keys they set.
const APP_ENV: &[(&str, &str, &str)] = &[
    ("LOG_LEVEL", "log", "level"),
    ("MONGODB_URI", "mongodb", "uri"),
    ("MONGODB_DB_NAME", "mongodb", "database"),
];

/// Applies `LNGPT_COLLECTOR_<SECTION>_<KEY>` and the app's names; returns (key path, variable) pairs.
fn apply_env(
    table: &mut toml::Table,
    schema: &Json,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env.into_iter().collect();
    vars.sort();
    for (var, raw) in &vars {
        let app_name = APP_ENV.iter().find(|(name, ..)| name == var);
        let path: Vec<String> = if let Some((_, section, key)) = app_name {
            // The prefixed form wins when both are set.
            let prefixed = format!("{ENV_PREFIX}{}_{}", section, key).to_ascii_uppercase();
            if vars.iter().any(|(k, _)| *k == prefixed) {
                continue;
            }
            vec![section.to_string(), key.to_string()]
        } else if let Some(rest) = var.strip_prefix(ENV_PREFIX) {
            env_path(&rest.to_ascii_lowercase(), schema).ok_or_else(|| {
                let hint = suggest_env(rest, schema)
                    .map(|h| format!("; did you mean {h}?"))
                    .unwrap_or_default();
                ConfigError::new(
                    var,
                    "",
                    format!("names no configuration key{hint} (the form is {ENV_PREFIX}<SECTION>_<KEY>)"),
                )
            })?
        } else {
            continue;
        };
        let key = path.join(".");
        let kind = path.iter().try_fold(schema, |s, p| s.get(p)).unwrap_or(&Json::Null);
        let value = env_value(raw, kind)
            .map_err(|expected| ConfigError::new(var, &key, format!("expects {expected}, got {raw:?}")))?;
        let mut t = &mut *table;
        for section in &path[..path.len() - 1] {
            let entry = t
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => t = inner,
                _ => {
                    return Err(ConfigError::new(
                        var,
                        section,
                        "is not a section in the file, so it cannot take a key".into(),
                    ))
                }
            }
        }
        t.insert(path[path.len() - 1].clone(), value);
        applied.push((key, var.clone()));
    }
    Ok(applied)
}

/// `state_dir` → ["state_dir"]; `pipeline_max_batch` → ["pipeline", "max_batch"].
fn env_path(rest: &str, schema: &Json) -> Option<Vec<String>> {
    let top = schema.as_object()?;
    if top.get(rest).is_some_and(|v| !v.is_object()) {
        return Some(vec![rest.to_string()]);
    }
    let (section, key) = rest.split_once('_')?;
    top.get(section)?.as_object()?.get(key)?;
    Some(vec![section.to_string(), key.to_string()])
}

fn suggest_env(rest: &str, schema: &Json) -> Option<String> {
    let mut names = Vec::new();
    for (k, v) in schema.as_object()? {
        match v.as_object() {
            Some(sub) => names.extend(sub.keys().map(|sk| format!("{}_{}", k, sk).to_ascii_uppercase())),
            None => names.push(k.to_ascii_uppercase()),
        }
    }
    names
        .into_iter()
        .map(|n| (strsim::damerau_levenshtein(rest, &n), n))
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A duration written the way people write them: `"200ms"`, `"15s"`, `"5m"`, `"1h"`, `"30d"`, `"0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration; expected a number and a unit, such as \"200ms\", \"15s\", \"5m\", \"1h\" or \"30d\""))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86_400.0,
            _ => {
                return Err(format!(
                    "{s:?} has no known unit; expected ms, s, m, h or d, such as \"200ms\" or \"30d\""
                ))
            }
        };
        Ok(Duration::from_secs_f64(secs))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (n, unit) = match ms {
            0 => return f.write_str("0"),
            _ if ms % 86_400_000 == 0 => (ms / 86_400_000, "d"),
            _ if ms % 3_600_000 == 0 => (ms / 3_600_000, "h"),
            _ if ms % 60_000 == 0 => (ms / 60_000, "m"),
            _ if ms % 1000 == 0 => (ms / 1000, "s"),
            _ => (ms, "ms"),
        };
        write!(f, "{n}{unit}")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"200ms\", \"15s\" or \"30d\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                HumanDuration::parse(s).map(HumanDuration).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                match n {
                    0 => Ok(HumanDuration(Duration::ZERO)),
                    _ => Err(E::custom(format!(
                        "{n} has no unit; write it as a string with one, such as \"{n}s\" or \"{n}ms\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
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

/// `mongodb://user:secret@host/` → `mongodb://user:***@host/`.
pub fn mask_uri_password(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_string();
    };
    let authority_end = uri[scheme_end..].find(['/', '?']).map_or(uri.len(), |i| scheme_end + i);
    let Some(at) = uri[scheme_end..authority_end].rfind('@').map(|i| scheme_end + i) else {
        return uri.to_string();
    };
    match uri[scheme_end..at].find(':') {
        Some(colon) => format!("{}:***{}", &uri[..scheme_end + colon], &uri[at..]),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", Vec::new())
    }

    fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = load("state_dir = \"./data\"\n[socket]\npath = \"./data/c.sock\"\n").unwrap();
        assert_eq!(c.pipeline.max_batch, 1000);
        assert_eq!(c.pipeline.max_wait.0, Duration::from_millis(200));
        assert_eq!(c.retention.api_rejects.0, Duration::from_secs(7 * 86_400));
        assert_eq!(c.socket_path(), PathBuf::from("./data/c.sock"));
        assert_eq!(c.socket_mode(), Some(0o660));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let e = load("[pipline]\nmax_batch = 5\n").unwrap_err();
        assert_eq!(e.key, "pipline");
        assert!(e.problem.contains("did you mean `pipeline`"), "{e}");
        let e = load("[pipeline]\nmax_bach = 5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml: `pipeline.max_bach` is not a known key in [pipeline]; did you mean `pipeline.max_batch`?"
        );
        let e = load("max_batch = 5\n").unwrap_err();
        assert!(e.problem.contains("did you mean `pipeline.max_batch`"), "{e}");
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key_and_the_expectation() {
        let e = load("[pipeline]\nmax_batch = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "pipeline.max_batch");
        assert!(e.problem.contains("invalid type"), "{e}");
        let e = load("[pipeline]\nmax_batch = 0\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("`pipeline.max_batch` is 0; expected a number from 1 to 100000"),
            "{e}"
        );
        let e = load("[pipeline]\nmax_wait = \"200\"\n").unwrap_err();
        assert!(e.problem.contains("no known unit"), "{e}");
        let e = load("[socket]\nmode = \"rw\"\n").unwrap_err();
        assert!(e.problem.contains("octal"), "{e}");
        let e = load("state_dir = \n").unwrap_err();
        assert!(
            e.problem.contains("line 1") && e.problem.contains("not valid TOML"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_env(
            "[pipeline]\nmax_batch = 10\n",
            &[
                ("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH", "500"),
                ("LNGPT_COLLECTOR_STATE_DIR", "/tmp/x"),
                ("LOG_LEVEL", "debug"),
                ("LNGPT_COLLECTOR_REDACT_KEYS", "a, b"),
            ],
        )
        .unwrap();
        assert_eq!(c.pipeline.max_batch, 500);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.redact.keys, vec!["a".to_string(), "b".to_string()]);
        let e = load_env("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH", "lots")]).unwrap_err();
        assert_eq!(e.origin, "LNGPT_COLLECTOR_PIPELINE_MAX_BATCH");
        assert!(e.problem.contains("expects a whole number"), "{e}");
        let e = load_env("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_BATHC", "5")]).unwrap_err();
        assert!(
            e.problem.contains("did you mean LNGPT_COLLECTOR_PIPELINE_MAX_BATCH"),
            "{e}"
        );
        let e = load_env("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_WAIT", "soon")]).unwrap_err();
        assert_eq!(e.origin, "LNGPT_COLLECTOR_PIPELINE_MAX_WAIT");
    }

    #[test]
    fn mongodb_section_env_names_and_masking() {
        let c = load("").unwrap();
        assert!(c.mongo().is_none(), "no section: the embedded store serves");
        let c = load_env(
            "[mongodb]\ndatabase = \"x\"\n",
            &[
                ("MONGODB_URI", "mongodb://app:s3cret@db:27017/?tls=true"),
                ("MONGODB_DB_NAME", "novel"),
            ],
        )
        .unwrap();
        let m = c.mongo().unwrap();
        assert_eq!(
            (m.uri.as_str(), m.database.as_str()),
            ("mongodb://app:s3cret@db:27017/?tls=true", "novel")
        );
        let shown = c.to_masked_toml();
        assert!(
            shown.contains("mongodb://app:***@db:27017/?tls=true") && !shown.contains("s3cret"),
            "{shown}"
        );
        let c = load_env("", &[("MONGODB_URI", "mongodb://h")]).unwrap();
        assert!(c.mongo().is_some(), "MONGODB_URI alone turns MongoDB on");
        let c = load("[mongodb]\nenabled = false\n").unwrap();
        assert!(c.mongo().is_none());
        let e = load("[mongodb]\nuri = \"http://x\"\n").unwrap_err();
        assert_eq!(e.key, "mongodb.uri");
        let e = load("[mongodb.collections]\napi_log = \"x\"\n").unwrap_err();
        assert!(e.problem.contains("did you mean `mongodb.collections.api_logs`"), "{e}");
        assert_eq!(mask_uri_password("mongodb://h1,h2/db"), "mongodb://h1,h2/db");
        assert_eq!(
            mask_uri_password("mongodb+srv://u:p@x.example/db?authSource=admin"),
            "mongodb+srv://u:***@x.example/db?authSource=admin"
        );
    }

    #[test]
    fn file_entries_are_checked_key_by_key() {
        let c =
            load("[[file]]\npath = \"/var/log/app.log\"\n[[file]]\npath = \"/var/log/x/*.log\"\nstart_at = \"end\"\n")
                .unwrap();
        assert_eq!(c.file.len(), 2);
        assert_eq!(
            (c.file[0].start_at.as_str(), c.file[1].start_at.as_str()),
            ("beginning", "end")
        );
        let e = load("[[file]]\npath = \"a\"\nstart = \"end\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].start");
        assert!(e.problem.contains("did you mean `file.start_at`"), "{e}");
        let e = load("[[file]]\nstart_at = \"end\"\n").unwrap_err();
        assert_eq!(e.key, "file[0].path");
        let e = load("[[file]]\npath = \"a\"\nstart_at = \"middle\"\n").unwrap_err();
        assert!(e.to_string().contains("`file[0].start_at` is \"middle\""), "{e}");
    }

    #[test]
    fn durations_print_back_the_way_they_parse() {
        for s in ["200ms", "15s", "5m", "1h", "30d", "0"] {
            assert_eq!(HumanDuration(HumanDuration::parse(s).unwrap()).to_string(), s);
        }
    }
}
