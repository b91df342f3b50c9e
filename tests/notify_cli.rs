//! The webhook side of the command line: `alert test` against real loopback receivers, and
//! `check-config` showing `[[webhook]]` entries with their keys masked.

use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::common::webhook::{Receiver, Reply};
use crate::common::BIN;

fn run(args: &[&str], config: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("LOG_LEVEL")
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn alert_test_sends_to_each_receiver_prints_the_answers_and_fails_if_one_failed() {
    let generic = Receiver::start(|_, _| Reply::status(200, "thanks"));
    let dingtalk = Receiver::start(|_, _| Reply::status(200, r#"{"errcode":310000,"errmsg":"sign not match"}"#));
    let secret = format!("whsec_{}", B64.encode(b"0123456789abcdef0123456789abcdef"));
    let config = format!(
        "state_dir = \"./unused\"\n\
         [[webhook]]\nname = \"hooks\"\nurl = \"{}\"\nsecret = \"{secret}\"\n\
         [[webhook]]\nname = \"dt\"\nformat = \"dingtalk\"\nurl = \"{}\"\nsecret = \"SECabc\"\n",
        generic.url("/in"),
        dingtalk.url("/robot/send?access_token=0123456789abcdef")
    );
    let (out, _dir) = run(&["alert", "test"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one receiver failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("hooks (generic, http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("): OK\n  answer: HTTP 200: thanks"), "{stdout}");
    assert!(stdout.contains("signature: Standard Webhooks v1"), "{stdout}");
    assert!(
        stdout.contains("dt (dingtalk, ") && stdout.contains("): FAILED"),
        "{stdout}"
    );
    assert!(stdout.contains("access_token=***cdef"), "the key is masked: {stdout}");
    assert!(!stdout.contains("0123456789abcdef"), "{stdout}");
    assert!(
        stdout.contains("errcode 310000") && stdout.contains("signature: DingTalk 加签"),
        "{stdout}"
    );
    assert!(stderr.contains("1 of 2 webhooks failed the test"), "{stderr}");

    // What the generic receiver got is signed, and says it is a test.
    let r = &generic.received()[0];
    let (id, ts) = (r.header("webhook-id").unwrap(), r.header("webhook-timestamp").unwrap());
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
    let n = &r.json()["data"]["notifications"][0];
    assert_eq!(n["rule"], "alert_test");
    assert!(n["title"].as_str().unwrap().contains("测试告警"), "{n}");

    // Only the named one; it succeeds.
    let (out, _dir) = run(&["alert", "test", "--receiver", "hooks"], &config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(generic.received().len(), 2);
    assert_eq!(dingtalk.received().len(), 1);
    let (out, _dir) = run(&["alert", "test", "--receiver", "nope"], &config);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no [[webhook]] is named \"nope\"; the configured ones are: hooks, dt"));
}

#[test]
fn alert_test_reports_a_receiver_that_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!("[[webhook]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}/\"\ntimeout = \"2s\"\n");
    let (out, _dir) = run(&["alert", "test"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("FAILED") && stdout.contains("cannot connect"),
        "{stdout}"
    );
    let (out, _dir) = run(&["alert", "test"], "state_dir = \"./x\"\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[webhook]] entry"));
}

#[test]
fn check_config_masks_webhook_keys_and_secrets() {
    let config = "state_dir = \"./d\"\n\
        [[webhook]]\nname = \"dt\"\nformat = \"dingtalk\"\n\
        url = \"https://oapi.dingtalk.com/robot/send?access_token=9f8e7d6c5b4a39281706\"\nsecret = \"SECverysecret\"\n\
        [[webhook]]\nname = \"fs\"\nformat = \"feishu\"\n\
        url = \"https://open.feishu.cn/open-apis/bot/v2/hook/2d5e8b1c-3f4a-4b6c-9d7e-0a1b2c3d4e5f\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("LNGPT_COLLECTOR_WEBHOOK_FS_SECRET", "fromtheenvironment")
        .env_remove("LOG_LEVEL")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("access_token=***1706"), "{printed}");
    assert!(printed.contains("/open-apis/bot/v2/hook/***4e5f"), "{printed}");
    for secret in [
        "9f8e7d6c5b4a39281706",
        "SECverysecret",
        "fromtheenvironment",
        "0a1b2c3d4e5f",
    ] {
        assert!(!printed.contains(secret), "{secret} shown:\n{printed}");
    }
    assert!(printed.contains("secret = \"***\""), "{printed}");
    assert!(printed.contains("group_wait = \"10s\""), "defaults shown: {printed}");
}
