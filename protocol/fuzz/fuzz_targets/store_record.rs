//! A task record as `mesh_agent::store` reads it back from the disk (its
//! own tasks and the copies it keeps for peers): `wire::decode` of a
//! `TaskRecord`, whose spec is checked on decoding. Whatever decodes
//! encodes back to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::TaskRecord;
use mesh_protocol::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = wire::decode::<TaskRecord>(data) {
        let bytes = wire::encode(&record).expect("a decoded record encodes");
        let again: TaskRecord = wire::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
});
