//! Ganger's test network.
//!
//! This crate will hold the multi-agent test harness: start N agents, describe
//! scenarios as steps (start, kill, partition, heal, wait until, assert) and run
//! the same scenarios locally and in CI.
//!
//! For now it holds [`testsvc`], the library behind the `mesh-testsvc` binary:
//! a small service with the behaviours a user's real service would show, which
//! `scripts/images` packs into the `mesh-testsvc:latest` image.

pub mod testsvc;
