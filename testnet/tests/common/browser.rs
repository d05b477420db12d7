//! A real browser for the dashboard's test: Debian's chromium, headless,
//! driven through its chromedriver (on a loopback port of its own) with
//! fantoccini. The driver is killed when the `Browser` drops.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Where chromedriver and chromium are (Debian's chromium-driver and
/// chromium packages), unless the environment names others.
const DRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    pub client: Client,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session.
    pub async fn start() -> Result<Browser> {
        let driver_bin = std::env::var("MESH_CHROMEDRIVER").unwrap_or_else(|_| DRIVER.into());
        let chromium = std::env::var("MESH_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        for bin in [&driver_bin, &chromium] {
            if !std::path::Path::new(bin).exists() {
                bail!(
                    "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
                );
            }
        }
        // A port the kernel gave us, handed to the driver (released just
        // before it binds it).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {driver_bin}"))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // As root chromium needs --no-sandbox; /dev/shm is small in
                // containers.
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1400,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client =
            crate::common::wait_until("chromedriver answers", Duration::from_secs(30), || {
                let (caps, url, connector) = (caps.clone(), url.clone(), connector.clone());
                async move {
                    ClientBuilder::new(connector)
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        Ok(Browser {
            client,
            _driver: driver,
        })
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Clicks the element `css` names, as a user would.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))?;
        Ok(())
    }

    /// Types `text` into the element `css` names.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))?
            .send_keys(text)
            .await?;
        Ok(())
    }

    /// Saves a PNG of the window as `target/dashboard/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// `target/dashboard` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("dashboard")
}
