//! Configuration: a TOML file, environment overrides, and validation with precise messages.
//!
//! Loading goes file → TOML table → environment overrides → unknown-key check → typed structs →
//! range checks. Each section's struct lives with the module that uses it and checks its own
//! values (`validate`); this module only assembles them. The known keys are read off the
//! serialized defaults, so the structs are the schema and a new key needs no second list.
//!
//! Every problem is reported, not just the first, and each names where the value came from (the
//! file or the environment variable), the key, what is wrong and what is expected.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;

use crate::api::ApiConfig;
use crate::monitor::budget::BudgetConfig;
use crate::monitor::rules::MonitorConfig;
use crate::notify::WebhookConfig;
use crate::pipeline::PipelineConfig;
use crate::redact::RedactConfig;
use crate::source::file::FileConfig;
use crate::source::socket::SocketConfig;
use crate::store::embedded::EmbeddedConfig;
use crate::store::mongo::{mask_uri_password, MongoConfig};
use crate::store::retention::RetentionConfig;
use crate::telemetry::LogConfig;

/// Prefix of the environment variables that override keys: `LNGPT_COLLECTOR_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "LNGPT_COLLECTOR_";

/// The Python client's variables (clients/python), which an app and its daemon may share (a shell,
/// an `EnvironmentFile`): not configuration keys, so they are skipped rather than refused.
const CLIENT_ENV: &[&str] = &["LNGPT_COLLECTOR_SOCKET", "LNGPT_COLLECTOR_API"];
const CLIENT_ENV_PREFIX: &str = "LNGPT_COLLECTOR_CLIENT_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Embedded store, outbox and checkpoints live here; created if missing.
    pub state_dir: PathBuf,
    /// How a time without an offset is read: `"local"` (the host's zone, as Python's naive
    /// `datetime.now()` means), `"UTC"`, or an IANA name.
    pub naive_timezone: String,
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
    pub monitor: MonitorConfig,
    pub budget: BudgetConfig,
    /// `[prices."<model>"]`: per-million-token prices for cost records that come without an amount.
    pub prices: crate::event::prices::PriceTable,
    pub log: LogConfig,
    /// Alert receivers: `[[webhook]]`, any number.
    pub webhook: Vec<WebhookConfig>,
    pub api: ApiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/lngpt-collector"),
            naive_timezone: "local".into(),
            socket: SocketConfig::default(),
            file: Vec::new(),
            pipeline: PipelineConfig::default(),
            retention: RetentionConfig::default(),
            redact: RedactConfig::default(),
            embedded: EmbeddedConfig::default(),
            mongodb: None,
            monitor: MonitorConfig::default(),
            budget: BudgetConfig::default(),
            prices: Default::default(),
            log: LogConfig::default(),
            webhook: Vec::new(),
            api: ApiConfig::default(),
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
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
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
    ) -> Result<Config, ConfigErrors> {
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
        let mut problems = Problems::new(origin);
        check_unknown_keys(&table, &schema, "", &mut problems);
        let env: Vec<(String, String)> = env.into_iter().collect();
        let log_format = env
            .iter()
            .find(|(k, v)| k == "LOG_FORMAT" && !v.is_empty())
            .map(|(_, v)| v.clone());
        let from_env = apply_env(&mut table, &schema, env, &mut problems);
        problems.env = from_env;
        let mut config = deserialize_sections(table, &mut problems);
        if let Some(c) = &mut config {
            c.fill_text_patterns(log_format, &mut problems);
            c.validate(&mut problems);
        }
        match (config, problems.into_result()) {
            (Some(c), Ok(())) => Ok(c),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(ConfigError::new(origin, "", "cannot be read".into()).into()),
        }
    }

    /// Gives every text `[[file]]` entry without a `pattern` the app's: the `LOG_FORMAT`
    /// environment variable if set, else the original `LOG_FORMAT`. A pattern in the entry wins:
    /// entries may tail other programs' logs, while `LOG_FORMAT` describes the app's.
    fn fill_text_patterns(&mut self, log_format: Option<String>, p: &mut Problems) {
        use crate::source::file::{python::DEFAULT_PATTERN, Format};
        for (i, f) in self.file.iter_mut().enumerate() {
            if f.format == Format::Json || f.pattern.is_some() {
                continue;
            }
            f.pattern = Some(match &log_format {
                Some(env) => {
                    p.env.push((format!("file[{i}].pattern"), "LOG_FORMAT".into()));
                    env.clone()
                }
                None => DEFAULT_PATTERN.to_string(),
            });
        }
    }

    fn validate(&self, p: &mut Problems) {
        if self.state_dir.as_os_str().is_empty() {
            p.add("state_dir", "is empty; expected a directory such as \"./data\"");
        }
        if let Err(e) = crate::event::NaiveZone::named(&self.naive_timezone) {
            p.add("naive_timezone", e);
        }
        self.socket.validate(p);
        for (i, f) in self.file.iter().enumerate() {
            f.validate(&format!("file[{i}]"), p);
        }
        self.pipeline.validate(p);
        // A line is read whole before it becomes an event: the budget must hold the longest with room
        // for the rest of the pipeline, or reading it would wait forever.
        let longest = self
            .file
            .iter()
            .map(|f| f.max_line_bytes)
            .chain(self.socket.enabled.then_some(self.socket.max_line_bytes))
            .max()
            .unwrap_or(0) as u64;
        if self.pipeline.memory_budget.0 < longest.saturating_mul(4) {
            p.add(
                "pipeline.memory_budget",
                format!(
                    "is {}; expected at least 4 × the longest max_line_bytes ({}), i.e. {}, so that a line that long can be read",
                    self.pipeline.memory_budget,
                    ByteSize(longest),
                    ByteSize(longest.saturating_mul(4))
                ),
            );
        }
        self.retention.validate(p);
        self.redact.validate(p);
        if let Some(m) = self.mongo() {
            m.validate(p);
        }
        self.monitor.validate(p);
        if self.monitor.enabled && self.monitor.grace.0 < self.pipeline.max_wait.0 {
            p.add(
                "monitor.grace",
                format!(
                    "is {}; expected at least pipeline.max_wait ({}), or windows would be written before their events are stored",
                    self.monitor.grace, self.pipeline.max_wait
                ),
            );
        }
        self.budget.validate(p);
        crate::event::prices::validate(&self.prices, p);
        self.log.validate(p);
        crate::notify::validate_all(&self.webhook, p);
        self.api.validate(p);
    }

    /// The effective configuration as TOML, for `check-config`, with passwords masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(m) = shown.mongodb.as_mut() {
            m.uri = mask_uri_password(&m.uri);
        }
        for w in &mut shown.webhook {
            w.url = w.masked_url();
            if !w.secret.is_empty() {
                w.secret = "***".into();
            }
        }
        if shown.api.token.is_some() {
            shown.api.token = Some("***".into());
        }
        let mut text = toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        if self.socket.path.is_none() {
            // Defaulted, so not in the file; say where it is anyway.
            text = text.replacen(
                "[socket]\n",
                &format!(
                    "[socket]\n# path = {:?} (the default)\n",
                    self.socket_path().display().to_string()
                ),
                1,
            );
        }
        text
    }

    /// MongoDB settings when MongoDB is the store.
    pub fn mongo(&self) -> Option<&MongoConfig> {
        self.mongodb.as_ref().filter(|m| m.enabled)
    }

    /// A warning when the file holds a secret and other users may read it.
    pub fn secrets_readable_warning(&self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let has_secret = self.mongo().is_some_and(|m| mask_uri_password(&m.uri) != m.uri)
            || self.webhook.iter().any(WebhookConfig::holds_secret);
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (has_secret && mode & 0o004 != 0).then(|| {
            format!(
                "{} holds a password or a webhook key and is readable by every user (mode {:04o}); run chmod 640 on it, or pass secrets in the environment (MONGODB_URI, LNGPT_COLLECTOR_WEBHOOK_<NAME>_URL or _SECRET)",
                path.display(),
                mode & 0o777
            )
        })
    }
}

