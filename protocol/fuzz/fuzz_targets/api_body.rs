//! Request bodies of the HTTP API, read as the agent's handlers read them:
//! `Submission::parse` for `POST /v1/tasks`, and `read_body` of a
//! `ServiceRequest` validated into a `ServiceSpec` (as the services part
//! does) for `POST /v1/services`. Both must refuse with an error, never
//! panic, whatever the bytes (invalid UTF-8, deep nesting, huge numbers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::api::{Submission, read_body};
use mesh_protocol::service::{ServiceRequest, ServiceSpec};

fuzz_target!(|data: &[u8]| {
    if let Ok(submission) = Submission::parse(data) {
        // A valid spec survives the trip to a peer (an offer) and back.
        let json = serde_json::to_vec(&submission.spec).expect("a spec encodes");
        let again: mesh_protocol::TaskSpec =
            serde_json::from_slice(&json).expect("an encoded spec decodes");
        assert_eq!(again, submission.spec);
    }
    if let Ok(request) = read_body::<ServiceRequest>("service definition", data) {
        let _ = ServiceSpec::try_from(request);
    }
});
