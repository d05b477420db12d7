//! The header of a service connection forwarded to a peer, as
//! `mesh_agent::services::tunnel` reads it: one frame (length checked by
//! `rpc::frame_len`) holding a `TunnelOpen` on the called node, or a
//! `TunnelReply` on the calling one. Whatever decodes encodes back to the
//! same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::rpc::{self, TunnelOpen, TunnelReply};
use mesh_protocol::wire;

fuzz_target!(|data: &[u8]| {
    let Some((prefix, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = rpc::frame_len(*prefix) else {
        return;
    };
    let body = &body[..len.min(body.len())];
    if let Ok(open) = wire::decode::<TunnelOpen>(body) {
        let again: TunnelOpen = wire::decode(&rpc::frame(&open).expect("encodes")[4..])
            .expect("an encoded header decodes");
        assert_eq!(again, open);
    }
    if let Ok(reply) = wire::decode::<TunnelReply>(body) {
        let again: TunnelReply = wire::decode(&rpc::frame(&reply).expect("encodes")[4..])
            .expect("an encoded reply decodes");
        assert_eq!(again, reply);
    }
});
