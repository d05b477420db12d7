//! `scripts/install` into a staging root: the binaries, the systemd unit
//! pointing at them, the data dir, and an example configuration that
//! meshd's own configuration layer accepts; a second run keeps an edited
//! configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mesh_agent::{Args, Config};

fn install(root: &Path, prefix: &str) {
    let meshd = Path::new(env!("CARGO_BIN_EXE_meshd"));
    let bins = meshd.parent().expect("the binary's directory");
    assert!(
        bins.join("meshctl").exists(),
        "{} has no meshctl: build the workspace first (cargo test --workspace does)",
        bins.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install");
    let out = Command::new(script)
        .arg("--root")
        .arg(root)
        .args(["--prefix", prefix, "--bin-dir"])
        .arg(bins)
        .output()
        .expect("scripts/install runs");
    assert!(
        out.status.success(),
        "scripts/install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn install_puts_binaries_unit_data_dir_and_a_valid_example_config_in_place() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install(r, "/opt/ganger");

    for bin in ["meshd", "meshctl"] {
        assert_eq!(mode(&r.join("opt/ganger/bin").join(bin)), 0o755, "{bin}");
    }
    let version = Command::new(r.join("opt/ganger/bin/meshd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("meshd "));
    assert_eq!(mode(&r.join("var/lib/meshd")), 0o700);
    assert!(r.join("opt/ganger/share/doc/ganger/operations.md").exists());

    let unit = std::fs::read_to_string(r.join("etc/systemd/system/meshd.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/ganger/bin/meshd --config /etc/meshd/meshd.toml\n"),
        "{unit}"
    );
    assert!(
        !unit.contains("/usr/local/"),
        "the prefix is used throughout: {unit}"
    );
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");

    // The example is what meshd reads: its configuration layer accepts it
    // (unknown keys would be refused).
    let config = r.join("etc/meshd/meshd.toml");
    let args = Args {
        config: Some(config.clone()),
        ..Default::default()
    };
    let parsed = Config::from_args(&args);
    assert!(parsed.is_ok(), "the example configuration: {parsed:?}");

    // A second run keeps what the operator edited.
    std::fs::write(&config, "node_id = \"edited\"\n").unwrap();
    install(r, "/opt/ganger");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "node_id = \"edited\"\n"
    );
}
