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
fn every_problem_is_listed_once_even_several_in_one_section_and_checks_of_other_sections() {
    // Six problems: two type errors and an unknown key in one section, a range the section's own
    // check finds, a bad value from the environment, and one in a section that deserializes.
    let text = "[pipeline]\nmax_bach = 10\nmax_wait = 200\nmax_batch = \"lots\"\n[retention]\napi_logs = \"150000000000d\"\n[socket]\nmax_line_bytes = 1\n";
    let e = Config::from_toml(text, "t.toml", [("LOG_LEVEL".to_string(), "LOUD".to_string())]).unwrap_err();
    let keys: Vec<&str> = e.0.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "pipeline.max_bach",
        "pipeline.max_wait",
        "pipeline.max_batch",
        "retention.api_logs",
        "socket.max_line_bytes",
        "log.level",
    ] {
        assert_eq!(keys.iter().filter(|k| **k == key).count(), 1, "{key} once in:\n{e}");
    }
    assert_eq!(keys.len(), 6, "{e}");
}

/// The app's `.env.example` names, with the values of the report (20 / 80 / 7.2).
const APP_ENV: &str = "# API Cost Limits\nAPI_HOURLY_LIMIT_RMB=20\nAPI_DAILY_LIMIT_RMB=80\nAPI_USD_TO_RMB_RATE=7.2\n\
ENABLE_MONGODB=false\nMONGODB_URI=mongodb://host.docker.internal:27017/\nMONGODB_DB_NAME=llm_api\n";

fn with_env_file(toml: &str, dotenv: &str, process: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, dotenv).unwrap();
    let process = process.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_parts(toml, "c.toml", Some(dir.path()), process, Some(&env_file))
}

#[test]
fn the_apps_env_sets_the_limits_and_rate_and_enable_mongodb_false_keeps_the_embedded_store() {
    let c = with_env_file("", APP_ENV, &[]).unwrap();
    assert_eq!(c.budget.hourly_limit_rmb, 20.0);
    assert_eq!(c.budget.daily_limit_rmb, 80.0);
    assert_eq!(c.budget.usd_to_rmb_rate, 7.2);
    assert!(
        c.mongo().is_none(),
        "ENABLE_MONGODB=false: the embedded store, whatever MONGODB_URI says"
    );
    assert!(c
        .provenance
        .of("budget.hourly_limit_rmb")
        .starts_with("API_HOURLY_LIMIT_RMB (in "));
    // A [mongodb] section of the file gives way too, and the start says so.
    let c = with_env_file("[mongodb]\nuri = \"mongodb://db1\"\n", APP_ENV, &[]).unwrap();
    assert!(c.mongo().is_none());
    assert!(
        c.provenance
            .warnings
            .iter()
            .any(|w| w.contains("turns off the [mongodb] section")),
        "{:?}",
        c.provenance.warnings
    );
}

#[test]
fn enable_mongodb_is_read_as_the_app_reads_it() {
    let mongo = |value: &str, extra: &str| {
        with_env_file("", &format!("ENABLE_MONGODB={value}\n{extra}"), &[])
            .unwrap()
            .mongo()
            .cloned()
    };
    // True: MongoDB at the app's default address and database.
    let m = mongo("True", "").expect("ENABLE_MONGODB=True is true");
    assert_eq!(m.database, "llm_api");
    assert_eq!(m.uri, "mongodb://127.0.0.1:27017");
    let m = mongo("true", "MONGODB_URI=mongodb://db1:27017/\nMONGODB_DB_NAME=novels\n").unwrap();
    assert_eq!(
        (m.uri.as_str(), m.database.as_str()),
        ("mongodb://db1:27017/", "novels")
    );
    // The app compares with "true": anything else is false, as in its config.py.
    assert!(mongo("1", "MONGODB_URI=mongodb://db1/\n").is_none());
    assert!(mongo("yes", "MONGODB_URI=mongodb://db1/\n").is_none());
    // Without ENABLE_MONGODB, a URI alone chooses MongoDB (a systemd EnvironmentFile with secrets).
    let c = with_env_file("", "MONGODB_URI=mongodb://db1/\n", &[]).unwrap();
    assert!(c.mongo().is_some());
    // The collector's own name wins over the app's.
    let c = with_env_file(
        "",
        "ENABLE_MONGODB=false\nMONGODB_URI=mongodb://db1/\n",
        &[("LNGPT_COLLECTOR_MONGODB_ENABLED", "true")],
    )
    .unwrap();
    assert_eq!(c.mongo().map(|m| m.uri.as_str()), Some("mongodb://db1/"));
}

