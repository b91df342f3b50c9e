//! Configuration: a TOML file, environment overrides, and validation with precise messages.
//!
//! Loading goes file → TOML table → unknown-key check → environment overrides (the process's, over
//! the app's `.env` when `env_file` names one) → typed structs → range checks. Each section's struct lives with the module that uses it and checks its own
//! values (`validate`); this module only assembles them. The known keys are read off the
//! serialized defaults, so the structs are the schema and a new key needs no second list.
//!
//! Every problem is reported, not just the first, and each names where the value came from (the
//! file or the environment variable), the key, what is wrong and what is expected.

pub mod dotenv;
mod env;
mod schema;
mod show;
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
pub use env::{Origin, ENV_PREFIX};
pub use schema::all_key_paths;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The app's `.env` (python-dotenv's syntax), read for the app's names and `LNGPT_COLLECTOR_*`
    /// under the process environment; relative to this file's directory. `--env-file` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
    /// Embedded store, outbox and checkpoints live here; created if missing.
    pub state_dir: PathBuf,
    /// How a time without an offset is read: `"local"` (the host's zone, as Python's naive
    /// `datetime.now()` means), `"UTC"`, or an IANA name.
    pub naive_timezone: String,
    /// An event timestamped further ahead of the collector's clock than this is stored with its
    /// own time, flagged (`extra.clock_skew_ms`), reported, and counted at its arrival by the
    /// monitor and the budget, so one wrong clock cannot move their windows.
    pub max_clock_skew: HumanDuration,
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
    /// Where each value came from, and what loading noticed: not a key.
    #[serde(skip)]
    pub provenance: Provenance,
}

/// What the configuration is read from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file; none: the built-in defaults.
    pub file: Option<PathBuf>,
    /// The app's `.env` (`--env-file`), in place of the file's `env_file`.
    pub env_file: Option<PathBuf>,
}

