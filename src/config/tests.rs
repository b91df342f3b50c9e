use std::time::Duration;

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
