//! What a registry sends about an image, as `cabin pull` reads it: an image index or
//! manifest list (choosing linux/amd64), then a manifest and its config, stored and
//! loaded as `cabin run` loads them, and the name the user gave. Input parts, split at
//! `\n@@@@\n`: reference, index, manifest, config.
#![no_main]

use cabin_fuzz::{parts, Scratch};
use cabin_image::store::Store;
use cabin_image::{image, pull};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = parts(data, 4);
    let [reference, index, manifest, config] = p.as_slice() else {
        return;
    };
    let reference = String::from_utf8_lossy(reference);
    let _ = image::normalize_reference(&reference);
    let _ = pull::choose_platform(index, &reference);
    let s = Scratch::shared("oci_image");
    s.reset();
    let store = Store::open(&s.work).expect("store");
    let (Ok(_), Ok(manifest_digest)) = (store.put_bytes(config), store.put_bytes(manifest)) else {
        return;
    };
    if let Ok(img) = image::load(&store, "fuzz", &manifest_digest) {
        let _ = img.id();
        let _ = store.update_refs(|r| r.insert("fuzz:latest".into(), manifest_digest.clone()));
        let _ = image::resolve(&store, "fuzz");
        let _ = image::resolve(&store, &manifest_digest);
    }
    s.assert_confined(&[]);
});
