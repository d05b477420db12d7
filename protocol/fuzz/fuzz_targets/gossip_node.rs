//! A peer's published gossip values as `mesh_agent::mesh` reads them with
//! `NodeInfo::from_lookup`: the input is `key=value` lines (chitchat keys
//! and values are strings). Whatever is read publishes back (`to_pairs`)
//! as values that read the same.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mesh_protocol::gossip::NodeInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values: BTreeMap<&str, &str> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .collect();
    let Ok(info) = NodeInfo::from_lookup(|k| values.get(k).copied()) else {
        return;
    };
    let pairs: BTreeMap<String, String> = info.to_pairs().into_iter().collect();
    let again = NodeInfo::from_lookup(|k| pairs.get(k).map(String::as_str))
        .expect("published values read back");
    assert_eq!(again, info);
});
