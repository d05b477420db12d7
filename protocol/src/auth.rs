//! Who may call the control API, decided without I/O: the roles, the role
//! each call needs ([`needed_role`]), and who may act on a task or service
//! someone created ([`Caller::may_act_on`]). The agent authenticates a
//! caller (a bearer token or a client certificate) and asks these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::UserName;

/// What a user may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every GET: tasks, logs, nodes, peers, services, health, metrics.
    Read,
    /// Also submit tasks, create services, and kill or remove one's own.
    Submit,
    /// Everything: drain and undrain, kill and remove anyone's.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Submit, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {0:?} is not one of admin, submit, read")]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RoleError(s.to_owned()))
    }
}

/// The owner recorded for tasks and services made before owners were:
/// no token or certificate may name it, so only an admin acts on them.
pub const UNKNOWN_OWNER: &str = "unknown";
/// The caller of an agent whose API needs no credentials (bound to
/// loopback, or `--insecure-dev` on a private address): an admin.
pub const LOCAL_USER: &str = "local";

/// Names a credential may not carry: they stand for no real user.
pub fn reserved_user(name: &UserName) -> bool {
    matches!(name.as_str(), UNKNOWN_OWNER | LOCAL_USER)
}

/// The owner of records from before owners were kept.
pub fn unknown_owner() -> UserName {
    // A constant that satisfies `UserName`'s rules (tested below).
    UserName::new(UNKNOWN_OWNER).unwrap_or_else(|_| unreachable!("a valid user name"))
}

/// An authenticated caller of the API, as it travels with a call that one
/// node forwards to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user: UserName,
    pub role: Role,
}

impl Caller {
    /// The caller of an API that needs no credentials.
    pub fn local() -> Caller {
        Caller {
            // A constant that satisfies `UserName`'s rules (tested below).
            user: UserName::new(LOCAL_USER).unwrap_or_else(|_| unreachable!("a valid user name")),
            role: Role::Admin,
        }
    }

    /// Whether this caller holds `needed` (or a role above it).
    pub fn has(&self, needed: Role) -> bool {
        self.role >= needed
    }

    /// Whether this caller may kill or remove what `owner` created: an
    /// admin may act on anything, a submitter only on its own.
    pub fn may_act_on(&self, owner: &UserName) -> bool {
        self.role == Role::Admin || (self.role == Role::Submit && self.user == *owner)
    }

    /// Why [`Caller::may_act_on`] said no, in words, for `what` (e.g.
    /// `task t1`).
    pub fn refusal(&self, what: &str, owner: &UserName) -> String {
        format!(
            "user {} (role {}) may not act on {what}, created by {owner}: only its owner or an admin may",
            self.user, self.role
        )
    }
}

/// The role a call of the control API needs: any GET reads; submitting,
/// killing and creating or removing services submit (the owner check is
/// the handler's); everything else, such as drain and undrain, is admin.
pub fn needed_role(method: &str, path: &str) -> Role {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET" | "HEAD", _) => Role::Read,
        ("POST", ["v1", "tasks"]) | ("POST", ["v1", "tasks", _, "kill"]) => Role::Submit,
        ("POST", ["v1", "services"]) | ("DELETE", ["v1", "services", _]) => Role::Submit,
        _ => Role::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(user: &str, role: Role) -> Caller {
        Caller {
            user: UserName::new(user).unwrap(),
            role,
        }
    }

    #[test]
    fn each_call_needs_its_role() {
        assert_eq!(needed_role("GET", "/v1/tasks"), Role::Read);
        assert_eq!(needed_role("GET", "/v1/tasks/t1/logs"), Role::Read);
        assert_eq!(needed_role("GET", "/v1/health"), Role::Read);
        // Prometheus scrapes with a read token.
        assert_eq!(needed_role("GET", "/metrics"), Role::Read);
        assert_eq!(needed_role("POST", "/v1/tasks"), Role::Submit);
        assert_eq!(needed_role("POST", "/v1/tasks/t1/kill"), Role::Submit);
        assert_eq!(needed_role("POST", "/v1/services"), Role::Submit);
        assert_eq!(needed_role("DELETE", "/v1/services/web"), Role::Submit);
        assert_eq!(needed_role("POST", "/v1/nodes/n1/drain"), Role::Admin);
        assert_eq!(needed_role("POST", "/v1/nodes/n1/undrain"), Role::Admin);
        // Anything not named needs the most: a new endpoint is closed until
        // it is given a role.
        assert_eq!(needed_role("POST", "/v1/tasks/t1"), Role::Admin);
        assert_eq!(needed_role("PUT", "/v1/tasks"), Role::Admin);
        assert_eq!(needed_role("DELETE", "/v1/tasks/t1"), Role::Admin);
        assert_eq!(needed_role("POST", "/v1/tasks/t1/kill/x"), Role::Admin);
    }

    #[test]
    fn roles_include_the_ones_below() {
        let read = caller("r", Role::Read);
        let submit = caller("s", Role::Submit);
        let admin = caller("a", Role::Admin);
        assert!(read.has(Role::Read) && !read.has(Role::Submit));
        assert!(submit.has(Role::Submit) && !submit.has(Role::Admin));
        assert!(admin.has(Role::Admin) && admin.has(Role::Read));
    }

    #[test]
    fn only_the_owner_or_an_admin_acts_on_a_task() {
        let alice = UserName::new("alice").unwrap();
        assert!(caller("alice", Role::Submit).may_act_on(&alice));
        assert!(!caller("bob", Role::Submit).may_act_on(&alice));
        assert!(!caller("alice", Role::Read).may_act_on(&alice));
        assert!(caller("bob", Role::Admin).may_act_on(&alice));
        assert!(!caller("alice", Role::Submit).may_act_on(&unknown_owner()));
        assert!(caller("root", Role::Admin).may_act_on(&unknown_owner()));
        let why = caller("bob", Role::Submit).refusal("task t1", &alice);
        assert!(why.contains("bob") && why.contains("alice"), "{why}");
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
        assert_eq!(serde_json::to_string(&Role::Submit).unwrap(), "\"submit\"");
    }

    #[test]
    fn the_reserved_users_are_valid_names() {
        assert!(reserved_user(&unknown_owner()));
        assert!(reserved_user(&Caller::local().user));
        assert!(!reserved_user(&UserName::new("alice").unwrap()));
    }
}
