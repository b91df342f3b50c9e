//! `[mongodb]`: MongoDB as the store, and how its URI is shown.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::units::{ByteSize, HumanDuration};

/// `[mongodb]`: MongoDB as the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    pub enabled: bool,
    /// A MongoDB connection string; credentials and TLS options go in it (`MONGODB_URI` overrides).
    pub uri: String,
    /// `MONGODB_DB_NAME` overrides.
    pub database: String,
    pub collections: CollectionNames,
    /// Write concern: `"majority"` or a number of members (at least 1, so writes are acknowledged).
    pub w: WriteConcernW,
    /// Ask for the write to be in the journal before it is acknowledged.
    pub journal: bool,
    pub connect_timeout: HumanDuration,
    pub server_selection_timeout: HumanDuration,
    /// An insert unanswered this long counts as an outage: its batch goes to the outbox (a hung or
    /// black-holed server must not hold events, and the clients waiting for them, for ever).
    pub write_timeout: HumanDuration,
    /// Batches that could not reach MongoDB wait in the outbox; past this size the oldest are dropped.
    pub max_outbox_bytes: ByteSize,
}

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig {
            enabled: true,
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "llm_api".into(),
            collections: CollectionNames::default(),
            w: WriteConcernW::Nodes(1),
            journal: true,
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            server_selection_timeout: HumanDuration(Duration::from_secs(5)),
            write_timeout: HumanDuration(Duration::from_secs(10)),
            max_outbox_bytes: ByteSize(1 << 30),
        }
    }
}

impl MongoConfig {
    pub fn validate(&self, p: &mut Problems) {
        if !self.uri.starts_with("mongodb://") && !self.uri.starts_with("mongodb+srv://") {
            p.add("mongodb.uri", "does not start with mongodb:// or mongodb+srv://");
        }
        if self.database.is_empty() {
            p.add(
                "mongodb.database",
                "is empty; expected a database name such as \"llm_api\"",
            );
        }
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(600));
        p.duration_in("mongodb.connect_timeout", self.connect_timeout, min, max);
        p.duration_in(
            "mongodb.server_selection_timeout",
            self.server_selection_timeout,
            min,
            max,
        );
        p.size_in(
            "mongodb.max_outbox_bytes",
            self.max_outbox_bytes,
            1 << 20,
            crate::units::MAX_BYTES,
        );
    }
}

/// MongoDB's `w`. Zero is not offered: without an acknowledgement nothing could be known to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConcernW {
    Majority,
    Nodes(u32),
}

impl Serialize for WriteConcernW {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WriteConcernW::Majority => s.serialize_str("majority"),
            WriteConcernW::Nodes(n) => s.collect_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for WriteConcernW {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WriteConcernW;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"majority\" or a number of members ≥ 1 such as \"1\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WriteConcernW, E> {
                if s == "majority" {
                    return Ok(WriteConcernW::Majority);
                }
                match s.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(WriteConcernW::Nodes(n)),
                    _ => Err(E::custom(format!(
                        "is {s:?}; expected \"majority\" or a number of members ≥ 1 such as \"1\""
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WriteConcernW, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionNames {
    pub api_logs: String,
    pub api_cost: String,
    pub api_performance: String,
    pub api_rejects: String,
    pub api_metrics: String,
    pub api_alerts: String,
}

impl CollectionNames {
    /// The configured name of `c`.
    pub fn name(&self, c: crate::event::Collection) -> &str {
        use crate::event::Collection::*;
        match c {
            Logs => &self.api_logs,
            Cost => &self.api_cost,
            Performance => &self.api_performance,
            Rejects => &self.api_rejects,
            Metrics => &self.api_metrics,
            Alerts => &self.api_alerts,
        }
    }
}

impl Default for CollectionNames {
    fn default() -> Self {
        CollectionNames {
            api_logs: "api_logs".into(),
            api_cost: "api_cost".into(),
            api_performance: "api_performance".into(),
            api_rejects: "api_rejects".into(),
            api_metrics: "api_metrics".into(),
            api_alerts: "api_alerts".into(),
        }
    }
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

/// `mongodb://user:secret@db1:27017,db2/novel?tls=true` → `db1:27017,db2`: where MongoDB is, for
/// a person reading the page, without credentials or options.
pub fn uri_hosts(uri: &str) -> String {
    let rest = uri.find("://").map_or(uri, |i| &uri[i + 3..]);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_hosts_of_a_uri_carry_no_credentials_or_options() {
        assert_eq!(
            uri_hosts("mongodb://app:s3cret@db1:27017,db2/novel?tls=true"),
            "db1:27017,db2"
        );
        assert_eq!(
            uri_hosts("mongodb+srv://cluster0.example.net/?retryWrites=true"),
            "cluster0.example.net"
        );
        assert_eq!(uri_hosts("mongodb://127.0.0.1:27017"), "127.0.0.1:27017");
        assert_eq!(uri_hosts("mongodb://u:p@w@h:1/"), "h:1");
    }

    #[test]
    fn mongodb_section_env_names_and_masking() {
        let load_env = |text: &str, env: &[(&str, &str)]| {
            Config::from_toml(
                text,
                "test.toml",
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .map_err(|e| e.first().clone())
        };
        let c = load_env("", &[]).unwrap();
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
        let c = load_env("", &[("MONGODB_DB_NAME", "novel")]).unwrap();
        assert!(c.mongo().is_none(), "MONGODB_DB_NAME alone does not");
        let c = load_env("[mongodb]\nenabled = false\n", &[]).unwrap();
        assert!(c.mongo().is_none());
        let e = load_env("[mongodb]\nuri = \"http://x\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "mongodb.uri");
        let e = load_env("[mongodb]\nw = \"0\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "mongodb.w");
        let e = load_env("[mongodb.collections]\napi_log = \"x\"\n", &[]).unwrap_err();
        assert!(e.problem.contains("did you mean `mongodb.collections.api_logs`"), "{e}");
        assert_eq!(mask_uri_password("mongodb://h1,h2/db"), "mongodb://h1,h2/db");
        assert_eq!(
            mask_uri_password("mongodb+srv://u:p@x.example/db?authSource=admin"),
            "mongodb+srv://u:***@x.example/db?authSource=admin"
        );
    }
}
