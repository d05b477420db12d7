//! meshd's log lines as an operator's log file or shipper gets them: text
//! without colour codes when stdout is not a terminal, and one JSON object
//! per line with `--log-format json`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts meshd with `extra` flags, its stdout to a file, until it has
/// logged that it listens (or 20 s passed); returns what it wrote.
fn log_of(dir: &Path, extra: &[&str]) -> String {
    let out = dir.join(format!("meshd-{}.log", extra.len()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args([
            "--node-id",
            "logs",
            "--topology",
            "numa:1 core:1 pu:1",
            "--insecure-dev",
            "--bind",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join(format!("data-{}", extra.len())))
        .args(extra)
        .env("MESH_LOG", "info")
        .stdout(std::fs::File::create(&out).expect("the log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("meshd starts");
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("API") && text.lines().count() >= 3
            || started.elapsed() > Duration::from_secs(20)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let text = log_of(dir.path(), &[]);
    assert!(text.lines().count() >= 3, "meshd logged: {text:?}");
    assert!(!text.contains('\u{1b}'), "escape codes in a file: {text:?}");
    assert!(text.contains("INFO"), "{text}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = log_of(dir.path(), &["--log-format", "json"]);
    assert!(text.lines().count() >= 3, "meshd logged: {text:?}");
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"].is_object(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(["--log-format", "yaml"])
        .output()
        .expect("meshd runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}
