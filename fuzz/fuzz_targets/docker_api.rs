//! A request to the Docker Engine API as the server reads it (see
//! `cabin_docker::fuzzing`). Input parts, split at `\n@@@@\n`: method, path (with
//! `?query`), `X-Registry-Auth` header, body.
#![no_main]

use cabin_fuzz::parts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = parts(data, 4);
    let [method, target, auth, body] = p.as_slice() else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_ref(), None),
    };
    cabin_docker::fuzzing::request(method, path, query, auth, body);
});
