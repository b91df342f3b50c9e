//! The command line: configuration errors users will actually make, and what they are told.

mod common;

use std::process::{Command, Output};

use common::BIN;

fn check(config: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check-config", "--config"])
        .arg(&path)
        .env_remove("LOG_LEVEL")
        .env_remove("LOG_FORMAT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn error_of(config: &str, env: &[(&str, &str)]) -> String {
    let out = check(config, env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad config exits 1; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn the_example_config_is_valid_and_documents_every_key() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap();
    let out = check(&example, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("max_batch = 1000") && printed.contains("state_dir = \"./data\""),
        "{printed}"
    );
    let table: toml::Table = example.parse().unwrap();
    let root = toml::Value::Table(table);
    for key in lngpt_collector::config::all_key_paths() {
        let segments: Vec<&str> = key.split('.').collect();
        let set = segments.iter().try_fold(&root, |v, s| v.get(s)).is_some();
        let name = segments.last().unwrap();
        // Optional sections are shown commented out, key by key.
        let commented = example.contains(&format!("# {name} ="));
        assert!(set || commented, "config.example.toml does not show `{key}`");
    }
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let e = error_of("state_dir = \"./d\"\n[pipeline]\nmax_bach = 10\n", &[]);
    assert!(
        e.contains(
            "collector.toml: `pipeline.max_bach` is not a known key in [pipeline]; did you mean `pipeline.max_batch`?"
        ),
        "{e}"
    );
    let e = error_of("[sokcet]\npath = \"x\"\n", &[]);
    assert!(
        e.contains("`sokcet` is not a known key or section; did you mean `socket`?"),
        "{e}"
    );
}

#[test]
fn a_text_log_pattern_that_cannot_be_read_names_the_key_and_says_what_to_write() {
    let file = "state_dir = \"./d\"\n[[file]]\npath = \"app.log\"\nformat = \"python\"\n";
    let e = error_of(&format!("{file}pattern = \"%(asctime)s %(name)s%(message)s\"\n"), &[]);
    assert!(
        e.contains("collector.toml: `file[0].pattern` has `%(name)…` followed directly by `%(message)…`, so where one ends cannot be told; put a separator between them"),
        "{e}"
    );
    let e = error_of(file, &[("LOG_FORMAT", "%(levelname)s %(msg)s")]);
    assert!(
        e.contains("LOG_FORMAT: `file[0].pattern` has no `%(message)s`"),
        "blamed on the variable: {e}"
    );
    let out = check(file, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("pattern = \"%(asctime)s - %(name)s - %(levelname)s - %(message)s\""),
        "the pattern in effect is shown: {printed}"
    );
}

#[test]
fn wrong_values_say_what_is_expected() {
    let e = error_of("[pipeline]\nmax_batch = \"lots\"\n", &[]);
    assert!(
        e.contains("`pipeline.max_batch` invalid type: string \"lots\", expected usize"),
        "{e}"
    );
    let e = error_of("[pipeline]\nmax_batch = 0\n", &[]);
    assert!(
        e.contains("`pipeline.max_batch` is 0; expected a number from 1 to 100000"),
        "{e}"
    );
    let e = error_of("[pipeline]\nmemory_budget = \"10KiB\"\n", &[]);
    assert!(
        e.contains("`pipeline.memory_budget` is 10KiB; expected a size from 1MiB to 64GiB"),
        "{e}"
    );
    let e = error_of("[pipeline]\nmax_wait = 200\n", &[]);
    assert!(
        e.contains("`pipeline.max_wait` 200 has no unit; write it as a string with one, such as \"200s\" or \"200ms\""),
        "{e}"
    );
    let e = error_of("[socket]\nmode = \"rw-rw----\"\n", &[]);
    assert!(
        e.contains("`socket.mode` is \"rw-rw----\"; expected an octal file mode such as \"0660\""),
        "{e}"
    );
    let e = error_of("[log]\nformat = \"xml\"\n", &[]);
    assert!(
        e.contains("`log.format` unknown variant `xml`, expected `text` or `json`"),
        "{e}"
    );
    let e = error_of("[redact]\npatterns = [\"(unclosed\"]\n", &[]);
    assert!(
        e.contains("redact.patterns[0] is not a valid regular expression"),
        "{e}"
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let e = error_of("state_dir = \"./data\"\n[pipeline\nmax_batch = 1\n", &[]);
    assert!(
        e.contains("collector.toml: line 2, column") && e.contains("not valid TOML"),
        "{e}"
    );
}

#[test]
fn environment_overrides_are_checked_like_the_file() {
    let out = check(
        "[pipeline]\nmax_batch = 10\n",
        &[("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH", "500"), ("LOG_LEVEL", "debug")],
    );
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("max_batch = 500") && printed.contains("level = \"debug\""),
        "{printed}"
    );
    let e = error_of("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH", "many")]);
    assert!(
        e.contains("LNGPT_COLLECTOR_PIPELINE_MAX_BATCH: `pipeline.max_batch` expects a whole number, got \"many\""),
        "{e}"
    );
    let e = error_of("", &[("LNGPT_COLLECTOR_PIPELINE_MAXBATCH", "5")]);
    assert!(e.contains("did you mean LNGPT_COLLECTOR_PIPELINE_MAX_BATCH?"), "{e}");
}

#[test]
fn a_missing_file_and_run_with_a_bad_file_fail_the_same_way() {
    let out = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/collector.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/collector.toml: cannot read the file"));
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("check-config") && help.contains("Examples:") && help.contains("LNGPT_COLLECTOR_"),
        "{help}"
    );
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("lngpt-collector {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn sizes_and_durations_that_would_overflow_are_refused_by_check_config_and_run() {
    for (config, key) in [
        ("[retention]\napi_logs = \"150000000000d\"\n", "retention.api_logs"),
        (
            "[pipeline]\nmax_wait = \"99999999999999999999s\"\n",
            "pipeline.max_wait",
        ),
        (
            "[pipeline]\nmemory_budget = 9223372036854775807\n",
            "pipeline.memory_budget",
        ),
    ] {
        let e = error_of(config, &[]);
        assert!(e.contains(&format!("`{key}`")), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("state_dir = {:?}\n{config}", dir.path().join("s"))).unwrap();
        let out = common::run_until_exit(&path);
        assert_eq!(out.status.code(), Some(1), "run refuses {key} too");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key));
    }
    let e = error_of("", &[("LNGPT_COLLECTOR_PIPELINE_MAX_WAIT", "99999999999999999999s")]);
    assert!(
        e.contains("LNGPT_COLLECTOR_PIPELINE_MAX_WAIT: `pipeline.max_wait`") && e.contains("too long"),
        "{e}"
    );
}

#[test]
fn python_log_level_names_work_and_unknown_ones_are_refused() {
    for level in ["WARNING", "CRITICAL", "debug", "Info"] {
        let out = check("", &[("LOG_LEVEL", level)]);
        assert!(
            out.status.success(),
            "LOG_LEVEL={level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let e = error_of("", &[("LOG_LEVEL", "LOUD")]);
    assert!(
        e.contains("LOG_LEVEL: `log.level` is \"LOUD\"") && e.contains("expected trace, debug, info, warning"),
        "{e}"
    );
}

#[test]
fn every_problem_in_a_file_is_listed_at_once() {
    let e = error_of(
        "[pipeline]\nmax_batch = 0\nmax_bach = 1\n[log]\nformat = \"xml\"\n",
        &[],
    );
    for key in ["pipeline.max_batch", "pipeline.max_bach", "log.format"] {
        assert!(e.contains(&format!("`{key}`")), "{key} missing from:\n{e}");
    }
}
