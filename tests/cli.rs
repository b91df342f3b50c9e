//! The command line: configuration errors users will actually make, and what they are told.

use crate::common;

use std::process::{Command, Output};

use crate::common::BIN;

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

#[test]
fn check_config_quiet_prints_nothing_when_valid_and_the_problems_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, "state_dir = \"./d\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--quiet", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    std::fs::write(&path, "[pipeline]\nmax_bach = 10\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-q", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_bach"));
}

/// The packaging's step: man pages and completions from the clap definitions, the hidden
/// subcommand itself in neither.
#[test]
fn generate_docs_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("generate-docs")
        .arg(dir.path())
        // No configuration is read: a bad one in the environment does not matter.
        .env("LOG_LEVEL", "LOUD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let man = std::fs::read_to_string(dir.path().join("man/lngpt-collector.1")).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
    assert!(
        man.contains("check\\-config") && man.contains("LNGPT_COLLECTOR_"),
        "{man}"
    );
    assert!(!man.contains("generate\\-docs"), "{man}");
    for page in ["run", "check-config", "send", "alert", "alert-test"] {
        assert!(
            dir.path().join(format!("man/lngpt-collector-{page}.1")).exists(),
            "{page}"
        );
    }
    assert!(!dir.path().join("man/lngpt-collector-generate-docs.1").exists());
    // One page per real command, none for clap's `help` pseudo-commands.
    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "lngpt-collector-alert-test.1",
            "lngpt-collector-alert.1",
            "lngpt-collector-check-config.1",
            "lngpt-collector-run.1",
            "lngpt-collector-send.1",
            "lngpt-collector.1"
        ]
    );
    for file in ["lngpt-collector.bash", "_lngpt-collector", "lngpt-collector.fish"] {
        let text = std::fs::read_to_string(dir.path().join("completions").join(file)).unwrap();
        assert!(
            text.contains("check-config") && !text.contains("generate-docs"),
            "{file}"
        );
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("generate-docs"));
}

/// A python3 that has python-dotenv (`.ci/run` installs Debian's `python3-dotenv`).
fn python_with_dotenv() -> &'static str {
    for python in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(python)
            .args(["-c", "import dotenv"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!("no python3 with python-dotenv: apt-get install python3-dotenv (.ci/run does)");
}

/// The app reads its `.env` with python-dotenv's `dotenv_values`: the collector reads the same
/// file to the same values, on files that use every corner of its syntax.
#[test]
fn an_env_file_reads_to_what_python_dotenv_reads() {
    let files = [
        // The app's .env.example, abridged, as it ships.
        "# MongoDB Configuration - MongoDB数据库配置\n# 是否启用MongoDB\nENABLE_MONGODB=false\nMONGODB_URI=mongodb://host.docker.internal:27017/\nMONGODB_DB_NAME=llm_api\n\n# 每小时费用上限（人民币）\nAPI_HOURLY_LIMIT_RMB=100\nAPI_DAILY_LIMIT_RMB=500\nAPI_USD_TO_RMB_RATE=7\nWENXIN_AK=\nDEFAULT_MAIN_MODEL=zhipuai/glm-4-air\n",
        "export A=1\nexport  B = two words \nC='single # kept' # dropped\nD=\"dq \\\"esc\\\" \\n \\t \\\\ end\"\nE=x#y\nF=x #y\n",
        "MULTI=\"first\nsecond\"\nS='it\\'s'\nT='a\\\\b'\nU=\"\"\nV=''\nNAME_ONLY\n = bad\nW=${A}-${MISSING:-dflt}-${HOME_DIR}\n",
        "A=1\r\nB=2\rC=\"x\r\ny\"\r\nA=3\n\n\n   # indented comment\n  G = spaced\nH='unterminated\nI=after\n",
        "K=\"a\\\\\"\nL=\"quote\\\" inside\"\nM=emoji 🚀 中文\nN=trailing   \n'O'=quoted key\nP=${K}${L}\n",
    ];
    let python = python_with_dotenv();
    for (i, text) in files.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(python)
            .args([
                "-c",
                "import json, sys; from dotenv import dotenv_values; print(json.dumps(dotenv_values(sys.argv[1])))",
            ])
            .arg(&path)
            .env("HOME_DIR", "/home/app")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let ours = lngpt_collector::config::dotenv::parse(text, |n| (n == "HOME_DIR").then(|| "/home/app".into()));
        let ours: serde_json::Map<String, serde_json::Value> = ours
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.map_or(serde_json::Value::Null, serde_json::Value::String)))
            .collect();
        assert_eq!(ours, theirs, "file {i}:\n{text}");
    }
}

/// `--env-file` with the app's `.env`: the limits, rate and store it sets, shown by `check-config`
/// with where each came from, and stated by the start line.
#[test]
fn the_apps_env_file_sets_limits_rate_and_store_and_check_config_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        "ENABLE_MONGODB=false\nMONGODB_URI=mongodb://host.docker.internal:27017/\nMONGODB_DB_NAME=llm_api\nAPI_HOURLY_LIMIT_RMB=20\nAPI_DAILY_LIMIT_RMB=80\nAPI_USD_TO_RMB_RATE=7.2\n",
    )
    .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[api]\nenabled = false\n[log]\nsummary_interval = \"0\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let clean = |cmd: &mut Command| {
        for (name, _) in std::env::vars() {
            if name.starts_with("LNGPT_")
                || name.starts_with("API_")
                || name.starts_with("MONGODB")
                || name == "ENABLE_MONGODB"
                || name == "LOG_LEVEL"
            {
                cmd.env_remove(name);
            }
        }
    };
    let mut check = Command::new(BIN);
    check
        .args(["check-config", "--config"])
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file);
    clean(&mut check);
    let out = check.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let origin = format!("(in {})", env_file.display());
    for (line, var) in [
        ("hourly_limit_rmb = 20.0", "API_HOURLY_LIMIT_RMB"),
        ("daily_limit_rmb = 80.0", "API_DAILY_LIMIT_RMB"),
        ("usd_to_rmb_rate = 7.2", "API_USD_TO_RMB_RATE"),
        ("enabled = false", "ENABLE_MONGODB"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && l.ends_with(&format!("# {var} {origin}"))),
            "{line} from {var} in:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("max_batch = 1000") && l.ends_with("# default")),
        "{text}"
    );
    // The daemon runs on the embedded store with those limits, and says so when it starts.
    let mut run = Command::new(BIN);
    run.args(["run", "--config"])
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file);
    clean(&mut run);
    let mut child = run.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut started = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        if line.contains("started:") {
            started = line;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        started.contains("embedded SQLite store")
            && started.contains("budget ¥20 an hour, ¥80 a day at 7.2 RMB per USD"),
        "{started}"
    );
}