#[test]
fn precedence_process_environment_then_env_file_then_file_then_defaults() {
    let toml = "[budget]\nhourly_limit_rmb = 30.0\ndaily_limit_rmb = 300.0\nusd_to_rmb_rate = 6.5\n[pipeline]\nmax_batch = 200\n";
    let dotenv = "API_HOURLY_LIMIT_RMB=20\nAPI_DAILY_LIMIT_RMB=80\nLNGPT_COLLECTOR_BUDGET_DAILY_LIMIT_RMB=90\n";
    let c = with_env_file(toml, dotenv, &[("API_HOURLY_LIMIT_RMB", "10")]).unwrap();
    assert_eq!(c.budget.hourly_limit_rmb, 10.0, "the process environment over the .env");
    assert_eq!(
        c.budget.daily_limit_rmb, 90.0,
        "the collector's own name over the app's"
    );
    assert_eq!(c.budget.usd_to_rmb_rate, 6.5, "the file over the default");
    assert_eq!(c.pipeline.max_wait.0, Duration::from_millis(200), "the default");
    assert_eq!(c.provenance.of("budget.hourly_limit_rmb"), "API_HOURLY_LIMIT_RMB");
    assert!(c
        .provenance
        .of("budget.daily_limit_rmb")
        .starts_with("LNGPT_COLLECTOR_BUDGET_DAILY_LIMIT_RMB (in "));
    assert_eq!(c.provenance.of("budget.usd_to_rmb_rate"), "c.toml");
    assert_eq!(c.provenance.of("pipeline.max_wait"), "default");
}

#[test]
fn env_file_is_found_relative_to_the_file_and_a_missing_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.env"), "API_DAILY_LIMIT_RMB=80\n").unwrap();
    let c = Config::from_parts("env_file = \"app.env\"\n", "c.toml", Some(dir.path()), Vec::new(), None).unwrap();
    assert_eq!(c.budget.daily_limit_rmb, 80.0);
    let e = Config::from_parts(
        "env_file = \"nope.env\"\n",
        "c.toml",
        Some(dir.path()),
        Vec::new(),
        None,
    )
    .unwrap_err();
    assert_eq!(
        (e.first().origin.as_str(), e.first().key.as_str()),
        ("c.toml", "env_file")
    );
    assert!(e.first().problem.contains("cannot read"), "{e}");
}

#[test]
fn the_names_earlier_versions_read_still_apply_with_a_warning() {
    let c = load_env_config("", &[("HOURLY_LIMIT_RMB", "25")]);
    assert_eq!(c.budget.hourly_limit_rmb, 25.0);
    assert!(
        c.provenance.warnings.iter().any(|w| w.contains("API_HOURLY_LIMIT_RMB")),
        "{:?}",
        c.provenance.warnings
    );
    // The app's name wins when both are set.
    let c = load_env_config("", &[("HOURLY_LIMIT_RMB", "25"), ("API_HOURLY_LIMIT_RMB", "20")]);
    assert_eq!(c.budget.hourly_limit_rmb, 20.0);
}

fn load_env_config(text: &str, env: &[(&str, &str)]) -> Config {
    Config::from_toml(
        text,
        "test.toml",
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap()
}

#[test]
fn enumerations_refuse_unknown_names_with_a_suggestion() {
    let e = load(
        "[[webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/x\"\nrules = [\"budget_daily\", \"error_rate\"]\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "webhook[0].rules[0]");
    assert!(e.problem.contains("did you mean \"budget\"?"), "{e}");
    let e = load("[log]\nformat = \"jsno\"\n").unwrap_err();
    assert_eq!(e.key, "log.format");
    assert!(e.problem.contains("did you mean `json`?"), "{e}");
}

#[test]
fn the_readable_file_warning_is_only_for_a_file_that_holds_a_secret() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    // Secrets in the environment (as the warning advises), none in the file.
    let env = [
        ("MONGODB_URI", "mongodb://collector:S3cret@db1:27017"),
        ("LNGPT_COLLECTOR_API_TOKEN", "0123456789abcdef"),
    ];
    let warning = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        load_env(text, &env).unwrap().secrets_readable_warning(&path)
    };
    let clean = "[mongodb]\nenabled = true\ndatabase = \"llm_api\"\n\n[[webhook]]\nname = \"am\"\nformat = \"alertmanager\"\nurl = \"http://alertmanager:9093\"\n\n[[webhook]]\nname = \"local\"\nurl = \"http://127.0.0.1:9000/hooks/alerts\"\n";
    assert_eq!(warning(clean, 0o644), None, "no secret in the file");
    for secret in [
        "[mongodb]\nuri = \"mongodb://collector:S3cret@db1:27017\"\n",
        "[api]\ntoken = \"0123456789abcdef\"\n",
        "[[webhook]]\nname = \"ops\"\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef\"\n",
        "[[webhook]]\nname = \"ops\"\nurl = \"https://0123456789abcdefXYZW@hooks.example.com/notify\"\n",
        "[[webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9000/hooks/alerts\"\nsecret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZg==\"\n",
    ] {
        let w = warning(secret, 0o644).unwrap_or_else(|| panic!("a warning for {secret}"));
        assert!(w.contains("readable by every user (mode 0644); run chmod 640"), "{w}");
        assert_eq!(warning(secret, 0o640), None, "not readable by others: {secret}");
    }
}
