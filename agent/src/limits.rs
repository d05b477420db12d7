//! Process limits the agent raises at start: every service connection holds
//! two sockets (the client's and the container's, or a QUIC stream), so the
//! usual soft limit of 1024 open files would cap a node at a few hundred
//! connections.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft open-file limit to the hard one. Returns the limits
/// (before, after); `after` equals `before` when nothing could be raised.
pub fn raise_open_files() -> (Option<u64>, Option<u64>) {
    let now = getrlimit(Resource::Nofile);
    if now.current == now.maximum {
        return (now.current, now.current);
    }
    let raised = Rlimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (now.current, now.maximum),
        Err(_) => (now.current, now.current),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (_, after) = super::raise_open_files();
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(after, now.current);
        assert_eq!(now.current, now.maximum);
    }
}
