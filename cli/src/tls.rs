//! `meshctl tls`: writes the cluster's CA and node certificates as PEM files
//! for meshd's `--tls-ca`, `--tls-cert` and `--tls-key`.
//!
//! The certificates themselves come from `mesh_protocol::pki`; this module
//! reads and writes the files, and is given the time.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_protocol::ids::IdError;
use mesh_protocol::pki::{self, OffsetDateTime, PkiError};

use crate::commands::{CaCreateArgs, CertCreateArgs, TlsCaCommand, TlsCertCommand, TlsCommand};

/// Certificates start this long before now, so a peer whose clock is a
/// little behind still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Why a `meshctl tls` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot read {}: {source}; create the CA with `meshctl tls ca create --dir {}`, or point --dir at the directory that holds ca.pem and ca-key.pem",
        path.display(),
        dir.display()
    )]
    ReadCa {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "--cert and --key need --ca, the cluster CA the agent's certificate is checked against"
    )]
    NoCa,
    #[error(
        "give --node NAME for a node's certificate, or --client NAME --role ROLE for an API client's"
    )]
    NoSubject,
    #[error("invalid node name: {0}")]
    Node(#[from] IdError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What to show an agent that serves HTTPS, from meshctl's `--ca`,
/// `--cert` and `--key`; None without `--ca` (plain HTTP).
pub fn client_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<crate::client::ClientTls>, TlsError> {
    let read = |what, path: &Path| {
        fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let Some(ca) = ca else {
        return if cert.is_some() {
            Err(TlsError::NoCa)
        } else {
            Ok(None)
        };
    };
    let identity_pem = match (cert, key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("the client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("the client key", key)?);
            Some(pem)
        }
        // clap makes --cert and --key go together.
        _ => None,
    };
    Ok(Some(crate::client::ClientTls {
        ca_pem: read("the CA certificate", ca)?,
        identity_pem,
    }))
}

/// Carries out a `meshctl tls` command at time `now`; returns what to print.
pub fn run(command: &TlsCommand, now: SystemTime) -> Result<String, TlsError> {
    match command {
        TlsCommand::Ca(TlsCaCommand::Create(args)) => create_ca(args, now),
        TlsCommand::Cert(TlsCertCommand::Create(args)) => create_cert(args, now),
    }
}

/// Writes DIR/ca.pem and DIR/ca-key.pem.
pub fn create_ca(args: &CaCreateArgs, now: SystemTime) -> Result<String, TlsError> {
    let cert_path = args.dir.join("ca.pem");
    let key_path = args.dir.join("ca-key.pem");
    refuse_overwrite(&[&cert_path, &key_path], args.force)?;
    let ca = pki::create_ca(&args.cluster, not_before(now), args.days)?;
    create_dir(&args.dir)?;
    write_file(&key_path, &ca.key_pem, Mode::Private, args.force)?;
    write_file(&cert_path, &ca.cert_pem, Mode::Public, args.force)?;
    Ok(format!(
        "wrote {cert} (the CA certificate: give it to every node)\n\
         wrote {key} (the CA key: keep it secret; whoever holds it can admit nodes)\n\
         next, for each node: meshctl tls cert create --node NAME --dir {dir}\n",
        cert = cert_path.display(),
        key = key_path.display(),
        dir = args.dir.display(),
    ))
}

/// Writes OUT/NAME.pem and OUT/NAME-key.pem, signed by the CA in DIR: a
/// node's certificate, or with `--client` an API client's.
pub fn create_cert(args: &CertCreateArgs, now: SystemTime) -> Result<String, TlsError> {
    let start = not_before(now);
    if let (Some(user), Some(role)) = (&args.client, args.role) {
        let [cert, key, ca] = sign_into(args, user.as_str(), |ca| {
            pki::create_client_cert(ca, user, role, start, args.days)
        })?;
        return Ok(format!(
            "wrote {cert} (the API certificate of user {user}, role {role})\n\
             wrote {key} (its key: give it to {user} only)\n\
             call an agent started with --api-tls with: meshctl --ca {ca} --cert {cert} --key {key}\n"
        ));
    }
    let Some(node) = args.node()? else {
        return Err(TlsError::NoSubject);
    };
    let [cert, key, ca] = sign_into(args, node.as_str(), |ca| {
        pki::create_node_cert(ca, &node, start, args.days)
    })?;
    Ok(format!(
        "wrote {cert} (the certificate of node {node})\n\
         wrote {key} (its key: keep it on that node only)\n\
         start meshd on {node} with: --node-id {node} --tls-ca {ca} --tls-cert {cert} --tls-key {key}\n"
    ))
}

/// Signs a certificate with the CA in DIR (`make`) and writes it and its
/// key as OUT/NAME.pem and OUT/NAME-key.pem; returns their paths and the
/// CA's, for display.
fn sign_into(
    args: &CertCreateArgs,
    name: &str,
    make: impl FnOnce(&pki::Ca) -> Result<pki::NodeCert, PkiError>,
) -> Result<[String; 3], TlsError> {
    let out = args.out_dir();
    let ca_path = args.dir.join("ca.pem");
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}-key.pem"));
    refuse_overwrite(&[&cert_path, &key_path], args.force)?;
    let ca = pki::Ca {
        cert_pem: read_ca(&ca_path, &args.dir)?,
        key_pem: read_ca(&args.dir.join("ca-key.pem"), &args.dir)?,
    };
    let cert = make(&ca)?;
    create_dir(out)?;
    write_file(&key_path, &cert.key_pem, Mode::Private, args.force)?;
    write_file(&cert_path, &cert.cert_pem, Mode::Public, args.force)?;
    Ok([cert_path, key_path, ca_path].map(|p| p.display().to_string()))
}

fn not_before(now: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now))
}

fn read_ca(path: &Path, dir: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::ReadCa {
        path: path.to_owned(),
        dir: dir.to_owned(),
        source,
    })
}

/// Checks every file before writing any, so a refusal leaves nothing half
/// written.
fn refuse_overwrite(paths: &[&Path], force: bool) -> Result<(), TlsError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|path| path.exists()) {
        Some(path) => Err(TlsError::Exists(path.to_path_buf())),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Who may read a written file.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Everyone (certificates).
    Public,
    /// The owner only (private keys).
    Private,
}

/// Writes a new file, or with `force` replaces it. A replaced file is
/// removed first, so a key never inherits a looser mode from the file it
/// replaces, and is never readable by others while it is written.
fn write_file(path: &Path, contents: &str, mode: Mode, force: bool) -> Result<(), TlsError> {
    let failed = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(match mode {
            Mode::Public => 0o644,
            Mode::Private => 0o600,
        });
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.to_owned())
        } else {
            failed(e)
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)
}