/// Deserializes each top-level key on its own, so that a bad value in one section does not hide
/// the problems of the others.
fn deserialize_sections(table: toml::Table, p: &mut Problems) -> Option<Config> {
    let mut config = Config::default();
    let mut ok = true;
    for (key, value) in table {
        macro_rules! section {
            ($($name:literal => $field:expr),* $(,)?) => {
                match key.as_str() {
                    $($name => match section_value(&key, value, p) {
                        Some(v) => $field = v,
                        None => ok = false,
                    },)*
                    _ => {} // already reported as unknown
                }
            };
        }
        section!(
            "state_dir" => config.state_dir,
            "naive_timezone" => config.naive_timezone,
            "socket" => config.socket,
            "file" => config.file,
            "pipeline" => config.pipeline,
            "retention" => config.retention,
            "redact" => config.redact,
            "embedded" => config.embedded,
            "mongodb" => config.mongodb,
            "monitor" => config.monitor,
            "budget" => config.budget,
            "prices" => config.prices,
            "log" => config.log,
            "webhook" => config.webhook,
            "api" => config.api,
        );
    }
    ok.then_some(config)
}

fn section_value<T: DeserializeOwned>(key: &str, value: toml::Value, p: &mut Problems) -> Option<T> {
    // Wrapped in a table so that the path serde reports starts with the section's name.
    let mut wrapper = toml::Table::new();
    wrapper.insert(key.to_string(), value);
    #[derive(Deserialize)]
    struct One<T>(std::collections::BTreeMap<String, T>);
    match serde_path_to_error::deserialize::<_, One<T>>(toml::Value::Table(wrapper)) {
        Ok(mut one) => one.0.remove(key),
        Err(e) => {
            let path = e.path().to_string();
            let path = path
                .strip_prefix('?')
                .unwrap_or(&path)
                .trim_start_matches('.')
                .to_string();
            p.add(&path, e.into_inner().message().to_string());
            None
        }
    }
}

