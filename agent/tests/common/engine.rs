//! A second Docker engine on this host, for tests that need engines that
//! do not share images (a node per host, as in production): its own
//! `dockerd` with an empty config file, data root, exec root, socket and
//! pidfile, the vfs storage driver, no iptables, and a default bridge of
//! its own in 10.251.0.0/16 (never `--bridge none`: that removed the main
//! engine's docker0 once). Stopped, its bridge and data removed, on drop.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A running second engine.
pub struct Engine {
    /// Its endpoint, `unix:///tmp/gs.../docker.sock`.
    pub host: String,
    bridge: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

impl Engine {
    /// Starts one and waits until it answers.
    pub async fn start() -> Engine {
        // Short: a unix socket's path is at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("gs")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        let (bridge, subnet) = Self::bridge();
        let path = dir.path();
        std::fs::write(path.join("daemon.json"), "{}").expect("write the config");
        let host = format!("unix://{}", path.join("docker.sock").display());
        let log = std::fs::File::create(path.join("dockerd.log")).expect("a log file");
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(path.join("daemon.json"))
            .arg("--data-root")
            .arg(path.join("data"))
            .arg("--exec-root")
            .arg(path.join("x"))
            .arg("--host")
            .arg(&host)
            .arg("--pidfile")
            .arg(path.join("docker.pid"))
            .args(["--storage-driver", "vfs", "--iptables=false", "--bridge"])
            .arg(&bridge)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let engine = Engine {
            host,
            bridge,
            child,
            dir: Some(dir),
        };
        super::wait_until(
            &format!("the second engine on {subnet} answers"),
            Duration::from_secs(60),
            || async {
                let out = engine.cli(&["version", "--format", "{{.Server.Version}}"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            },
        )
        .await;
        engine
    }

    /// A bridge of its own on a free /24 of 10.251.0.0/16.
    fn bridge() -> (String, String) {
        for _ in 0..50 {
            let n: u8 = rand::random::<u8>().max(1);
            let subnet = format!("10.251.{n}.1/24");
            let taken = ip(&["-br", "addr"]);
            if String::from_utf8_lossy(&taken.stdout).contains(&format!("10.251.{n}.")) {
                continue;
            }
            let name = format!("gsh{n}x{:04x}", rand::random::<u16>());
            if !ip(&["link", "add", &name, "type", "bridge"])
                .status
                .success()
            {
                continue;
            }
            assert!(ip(&["addr", "add", &subnet, "dev", &name]).status.success());
            assert!(ip(&["link", "set", &name, "up"]).status.success());
            return (name, subnet);
        }
        panic!("no free subnet in 10.251.0.0/16 for a second engine");
    }

    /// Runs `docker -H <this engine> ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("run the docker CLI")
    }

    /// Whether this engine has `image`.
    pub fn has_image(&self, image: &str) -> bool {
        self.cli(&["image", "inspect", image]).status.success()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and its containerd.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).output();
        let mut ended = false;
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = ip(&["link", "del", &self.bridge]);
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if dir.close().is_err() {
                // A mount left behind: unmount what is under it, once more.
                let _ = Command::new("umount")
                    .args(["-R", "-l"])
                    .arg(&path)
                    .output();
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}
