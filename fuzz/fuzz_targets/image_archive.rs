//! An image archive as `cabin image load` and the Docker API's `docker load` read it:
//! cabin's own `save`, `docker save` (old and new layouts) or an OCI layout tar, maybe
//! gzip-compressed. Whatever it holds, the store takes only what it can verify and
//! nothing is written outside it.
#![no_main]

use cabin_fuzz::Scratch;
use cabin_image::archive;
use cabin_image::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = Scratch::shared("image_archive");
    s.reset();
    let input = s.file("input.tar");
    std::fs::write(&input, data).expect("scratch input");
    let store = Store::open(&s.work).expect("store");
    if let Ok(loaded) = archive::load(&store, &input) {
        for (_, digest) in loaded {
            cabin_image::image::load(&store, "", &digest).expect("a loaded image loads");
        }
    }
    s.assert_confined(&["input.tar"]);
});
