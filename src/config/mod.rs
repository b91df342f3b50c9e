//! Configuration: a TOML file, environment overrides, and validation with precise messages.
//!
//! Loading goes file → TOML table → environment overrides → unknown-key check → typed structs →
//! range checks. Each section's struct lives with the module that uses it and checks its own
//! values (`validate`); this module only assembles them. The known keys are read off the
//! serialized defaults, so the structs are the schema and a new key needs no second list.
//!
//! Every problem is reported, not just the first, and each names where the value came from (the
//! file or the environment variable), the key, what is wrong and what is expected.

mod env;
mod schema;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

pub use crate::problems::{ConfigError, ConfigErrors, Problems};
pub use crate::units::{ByteSize, HumanDuration, MAX_BYTES, MAX_DURATION};
pub use env::ENV_PREFIX;
pub use schema::all_key_paths;

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
        let schema = schema::schema();
        let mut problems = Problems::new(origin);
        schema::check_unknown_keys(&table, &schema, "", &mut problems);
        let env: Vec<(String, String)> = env.into_iter().collect();
        let log_format = env
            .iter()
            .find(|(k, v)| k == "LOG_FORMAT" && !v.is_empty())
            .map(|(_, v)| v.clone());
        for (key, var) in env::apply_env(&mut table, &schema, env, &mut problems) {
            problems.came_from(key, var);
        }
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
                    p.came_from(format!("file[{i}].pattern"), "LOG_FORMAT".into());
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
