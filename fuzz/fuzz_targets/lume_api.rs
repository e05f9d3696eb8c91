//! A request to Lume's API as the server reads it: method, path and query, and body,
//! against a data directory of the fuzzer's own (see `cabin_api::fuzzing` for what is
//! handled and what is only parsed). Input parts, split at `\n@@@@\n`: method, path
//! (with `?query`), body.
#![no_main]

use std::sync::OnceLock;

use cabin_base::{Host, Paths};
use cabin_fuzz::{parts, Scratch};
use libfuzzer_sys::fuzz_target;

fn host() -> &'static Host {
    static S: OnceLock<(Scratch, Host)> = OnceLock::new();
    &S.get_or_init(|| {
        let s = Scratch::new("lume_api");
        s.reset();
        let paths = Paths::new(
            s.work.join("data"),
            s.work.join("cache"),
            s.work.join("home"),
        );
        (s, Host::with_paths(paths))
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let p = parts(data, 3);
    let [method, target, body] = p.as_slice() else {
        return;
    };
    let target = String::from_utf8_lossy(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_ref(), None),
    };
    cabin_api::fuzzing::request(host(), method, path, query, body);
});