/// Where a configuration value went wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file, or the environment variable the value came from.
    pub origin: String,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(origin: &str, key: &str, problem: String) -> ConfigError {
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

/// Every problem found in one configuration, in the order found; never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the problems of a configuration while its sections check themselves.
pub struct Problems {
    origin: String,
    /// (key path, environment variable) of every value that came from the environment, so that a
    /// problem with it is blamed on the variable, not the file.
    env: Vec<(String, String)>,
    list: Vec<ConfigError>,
}

impl Problems {
    pub fn new(origin: &str) -> Problems {
        Problems {
            origin: origin.to_string(),
            env: Vec::new(),
            list: Vec::new(),
        }
    }

    /// Reports `key` (a dotted path such as `pipeline.max_batch` or `file[0].path`) as wrong.
    pub fn add(&mut self, key: &str, problem: impl Into<String>) {
        let origin = self
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.origin.clone(), |(_, var)| var.clone());
        self.list.push(ConfigError::new(&origin, key, problem.into()));
    }

    /// Reports a problem that came from one environment variable.
    fn add_env(&mut self, var: &str, key: &str, problem: impl Into<String>) {
        self.list.push(ConfigError::new(var, key, problem.into()));
    }

    /// Checks that a number lies in `range`, saying so with `unit` (e.g. "bytes") if not.
    pub fn in_range<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, range: std::ops::RangeInclusive<T>) {
        if !range.contains(&value) {
            self.add(
                key,
                format!(
                    "is {value}; expected a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Checks that a duration lies in `range`.
    pub fn duration_in(&mut self, key: &str, value: HumanDuration, min: Duration, max: Duration) {
        if value.0 < min || value.0 > max {
            self.add(
                key,
                format!(
                    "is {value}; expected a duration from {} to {}",
                    HumanDuration(min),
                    HumanDuration(max)
                ),
            );
        }
    }

    /// Checks that a size lies in `range`.
    pub fn size_in(&mut self, key: &str, value: ByteSize, min: u64, max: u64) {
        if value.0 < min || value.0 > max {
            self.add(
                key,
                format!(
                    "is {value}; expected a size from {} to {}",
                    ByteSize(min),
                    ByteSize(max)
                ),
            );
        }
    }

    fn into_result(self) -> Result<(), ConfigErrors> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}

/// The known keys and their kinds, read off the serialized defaults.
fn schema() -> Json {
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

fn check_unknown_keys(table: &toml::Table, schema: &Json, prefix: &str, p: &mut Problems) {
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
    for (key, value) in table {
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
            }
            Some(sub @ Json::Object(_)) => {
                if let toml::Value::Table(t) = value {
                    check_unknown_keys(t, sub, &path, p);
                }
            }
            // An array of tables ([[file]]): each entry against the one example entry.
            Some(Json::Array(example)) => {
                if let (Some(sub), toml::Value::Array(items)) = (example.first(), value) {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            check_unknown_keys(t, sub, &format!("{path}[{i}]"), p);
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// `file[0]` → `file`, for "a known key in [file]".
fn section_name(prefix: &str) -> String {
    prefix.split('[').next().unwrap_or(prefix).to_string()
}

fn schema_root() -> &'static Json {
    static ROOT: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    ROOT.get_or_init(schema)
}

/// Keys people look for in one section that live in another, where spelling alone would point
/// to the wrong one: a text log's times are read in the one `naive_timezone`, not a `[[file]]`
/// key (and not `budget.timezone`, which only says where the budget's days begin).
const ELSEWHERE: &[(&str, &str, &str)] = &[("file", "timezone", "naive_timezone")];

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
fn apply_env(
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The longest duration any key takes: a century, far past any retention anyone means, and far
/// from the overflows of `Instant` and millisecond arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration written the way people write them: `"200ms"`, `"15s"`, `"5m"`, `"1h"`, `"30d"`, `"0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
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
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if d <= MAX_DURATION => Ok(d),
            _ => Err(format!("{s:?} is too long; at most \"36500d\" (100 years)")),
        }
    }

    /// Milliseconds, for time arithmetic on [`crate::event::Timestamp`]s; never overflows, since
    /// every parsed duration is at most [`MAX_DURATION`].
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
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

/// A size in bytes, written as a number or with a unit: `1048576`, `"64KiB"`, `"16MiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

/// The largest size any key takes (1 TiB): keeps byte arithmetic far from overflow.
pub const MAX_BYTES: u64 = 1 << 40;

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("{s:?} is not a size; expected bytes, or a number and a unit such as \"64KiB\" or \"16MiB\"")
        })?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(format!("{s:?} has no known unit; expected B, KiB, MiB or GiB")),
        };
        match n.checked_mul(scale) {
            Some(b) if b <= MAX_BYTES => Ok(b),
            _ => Err(format!("{s:?} is too large; at most \"1024GiB\"")),
        }
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match b {
            0 => f.write_str("0"),
            _ if b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            _ if b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            _ if b % (1 << 10) == 0 => write!(f, "{}KiB", b >> 10),
            _ => write!(f, "{b}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1048576 or \"16MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                match u64::try_from(n) {
                    Ok(b) if b <= MAX_BYTES => Ok(ByteSize(b)),
                    _ => Err(E::custom(format!("{n} is not a size from 0 to 1099511627776 (1 TiB)"))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n <= MAX_BYTES {
                    Ok(ByteSize(n))
                } else {
                    Err(E::custom(format!("{n} is not a size from 0 to 1099511627776 (1 TiB)")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", Vec::new()).map_err(|e| e.first().clone())
    }

    fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map_err(|e| e.first().clone())
    }

    #[test]
    fn per_model_budget_limits_are_known_keys_and_their_entries_are_checked() {
        let c = load("[budget.models.\"gpt-4o\"]\nhourly_limit_rmb = 10\n").unwrap();
        assert_eq!(c.budget.models["gpt-4o"].hourly_limit_rmb, 10.0);
        let e = load("[budget.models.\"gpt-4o\"]\nhourly_limit = 10\n").unwrap_err();
        assert!(e.problem.contains("hourly_limit_rmb, daily_limit_rmb"), "{e}");
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = load("state_dir = \"./data\"\n[socket]\npath = \"./data/c.sock\"\n").unwrap();
        assert_eq!(c.pipeline.max_batch, 1000);
        assert_eq!(c.pipeline.max_wait.0, Duration::from_millis(200));
        assert_eq!(c.retention.api_rejects.0, Duration::from_secs(7 * 86_400));
        assert_eq!(c.socket_path(), PathBuf::from("./data/c.sock"));
        assert_eq!(c.socket.mode_bits(), Some(0o660));
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
    fn every_problem_is_reported_at_once() {
        let e = Config::from_toml(
            "[pipeline]\nmax_batch = 0\nmax_bach = 1\n[socket]\nmode = \"rw\"\n[log]\nformat = \"xml\"\n",
            "t.toml",
            Vec::new(),
        )
        .unwrap_err();
        let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"pipeline.max_bach"), "{e}");
        assert!(keys.contains(&"log.format"), "{e}");
        assert!(e.to_string().lines().count() >= 2, "{e}");
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
    fn huge_durations_and_sizes_are_refused_not_wrapped() {
        let e = load("[retention]\napi_logs = \"150000000000d\"\n").unwrap_err();
        assert_eq!(e.key, "retention.api_logs");
        assert!(e.problem.contains("too long"), "{e}");
        let e = load("[pipeline]\nmax_wait = \"99999999999999999999s\"\n").unwrap_err();
        assert!(e.problem.contains("too long"), "{e}");
        let e = load_env("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_WAIT", "99999999999999999999s")]).unwrap_err();
        assert_eq!(e.origin, "LNGPT_COLLECTOR_PIPELINE_MAX_WAIT");
        assert_eq!(ByteSize::parse("16MiB"), Ok(16 << 20));
        assert!(ByteSize::parse("99999999999999GiB").unwrap_err().contains("too large"));
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
        // A bad value from the environment is blamed on the variable, not on the file.
        let e = load_env("", &[("LNGPT_COLLECTOR_STATE_DIR", "")]).unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("LNGPT_COLLECTOR_STATE_DIR", "state_dir")
        );
    }

    #[test]
    fn environment_reaches_nested_keys_and_entries_of_arrays_of_tables() {
        let c = load_env(
            "[[file]]\npath = \"/a.log\"\n[[file]]\npath = \"/b.log\"\n",
            &[
                ("LNGPT_COLLECTOR_FILE_1_PATH", "/c.log"),
                ("LNGPT_COLLECTOR_MONGODB_COLLECTIONS_API_LOGS", "logs2"),
            ],
        )
        .unwrap();
        assert_eq!(c.file[1].path, "/c.log");
        assert_eq!(c.mongodb.unwrap().collections.api_logs, "logs2");
        let e = load_env("", &[("LNGPT_COLLECTOR_FILE_3_PATH", "/x")]).unwrap_err();
        assert!(e.problem.contains("names no configuration key"), "{e}");
    }

    #[test]
    fn the_python_clients_variables_are_left_to_it() {
        let c = load_env(
            "",
            &[
                ("LNGPT_COLLECTOR_SOCKET", "./data/collector.sock"),
                ("LNGPT_COLLECTOR_API", "http://127.0.0.1:8787"),
                ("LNGPT_COLLECTOR_CLIENT_SPOOL_DIR", "./collector-spool"),
                ("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH", "500"),
            ],
        )
        .unwrap();
        assert_eq!(c.pipeline.max_batch, 500);
    }

    #[test]
    fn durations_print_back_the_way_they_parse() {
        for s in ["200ms", "15s", "5m", "1h", "30d", "0"] {
            assert_eq!(HumanDuration(HumanDuration::parse(s).unwrap()).to_string(), s);
        }
    }
}
