//! Stamps the build with the commit it was built from and the day it was
//! built (`GANGER_COMMIT`, `GANGER_BUILD_DATE`), for `--version` and the
//! version each agent gossips. Outside a git checkout the commit reads
//! `unknown`; `SOURCE_DATE_EPOCH` fixes the date for reproducible builds.
//!
//! Only release builds (what `scripts/install`, `scripts/agent-image` and
//! `scripts/mesh` make) name the commit, and are built again when HEAD
//! moves. Debug builds, the tests', read `dev`: stamping them would rebuild
//! the whole workspace, which depends on this crate, at every commit.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let commit = if release {
        stamp_commit(&git)
    } else {
        "dev".to_owned()
    };
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=GANGER_COMMIT={commit}");
    println!(
        "cargo:rustc-env=GANGER_BUILD_DATE={}",
        civil_date(secs / 86_400)
    );
}

/// The commit HEAD names, and the files that make the script run again
/// when it moves.
fn stamp_commit(git: &dyn Fn(&[&str]) -> Option<String>) -> String {
    let commit = git(&["rev-parse", "--short=9", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Built again when HEAD moves (a commit, a checkout). Only files that
    // exist are named: cargo reruns a build script on every build while a
    // named file is missing (a ref may live in packed-refs only).
    let watch = |path: Option<String>| {
        if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    watch(git(&["rev-parse", "--git-path", "HEAD"]));
    watch(git(&["rev-parse", "--git-path", "packed-refs"]));
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &reference]));
    }
    commit
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
