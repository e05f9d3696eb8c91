//! A registry's layer through the layer applier into a scratch root: a tar stream,
//! plain, gzip or zstd. The first byte picks how the rest reaches the applier: 0 as a
//! plain tar, 1 and 2 as a tar compressed here with gzip or zstd (so the fuzzer works
//! on the tar), 3 as the layer file's bytes themselves (the decompressors' input).
//! Whatever the layer holds, nothing may be written outside the root.
#![no_main]

use cabin_fuzz::Scratch;
use cabin_image::layer::{apply_layer_checked, Limits};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let layer = match mode % 4 {
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).expect("in memory");
            gz.finish().expect("in memory")
        }
        2 => zstd::encode_all(tar, 1).expect("in memory"),
        _ => tar.to_vec(),
    };
    let s = Scratch::shared("layer_tar");
    s.reset();
    let file = s.file("layer");
    std::fs::write(&file, &layer).expect("scratch layer");
    let limits = Limits {
        max_bytes: 8 << 20,
        max_entries: 10_000,
    };
    let _ = apply_layer_checked(&s.work, &file, limits, Some("sha256:0"));
    s.assert_confined(&["layer"]);
});
