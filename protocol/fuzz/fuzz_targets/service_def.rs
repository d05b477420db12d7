//! Service definitions from the two places other than the API they come
//! from: a peer's gossip value (`ServiceDef::from_gossip`, as
//! `mesh_agent::services::gossiped` reads it) and the stored list
//! `services.json` (`ServiceDef::read_stored`, as the registry opens it).
//! The input is the clock (8 bytes), then the gossip key up to a newline,
//! then the value; the whole input is also read as a stored list. A
//! definition that is taken publishes back as one that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::service::ServiceDef;

fuzz_target!(|data: &[u8]| {
    if let Ok(stored) = ServiceDef::read_stored(data) {
        for def in stored.valid {
            let json = serde_json::from_str(&def.encode()).expect("an encoded definition is JSON");
            assert_eq!(ServiceDef::from_json(json).expect("reads back"), def);
        }
    }
    let Some((clock, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now_ms = u64::from_le_bytes(*clock);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (key, value) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(def) = ServiceDef::from_gossip(key, value, now_ms) {
        let again = ServiceDef::from_gossip(&def.key(), &def.encode(), now_ms)
            .expect("a published definition reads back");
        assert_eq!(again, def);
    }
});
