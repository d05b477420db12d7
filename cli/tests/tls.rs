//! Runs the built `meshctl tls` in a temporary directory: the files it
//! writes, their modes, and its refusal to overwrite.

// Test harness: a setup that fails should panic right there.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use mesh_protocol::pki;
use tempfile::TempDir;

fn meshctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(dir)
        // Must not stand in for `tls cert create --node`.
        .env("MESH_NODE", "agent.example:7700")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(path: &Path) -> Vec<u8> {
    pki::cert_pem_to_der(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn creates_a_ca_and_a_node_certificate() {
    let tmp = TempDir::new().unwrap();
    let out = meshctl(tmp.path(), &["tls", "ca", "create", "--cluster", "lab"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tmp.path().join("mesh-tls");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ca.pem") && stdout.contains("ca-key.pem"),
        "{stdout}"
    );
    assert!(
        stdout.contains("meshctl tls cert create --node NAME"),
        "{stdout}"
    );
    assert_eq!(
        pki::cert_node_name(&der(&dir.join("ca.pem"))).unwrap(),
        "Ganger CA lab"
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);

    let out = meshctl(
        tmp.path(),
        &[
            "tls", "cert", "create", "--node", "node-1", "--out", "certs",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let certs = tmp.path().join("certs");
    assert_eq!(
        pki::cert_node_name(&der(&certs.join("node-1.pem"))).unwrap(),
        "node-1"
    );
    assert!(
        std::fs::read_to_string(certs.join("node-1-key.pem"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    #[cfg(unix)]
    assert_eq!(mode(&certs.join("node-1-key.pem")), 0o600);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "--tls-ca ./mesh-tls/ca.pem --tls-cert certs/node-1.pem --tls-key certs/node-1-key.pem"
        ),
        "{stdout}"
    );
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("mesh-tls");
    assert!(
        meshctl(tmp.path(), &["tls", "ca", "create"])
            .status
            .success()
    );
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();

    let out = meshctl(tmp.path(), &["tls", "ca", "create"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already exists; pass --force to overwrite it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);

    let out = meshctl(tmp.path(), &["tls", "ca", "create", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);

    let create = ["tls", "cert", "create", "--node", "n1"];
    assert!(meshctl(tmp.path(), &create).status.success());
    let out = meshctl(tmp.path(), &create);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("n1.pem already exists"));
    let forced = [&create[..], &["--force"]].concat();
    assert!(meshctl(tmp.path(), &forced).status.success());
}

#[test]
fn cert_create_needs_a_node_and_a_ca() {
    let tmp = TempDir::new().unwrap();
    // MESH_NODE is set, but names an agent, not the certificate's node.
    let out = meshctl(tmp.path(), &["tls", "cert", "create"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--node <NAME>"));

    let out = meshctl(tmp.path(), &["tls", "cert", "create", "--node", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert!(stderr.contains("meshctl tls ca create"), "{stderr}");
    assert!(!tmp.path().join("mesh-tls").exists());
}
