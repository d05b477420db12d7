//! `scripts/install` into a staging root: the binaries, the systemd unit
//! pointing at them (and `systemd-analyze verify` accepting it there), the
//! data dir, and an example configuration that meshd's own configuration
//! layer accepts; a second run keeps an edited configuration.

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

/// Runs `systemd-analyze verify` on the unit installed under `root`, offline:
/// `--root` makes systemd look for units and for ExecStart's binary inside
/// the staging root (so the installed meshd must be where the unit says),
/// and this host's own units are copied in for the targets the unit names
/// (`multi-user.target`, `network-online.target`, ...). Returns verify's
/// complaints: none (empty) when the unit is sound. verify exits 0 on some
/// complaints it "ignores" (an unknown Type=, a misspelt key), so any output
/// counts as a failure.
fn systemd_verify(root: &Path) -> Result<(), String> {
    let analyze =
        std::env::var("MESH_SYSTEMD_ANALYZE").unwrap_or_else(|_| "systemd-analyze".into());
    let units = root.join("usr/lib/systemd/system");
    if !units.exists() {
        std::fs::create_dir_all(root.join("usr/lib/systemd"))
            .expect("usr/lib/systemd in the staging root");
        let copy = Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(&units)
            .status()
            .expect("cp runs");
        assert!(
            copy.success(),
            "copying /usr/lib/systemd/system into the staging root failed: install Debian's `systemd` package (scripts/test does)"
        );
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/meshd.service")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {analyze} ({e}): install Debian's `systemd` package (scripts/test does), or set MESH_SYSTEMD_ANALYZE")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("systemd-analyze verify ({}): {said}", out.status))
    }
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
    if let Err(e) = systemd_verify(r) {
        panic!("the installed unit: {e}\n--- the unit:\n{unit}");
    }

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

/// The check above can fail: a unit whose ExecStart names a missing binary,
/// or with a misspelt key, or an unknown service type, is refused.
#[test]
fn systemd_verify_refuses_a_broken_unit() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install(r, "/opt/ganger");
    let path = r.join("etc/systemd/system/meshd.service");
    let good = std::fs::read_to_string(&path).unwrap();
    assert_eq!(systemd_verify(r), Ok(()), "the unit as installed");

    let broken = [
        ("a misspelt key", good.replace("ExecStart=", "ExecStrat=")),
        (
            "an unknown service type",
            good.replace("Type=exec", "Type=bogus"),
        ),
        (
            "a binary that is not there",
            good.replace("/opt/ganger/bin/meshd", "/opt/ganger/bin/nosuch"),
        ),
    ];
    for (what, text) in broken {
        assert_ne!(text, good, "{what}: the edit changed nothing");
        std::fs::write(&path, &text).unwrap();
        assert!(systemd_verify(r).is_err(), "{what} was accepted:\n{text}");
    }
}
