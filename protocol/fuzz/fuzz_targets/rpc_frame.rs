//! Agent-to-agent call frames as `mesh_agent::mesh::rpc` reads them from a
//! QUIC stream: a 4-byte length checked by `rpc::frame_len`, then a body
//! decoded by `wire::decode` as a `Request` (what a caller sends) and as a
//! `Response` (what a called node answers). A stream may hold several
//! frames (a log stream does). Whatever decodes encodes back to the same
//! value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::rpc::{self, Request, Response};
use mesh_protocol::wire;

fn round_trip<T>(body: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = wire::decode::<T>(body) {
        let framed = rpc::frame(&value).expect("a decoded message encodes");
        let len = rpc::frame_len(framed[..4].try_into().expect("4 bytes")).expect("fits");
        assert_eq!(len, framed.len() - 4);
        let again: T = wire::decode(&framed[4..]).expect("an encoded message decodes");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while rest.len() >= 4 {
        let prefix: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let Ok(len) = rpc::frame_len(prefix) else {
            return;
        };
        rest = &rest[4..];
        let body = &rest[..len.min(rest.len())];
        round_trip::<Request>(body);
        round_trip::<Response>(body);
        rest = &rest[body.len()..];
    }
});
