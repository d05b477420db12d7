//! Bearer tokens of the control API (feature `pki`): random secrets that
//! the agent knows only by their SHA-256, in a tokens file of lines
//! `USER ROLE SHA256-HEX` (`#` starts a comment). A line `USER revoked`
//! refuses that user whatever they show: their tokens and their client
//! certificates. A token is 32 random
//! bytes, so a fast hash is enough: nobody can guess one from its hash.

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::{Caller, Role, reserved_user};
use crate::ids::UserName;

/// Bytes of randomness in a token.
const SECRET_BYTES: usize = 32;
/// Most lines a tokens file may hold.
pub const MAX_TOKENS: usize = 10_000;
/// Longest token accepted from a caller (a fresh one is 64 hex digits).
pub const MAX_TOKEN_CHARS: usize = 256;

/// Why a tokens file or a new token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "line {line}: {message}; each line is `USER ROLE SHA256-HEX`, as `meshctl token create` prints it, or `USER revoked`"
    )]
    Line { line: usize, message: String },
    #[error("line {line}: the same token hash as line {first}; every token must be its own")]
    Duplicate { line: usize, first: usize },
    #[error("more than {MAX_TOKENS} tokens")]
    TooMany,
    #[error("user {0:?} is reserved (it stands for no real user); pick another name")]
    Reserved(String),
    #[error("cannot draw a random token from the system")]
    Random,
}

/// One token the agent accepts.
#[derive(Debug, Clone)]
struct Entry {
    caller: Caller,
    hash: [u8; 32],
}

/// The tokens an agent accepts, parsed from its tokens file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
    /// Users refused whatever credential they show.
    revoked: std::collections::BTreeSet<UserName>,
}

impl Tokens {
    /// Parses a tokens file.
    pub fn parse(text: &str) -> Result<Tokens, TokenError> {
        let mut entries: Vec<(usize, Entry)> = Vec::new();
        let mut revoked = std::collections::BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |message: String| TokenError::Line { line, message };
            let words: Vec<&str> = content.split_whitespace().collect();
            if let [user, "revoked"] = words.as_slice() {
                if revoked.len() == MAX_TOKENS {
                    return Err(TokenError::TooMany);
                }
                revoked.insert(UserName::new(*user).map_err(|e| bad(e.to_string()))?);
                continue;
            }
            let [user, role, hash] = words.as_slice() else {
                return Err(bad(format!("{} words", words.len())));
            };
            let user = UserName::new(*user).map_err(|e| bad(e.to_string()))?;
            if reserved_user(&user) {
                return Err(bad(TokenError::Reserved(user.to_string()).to_string()));
            }
            let role: Role = role
                .parse()
                .map_err(|e: crate::auth::RoleError| bad(e.to_string()))?;
            let hash =
                parse_hex(hash).ok_or_else(|| bad("the hash is not 64 hex digits".into()))?;
            if let Some((first, _)) = entries.iter().find(|(_, e)| e.hash == hash) {
                return Err(TokenError::Duplicate {
                    line,
                    first: *first,
                });
            }
            if entries.len() == MAX_TOKENS {
                return Err(TokenError::TooMany);
            }
            entries.push((
                line,
                Entry {
                    caller: Caller { user, role },
                    hash,
                },
            ));
        }
        Ok(Tokens {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            revoked,
        })
    }

    /// No token accepted (revocations aside).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens are accepted and users revoked.
    pub fn counts(&self) -> (usize, usize) {
        (self.entries.len(), self.revoked.len())
    }

    /// Whether `user` is refused whatever they show.
    pub fn is_revoked(&self, user: &UserName) -> bool {
        self.revoked.contains(user)
    }

    /// The caller a presented token stands for, if it is one of ours. Every
    /// entry is compared, each in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let presented = hash(token);
        let mut found = None;
        for e in &self.entries {
            if same(&e.hash, &presented) {
                found = Some(e.caller.clone());
            }
        }
        found.filter(|c| !self.is_revoked(&c.user))
    }
}

/// A fresh token and the line of the tokens file that accepts it.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The secret: shown once, kept by the user only.
    pub secret: String,
    pub line: String,
}

/// Draws a token for `user` with `role`.
pub fn create(user: &UserName, role: Role) -> Result<NewToken, TokenError> {
    if reserved_user(user) {
        return Err(TokenError::Reserved(user.to_string()));
    }
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let secret = to_hex(&bytes);
    let line = line(user, role, &secret);
    Ok(NewToken { secret, line })
}

/// The tokens-file line that accepts `secret` as `user` with `role`.
pub fn line(user: &UserName, role: Role, secret: &str) -> String {
    format!("{user} {role} {}", to_hex(&hash(secret)))
}

fn hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    #[test]
    fn a_created_token_is_accepted_by_its_line_only() {
        let a = create(&user("alice"), Role::Submit).unwrap();
        let b = create(&user("bob"), Role::Read).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 64);
        let file = format!("# the API's tokens\n{}\n\n{}  # bob\n", a.line, b.line);
        let tokens = Tokens::parse(&file).unwrap();
        let alice = tokens.authenticate(&a.secret).unwrap();
        assert_eq!((alice.user.as_str(), alice.role), ("alice", Role::Submit));
        assert_eq!(tokens.authenticate(&b.secret).unwrap().role, Role::Read);
        assert!(tokens.authenticate("").is_none());
        assert!(tokens.authenticate(&a.line).is_none());
        // The hash itself is not a token.
        let hash = a.line.split(' ').nth(2).unwrap();
        assert!(tokens.authenticate(hash).is_none());
        assert!(tokens.authenticate(&"a".repeat(10_000)).is_none());
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let good = create(&user("alice"), Role::Admin).unwrap().line;
        let hash = good.split(' ').nth(2).unwrap().to_owned();
        for (text, says) in [
            ("alice admin".to_owned(), "line 1: 2 words"),
            (format!("\nalice root {hash}"), "line 2: role \"root\""),
            (format!("al ice admin {hash}"), "line 1: 4 words"),
            (format!("-x admin {hash}"), "line 1: user name"),
            ("alice admin 12ab".to_owned(), "not 64 hex"),
            (format!("alice admin {}", "zz".repeat(32)), "not 64 hex"),
            (format!("unknown admin {hash}"), "reserved"),
            (format!("local admin {hash}"), "reserved"),
            (
                format!("{good}\nbob read {hash}"),
                "line 2: the same token hash as line 1",
            ),
        ] {
            let e = Tokens::parse(&text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(create(&user("unknown"), Role::Read).is_err());
        assert!(Tokens::parse("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn a_revoked_user_is_refused_with_every_token() {
        let t = create(&user("alice"), Role::Submit).unwrap();
        let b = create(&user("bob"), Role::Read).unwrap();
        let text = format!("{}\n{}\nalice revoked  # left the team\n", t.line, b.line);
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.authenticate(&t.secret), None);
        assert!(tokens.is_revoked(&user("alice")));
        assert_eq!(tokens.authenticate(&b.secret).unwrap().user, user("bob"));
        assert_eq!(tokens.counts(), (2, 1));
        // Only revocations: valid, and empty of tokens.
        let only = Tokens::parse("carol revoked\n").unwrap();
        assert!(only.is_empty() && only.is_revoked(&user("carol")));
        assert!(Tokens::parse("carol revoked extra\n").is_err());
    }
}