/// Where each effective value came from (for `check-config`), and warnings about values that are
/// used but deserve a look (a line of the `.env` that cannot be parsed, a renamed variable).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The file's name as problems cite it, or "(built-in defaults)".
    pub file: String,
    /// Dotted key paths the file sets (`budget.hourly_limit_rmb`, `file[0].path`).
    from_file: std::collections::BTreeSet<String>,
    /// Dotted key path → the variable that set it (`API_HOURLY_LIMIT_RMB (in /srv/app/.env)`).
    from_env: std::collections::BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl Provenance {
    /// Where the value of `key` came from: a variable, the file, or the default.
    pub fn of(&self, key: &str) -> String {
        if let Some(var) = self.from_env.get(key) {
            return var.clone();
        }
        if self.from_file.contains(key) {
            return self.file.clone();
        }
        "default".into()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            env_file: None,
            state_dir: PathBuf::from("/var/lib/lngpt-collector"),
            naive_timezone: "local".into(),
            max_clock_skew: HumanDuration(std::time::Duration::from_millis(
                crate::event::parser::DEFAULT_MAX_CLOCK_SKEW_MS as u64,
            )),
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
            provenance: Provenance::default(),
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
        Config::load_from(&Sources {
            file: Some(path.to_path_buf()),
            env_file: None,
        })
    }

    /// Reads the file (or the defaults) and the `.env` the sources name, applies the process
    /// environment, validates.
    pub fn load_from(sources: &Sources) -> Result<Config, ConfigErrors> {
        let (text, origin, dir) = match &sources.file {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new(&origin, "", format!("cannot read the file: {e}")))?;
                (text, origin, path.parent().map(Path::to_path_buf))
            }
            None => (String::new(), "(built-in defaults)".to_string(), None),
        };
        Config::from_parts(
            &text,
            &origin,
            dir.as_deref(),
            std::env::vars(),
            sources.env_file.as_deref(),
        )
    }

    /// Parses TOML text, overridden by `env` (name, value) pairs, and validates.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::from_parts(text, origin, None, env, None)
    }

    /// The loader. `dir`: the file's directory, where a relative `env_file` is; `env_file`: the
    /// command line's, which wins over the variable and the file's key.
    pub fn from_parts(
        text: &str,
        origin: &str,
        dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        env_file: Option<&Path>,
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
        schema::check_unknown_keys(&mut table, &schema, "", &mut problems);
        let mut provenance = Provenance {
            file: origin.to_string(),
            from_file: show::leaf_paths(&table),
            ..Provenance::default()
        };
        let mut environment = env::Environment::new(env);
        if let Some((path, source)) = env_file_path(env_file, &environment, &table, dir) {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let parsed = dotenv::parse(&text, |name| environment.get(name).map(str::to_string));
                    for w in parsed.warnings {
                        provenance.warnings.push(format!("{}: {w}", path.display()));
                    }
                    environment.add_env_file(&path, parsed.vars);
                }
                Err(e) => {
                    let problem = format!("cannot read {}: {e}", path.display());
                    match source.as_str() {
                        "env_file" => problems.add("env_file", problem),
                        _ => problems.add_env(&source, "env_file", problem),
                    }
                }
            }
        }
        let (applied, warnings) = env::apply_env(&mut table, &schema, &environment, &mut problems);
        provenance.warnings.extend(warnings);
        for (key, origin) in applied {
            problems.came_from(key.clone(), origin.clone());
            provenance.from_env.insert(key, origin);
        }
        let log_format = environment
            .get("LOG_FORMAT")
            .filter(|v| !v.is_empty())
            .map(|v| (v.to_string(), environment.describe("LOG_FORMAT")));
        let mut config = deserialize_sections(table, &mut problems);
        config.fill_text_patterns(log_format, &mut problems, &mut provenance);
        config.validate(&mut problems);
        config.provenance = provenance;
        problems.into_result().map(|()| config)
    }

    /// Gives every text `[[file]]` entry without a `pattern` the app's: the `LOG_FORMAT`
    /// environment variable if set, else the original `LOG_FORMAT`. A pattern in the entry wins:
    /// entries may tail other programs' logs, while `LOG_FORMAT` describes the app's.
    fn fill_text_patterns(&mut self, log_format: Option<(String, String)>, p: &mut Problems, from: &mut Provenance) {
        use crate::source::file::{python::DEFAULT_PATTERN, Format};
        for (i, f) in self.file.iter_mut().enumerate() {
            if f.format == Format::Json || f.pattern.is_some() {
                continue;
            }
            f.pattern = Some(match &log_format {
                Some((pattern, origin)) => {
                    let key = format!("file[{i}].pattern");
                    p.came_from(key.clone(), origin.clone());
                    from.from_env.insert(key, origin.clone());
                    pattern.clone()
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
        p.duration_in(
            "max_clock_skew",
            self.max_clock_skew,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(86_400),
        );
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
        // A receiver's `rules` name the monitor's rules: a name that is none of them would
        // silently route nothing there.
        for (i, w) in self.webhook.iter().enumerate() {
            for (j, rule) in w.rules.iter().enumerate() {
                let names = crate::monitor::rules::RULE_NAMES;
                if !rule.trim().is_empty() && !names.contains(&rule.as_str()) {
                    let hint = crate::problems::closest(rule, names)
                        .map(|h| format!("did you mean \"{h}\"? "))
                        .unwrap_or_default();
                    p.add(
                        &format!("webhook[{i}].rules[{j}]"),
                        format!(
                            "is {rule:?}, which is not a rule; {hint}the rules are: {}",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
        self.api.validate(p);
    }

    /// The effective configuration as TOML, for `check-config`, with passwords masked and each
    /// value followed by where it came from.
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
        match toml::Value::try_from(&shown) {
            Ok(toml::Value::Table(table)) => show::annotated(self, &table),
            Ok(_) => "# cannot print the configuration\n".into(),
            Err(e) => format!("# cannot print the configuration: {e}\n"),
        }
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

/// The `.env` to read, and what to blame if it cannot be: `--env-file`, else
/// `LNGPT_COLLECTOR_ENV_FILE`, else the file's `env_file` (relative to the file's directory).
fn env_file_path(
    arg: Option<&Path>,
    env: &env::Environment,
    table: &toml::Table,
    dir: Option<&Path>,
) -> Option<(PathBuf, String)> {
    if let Some(path) = arg {
        return Some((path.to_path_buf(), "--env-file".into()));
    }
    if let Some(path) = env.get("LNGPT_COLLECTOR_ENV_FILE").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), "LNGPT_COLLECTOR_ENV_FILE".into()));
    }
    let path = PathBuf::from(table.get("env_file")?.as_str()?);
    let path = match dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    };
    Some((path, "env_file".into()))
}

/// Deserializes each top-level key on its own, so that a bad value in one section does not hide
/// the problems of the others; within a section, a key whose value is wrong is reported and taken
/// out (its default stands in), and the rest is tried again, so every bad value is reported once.
fn deserialize_sections(table: toml::Table, p: &mut Problems) -> Config {
    let mut config = Config::default();
    for (key, value) in table {
        macro_rules! section {
            ($($name:literal => $field:expr),* $(,)?) => {
                match key.as_str() {
                    $($name => if let Some(v) = section_value(&key, value, p) {
                        $field = v;
                    },)*
                    _ => {} // already reported as unknown
                }
            };
        }
        section!(
            "env_file" => config.env_file,
            "state_dir" => config.state_dir,
            "naive_timezone" => config.naive_timezone,
            "max_clock_skew" => config.max_clock_skew,
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
    config
}

/// At most this many wrong values are reported per section (each costs one more attempt).
const MAX_PROBLEMS_PER_SECTION: usize = 64;

fn section_value<T: DeserializeOwned>(key: &str, value: toml::Value, p: &mut Problems) -> Option<T> {
    // Wrapped in a table so that the path serde reports starts with the section's name.
    let mut wrapper = toml::Value::Table(toml::Table::from_iter([(key.to_string(), value)]));
    #[derive(Deserialize)]
    struct One<T>(std::collections::BTreeMap<String, T>);
    for _ in 0..MAX_PROBLEMS_PER_SECTION {
        match serde_path_to_error::deserialize::<_, One<T>>(wrapper.clone()) {
            Ok(mut one) => return one.0.remove(key),
            Err(e) => {
                let path = e.path().to_string();
                let path = path
                    .strip_prefix('?')
                    .unwrap_or(&path)
                    .trim_start_matches('.')
                    .to_string();
                let segments: Vec<serde_path_to_error::Segment> = e.path().iter().cloned().collect();
                p.add(
                    &path,
                    crate::problems::with_suggestion(e.into_inner().message().to_string()),
                );
                p.defaulted(&path);
                // The section itself is wrong (or the path cannot be followed): its default stands.
                if segments.len() < 2 || !remove_at(&mut wrapper, &segments) {
                    return None;
                }
            }
        }
    }
    None
}

/// Takes the value at serde's `path` out of `value`; false if the path leads nowhere.
fn remove_at(value: &mut toml::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        current = match (segment, current) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key).is_some(),
        // An entry of a list cannot be left out without shifting the others' positions: its
        // table is emptied instead, so its own defaults stand in.
        (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
            Some(toml::Value::Table(t)) if !t.is_empty() => {
                t.clear();
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
