//! `meshctl token create`: draws a bearer token (`mesh_protocol::token`),
//! prints its secret and adds the line that accepts it to a tokens file;
//! and reading the token meshctl sends (`--token-file`, `MESH_TOKEN`).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mesh_protocol::token::{self, TokenError};

use crate::commands::{TokenCommand, TokenCreateArgs};

/// Why a token could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot append to the tokens file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token {what} is empty; give the secret `meshctl token create` printed")]
    Empty { what: String },
}

/// Carries out a `meshctl token` command; returns what to print.
pub fn run(command: &TokenCommand) -> Result<String, TokenFileError> {
    match command {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: &TokenCreateArgs) -> Result<String, TokenFileError> {
    let new = token::create(&args.user, args.role)?;
    match &args.tokens_file {
        Some(path) => {
            append(path, &new.line)?;
            Ok(format!("{}\n", new.secret))
        }
        None => Ok(format!(
            "{}\n# add this line to meshd's --api-tokens file:\n{}\n",
            new.secret, new.line
        )),
    }
}

/// Appends a line, creating the file readable by its owner only.
fn append(path: &Path, line: &str) -> Result<(), TokenFileError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(|source| TokenFileError::Write {
            path: path.to_owned(),
            source,
        })
}

/// The token to send: `--token-file`'s content, else `MESH_TOKEN`'s
/// value, trimmed; None when neither is given.
pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<String>, TokenFileError> {
    let (text, what) = match (file, env) {
        (Some(path), _) => (
            std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
                path: path.to_owned(),
                source,
            })?,
            format!("file {}", path.display()),
        ),
        (None, Some(value)) => (value.to_owned(), "in MESH_TOKEN".to_owned()),
        (None, None) => return Ok(None),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty { what });
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::auth::Role;
    use mesh_protocol::token::Tokens;

    #[test]
    fn a_created_token_is_accepted_by_the_file_it_was_added_to() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let mut secrets = Vec::new();
        for (user, role) in [("alice", Role::Submit), ("root", Role::Admin)] {
            let out = run(&TokenCommand::Create(TokenCreateArgs {
                user: user.parse().unwrap(),
                role,
                tokens_file: Some(file.clone()),
            }))
            .unwrap();
            secrets.push(out.trim().to_owned());
        }
        let tokens = Tokens::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let alice = tokens.authenticate(&secrets[0]).unwrap();
        assert_eq!((alice.user.as_str(), alice.role), ("alice", Role::Submit));
        assert_eq!(tokens.authenticate(&secrets[1]).unwrap().role, Role::Admin);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Without a file, the secret and then the line are printed.
        let out = run(&TokenCommand::Create(TokenCreateArgs {
            user: "bob".parse().unwrap(),
            role: Role::Read,
            tokens_file: None,
        }))
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let tokens = Tokens::parse(lines[2]).unwrap();
        assert_eq!(tokens.authenticate(lines[0]).unwrap().user.as_str(), "bob");
    }

    #[test]
    fn the_token_file_beats_the_environment_and_empty_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  secret-from-file\n").unwrap();
        assert_eq!(
            load(Some(&file), Some("from-env")).unwrap().as_deref(),
            Some("secret-from-file")
        );
        assert_eq!(
            load(None, Some("from-env\n")).unwrap().as_deref(),
            Some("from-env")
        );
        assert_eq!(load(None, None).unwrap(), None);
        let e = load(None, Some(" ")).unwrap_err().to_string();
        assert!(e.contains("MESH_TOKEN"), "{e}");
        let e = load(Some(&dir.path().join("none")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
