//! A real image registry for tests: Debian's `docker-registry` (the
//! distribution registry v2) on a loopback port, which Docker pulls from
//! without TLS. Images pushed to it are removed from Docker when it stops.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// A running registry; stops it and removes what was pushed and pulled on
/// drop. Its output (the access log, one line a request) goes to a file:
/// [`TestRegistry::blob_bytes_sent`] reads it.
pub struct TestRegistry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Runs `docker ARGS`, failing the test with its output if it fails.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestRegistry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub async fn start() -> Self {
        let binary = "/usr/bin/docker-registry";
        assert!(
            Path::new(binary).exists(),
            "these tests need Debian's docker-registry package (scripts/test installs it)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the registry's config");
        let log = std::fs::File::create(dir.path().join("access.log")).expect("a log file");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Self {
            addr,
            child,
            _dir: dir,
        };
        super::wait_until("the registry answers", Duration::from_secs(20), || {
            let addr = registry.addr.clone();
            async move {
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        registry
    }

    /// Builds an image of its own on `base` (a layer of 256 KiB of random
    /// bytes on top, so the host does not already hold all its layers),
    /// pushes it as `repo_tag` and removes it from Docker. Returns the full
    /// name.
    pub fn push_new(&self, base: &str, repo_tag: &str) -> String {
        self.push_new_sized(base, repo_tag, 256 * 1024)
    }

    /// As [`TestRegistry::push_new`], with a layer of `bytes` random bytes.
    pub fn push_new_sized(&self, base: &str, repo_tag: &str, bytes: usize) -> String {
        let dir = tempfile::tempdir().expect("a build context");
        let mut noise = vec![0u8; bytes];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut noise);
        std::fs::write(dir.path().join("noise"), noise).expect("write the layer");
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {base}\nCOPY noise /noise\n"),
        )
        .expect("write the Dockerfile");
        let name = format!("{}/{repo_tag}", self.addr);
        let context = dir.path().to_string_lossy().into_owned();
        docker_cli(&["build", "-q", "-t", &name, &context]);
        docker_cli(&["push", &name]);
        docker_cli(&["rmi", &name]);
        name
    }

    /// Bytes of image blobs (layers and configs) the registry has sent, by
    /// its access log: the sum of the sizes of its answers to `GET
    /// .../blobs/...` (pushes are `PUT`s and `HEAD`s send no body).
    pub fn blob_bytes_sent(&self) -> u64 {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        log.lines().filter_map(blob_bytes).sum()
    }

    /// Bytes of the blobs the registry stores (each layer compressed, as
    /// pushed, and each image's config).
    pub fn stored_blob_bytes(&self) -> u64 {
        let blobs = self._dir.path().join("data/docker/registry/v2/blobs");
        let out = Command::new("find")
            .arg(&blobs)
            .args(["-type", "f", "-name", "data", "-printf", "%s\\n"])
            .output()
            .expect("run find");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum()
    }

    /// Pushes the local image `local` to this registry as `repo_tag`, then
    /// removes the pushed name from Docker, so only a pull brings it back.
    /// Returns the full name (`127.0.0.1:PORT/repo:tag`).
    pub fn push(&self, local: &str, repo_tag: &str) -> String {
        let name = format!("{}/{repo_tag}", self.addr);
        docker_cli(&["tag", local, &name]);
        docker_cli(&["push", &name]);
        docker_cli(&["rmi", &name]);
        name
    }
}

/// The body size of one access-log line (combined format: `... "GET
/// /v2/NAME/blobs/sha256:... HTTP/1.1" 200 SIZE ...`) if it answered a blob
/// GET with content.
fn blob_bytes(line: &str) -> Option<u64> {
    let (_, request) = line.split_once("\"GET ")?;
    let (path, rest) = request.split_once('"')?;
    if !path.contains("/blobs/") {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let status = fields.next()?;
    if !status.starts_with('2') {
        return None;
    }
    fields.next()?.parse().ok()
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Every name of this registry that Docker still has.
        if let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        {
            let prefix = format!("{}/", self.addr);
            for name in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with(&prefix))
            {
                let _ = Command::new("docker").args(["rmi", name]).output();
            }
        }
    }
}
