//! `meshctl --version` names the build: version, commit and day, the same
//! version agents gossip and `meshctl peers` shows.

use std::process::Command;

#[test]
fn version_names_the_commit_and_the_build_day() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--version")
        .output()
        .expect("meshctl runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("meshctl {}\n", mesh_protocol::build_info::LONG_VERSION);
    assert_eq!(text, want);
    assert!(
        text.contains(" (commit ") && text.contains(", built "),
        "{text}"
    );
}
