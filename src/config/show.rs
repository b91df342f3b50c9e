//! `check-config`'s printout: the effective configuration as TOML that loads back, each value
//! followed by where it came from (the file, a variable and the file that set it, or the default),
//! so that a value the app's `.env` changed is never a surprise.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Config, Provenance};

/// The dotted paths of the values a TOML table sets: `budget.hourly_limit_rmb`, `file[0].path`,
/// `prices.gpt-4o.input_per_million` (map keys as they are, unquoted).
pub(super) fn leaf_paths(table: &toml::Table) -> BTreeSet<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (key, value) in table {
            let path = join(prefix, key);
            match value {
                toml::Value::Table(t) => walk(&path, t, out),
                toml::Value::Array(items) if is_table_array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let toml::Value::Table(t) = item {
                            walk(&format!("{path}[{i}]"), t, out);
                        }
                    }
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", table, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_table_array(items: &[toml::Value]) -> bool {
    !items.is_empty() && items.iter().all(toml::Value::is_table)
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

/// Writes `shown` (the configuration with its secrets masked) as TOML, each value annotated.
pub(super) fn annotated(config: &Config, shown: &toml::Table) -> String {
    let mut out = String::new();
    write_table(&mut out, "", "", None, shown, &config.provenance, config);
    out
}

/// Column where the origin comments start, when the value leaves room.
const COMMENT_COLUMN: usize = 48;

/// `path`: the table's dotted path for provenance (`file[0]`); `name`: its TOML name (`file`,
/// `prices."gpt-4o"`); `header`: how it is opened (`[name]`, `[[name]]`, or nothing at the top).
fn write_table(
    out: &mut String,
    path: &str,
    name: &str,
    header: Option<String>,
    table: &toml::Table,
    from: &Provenance,
    config: &Config,
) {
    let leaves: Vec<(&String, &toml::Value)> = table
        .iter()
        .filter(|(_, v)| !v.is_table() && !matches!(v, toml::Value::Array(a) if is_table_array(a)))
        .collect();
    // An array entry is always opened; a table only when it holds values (or nothing at all).
    if let Some(header) = header.filter(|h| h.starts_with("[[") || !leaves.is_empty() || table.is_empty()) {
        let _ = writeln!(out, "\n{header}");
    }
    if path == "socket" && config.socket.path.is_none() {
        let _ = writeln!(
            out,
            "# path = {:?}   (the default: state_dir/collector.sock)",
            config.socket_path().display().to_string()
        );
    }
    for (key, value) in leaves {
        let line = format!("{} = {}", toml_key(key), value);
        let origin = from.of(&join(path, key));
        let pad = COMMENT_COLUMN.saturating_sub(line.chars().count()).max(2);
        let _ = writeln!(out, "{line}{:pad$}# {origin}", "");
    }
    for (key, value) in table {
        let sub_name = match name {
            "" => toml_key(key),
            _ => format!("{name}.{}", toml_key(key)),
        };
        match value {
            toml::Value::Table(t) => {
                let header = Some(format!("[{sub_name}]"));
                write_table(out, &join(path, key), &sub_name, header, t, from, config);
            }
            toml::Value::Array(items) if is_table_array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        let entry = format!("{}[{i}]", join(path, key));
                        let header = Some(format!("[[{sub_name}]]"));
                        write_table(out, &entry, &sub_name, header, t, from, config);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_says_where_it_came_from_and_the_text_loads_back() {
        let file = "state_dir = \"./data\"\n[budget]\nhourly_limit_rmb = 20.0\n[[file]]\npath = \"/var/log/a.jsonl\"\n";
        let env = [("API_DAILY_LIMIT_RMB".to_string(), "80".to_string())];
        let config = Config::from_toml(file, "collector.toml", env).unwrap();
        let text = config.to_masked_toml();
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
                .to_string()
        };
        assert!(line("hourly_limit_rmb").ends_with("# collector.toml"), "{text}");
        assert!(line("daily_limit_rmb").ends_with("# API_DAILY_LIMIT_RMB"), "{text}");
        assert!(line("usd_to_rmb_rate").ends_with("# default"), "{text}");
        assert!(line("path").ends_with("# collector.toml"), "{text}");
        let back = Config::from_toml(&text, "printed", Vec::new()).unwrap();
        assert_eq!(back.budget.daily_limit_rmb, 80.0);
        assert_eq!(back.file[0].path, config.file[0].path);
    }
}
