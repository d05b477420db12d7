//! Registry credentials (`--registry-auth FILE`): Docker's `config.json`
//! format (`{"auths": {"REGISTRY": {"auth": base64("user:password")}}}`,
//! or `username`/`password`/`identitytoken` fields), or a directory of such
//! files, merged. Looked up by an image's registry. Never logged, gossiped
//! or returned by the API: only registry names are shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::runtime::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("--registry-auth {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--registry-auth {path}: not Docker's config.json format ({{\"auths\": {{\"REGISTRY\": {{\"auth\": \"...\"}}}}}}): {reason}"
    )]
    Format { path: PathBuf, reason: String },
}

/// Credentials by registry host (`127.0.0.1:5000`, `docker.io`).
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    by_registry: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Most bytes one credentials file may hold.
const MAX_FILE_BYTES: u64 = 1 << 20;

impl RegistryAuth {
    /// Reads `path`: one file, or every `*.json` file of a directory.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let read_err = |source| AuthError::Read {
            path: path.to_owned(),
            source,
        };
        let mut auth = Self::default();
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                auth.merge_file(&f)?;
            }
        } else {
            auth.merge_file(path)?;
        }
        Ok(auth)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), AuthError> {
        let read_err = |source| AuthError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_FILE_BYTES {
            return Err(AuthError::Format {
                path: path.to_owned(),
                reason: format!("{size} bytes, more than {MAX_FILE_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let parsed = Self::parse(&text).map_err(|reason| AuthError::Format {
            path: path.to_owned(),
            reason,
        })?;
        self.by_registry.extend(parsed.by_registry);
        Ok(())
    }

    /// Parses one `config.json`. The reason names the registry whose entry
    /// is wrong, never a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|e| {
            // serde_json's message names a line and column, not the content.
            format!(
                "line {}, column {}: {:?} error",
                e.line(),
                e.column(),
                e.classify()
            )
        })?;
        let mut by_registry = BTreeMap::new();
        for (key, entry) in file.auths {
            let registry = normalise(&key);
            let creds = entry
                .credentials()
                .map_err(|why| format!("the entry for {registry}: {why}"))?;
            by_registry.insert(registry, creds);
        }
        Ok(Self { by_registry })
    }

    /// The credentials for `registry`, if any.
    pub fn for_registry(&self, registry: &str) -> Option<Credentials> {
        self.by_registry.get(&normalise(registry)).cloned()
    }

    /// The registries credentials are held for (for logs: names only).
    pub fn registries(&self) -> Vec<&str> {
        self.by_registry.keys().map(String::as_str).collect()
    }
}

impl Entry {
    fn credentials(self) -> Result<Credentials, String> {
        let (mut username, mut password) = (self.username, self.password);
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| "\"auth\" is not base64".to_owned())?;
            let text = String::from_utf8(decoded)
                .map_err(|_| "\"auth\" does not decode to text".to_owned())?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| "\"auth\" does not decode to user:password".to_owned())?;
            username = Some(u.to_owned());
            password = Some(p.to_owned());
        }
        let creds = Credentials {
            username,
            password,
            identity_token: self.identitytoken.filter(|t| !t.is_empty()),
        };
        if creds.password.is_none() && creds.identity_token.is_none() {
            return Err("no \"auth\", \"password\" or \"identitytoken\"".to_owned());
        }
        Ok(creds)
    }
}

/// A registry key as Docker writes it (`https://index.docker.io/v1/`,
/// `http://127.0.0.1:5000`) as the host part of an image name.
fn normalise(key: &str) -> String {
    let host = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests;
