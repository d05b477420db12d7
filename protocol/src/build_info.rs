//! Which build this is: the package version, the commit it was built from
//! (`dev` in a debug build) and the day (set by `build.rs`). Agents gossip [`VERSION`] (`ver`), so a
//! mesh in the middle of an upgrade shows which node runs what.

/// `0.1.0+3f2c1a9b0`: the version and the commit, as peers see it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("GANGER_COMMIT"));

/// `0.1.0 (commit 3f2c1a9b0, built 2026-12-01)`, for `--version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GANGER_COMMIT"),
    ", built ",
    env!("GANGER_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_package_and_the_commit_and_fits_gossip() {
        let (package, commit) = VERSION.split_once('+').unwrap();
        assert_eq!(package, env!("CARGO_PKG_VERSION"));
        assert!(
            ["dev", "unknown"].contains(&commit) || commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{commit}"
        );
        // The `ver` gossip value is read up to 32 characters.
        assert!(VERSION.len() <= 32, "{VERSION}");
        assert!(LONG_VERSION.starts_with(package), "{LONG_VERSION}");
        let date = LONG_VERSION
            .rsplit("built ")
            .next()
            .unwrap()
            .trim_end_matches(')');
        assert_eq!(date.len(), 10, "{LONG_VERSION}");
        assert_eq!(&date[4..5], "-");
    }
}
