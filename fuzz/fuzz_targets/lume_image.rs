//! A VM image in Lume's format, as `cabin vm pull` reads it: the manifest (OCI or
//! legacy), the layer plan made from it (disk chunks, parts, sizes), the config blob
//! that describes the VM, and the legacy format's Apple LZ4 disk stream. Input parts,
//! split at `\n@@@@\n`: manifest, config, LZ4 stream.
#![no_main]

use std::io::Read;

use cabin_fuzz::parts;
use cabin_image::lume::{layout, lz4::Lz4Decoder, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = parts(data, 3);
    let (m, config, stream) = match p.as_slice() {
        [m, c, s] => (*m, *c, *s),
        [m, c] => (*m, *c, &[][..]),
        [m] => (*m, &[][..], &[][..]),
        _ => return,
    };
    if let Ok(m) = manifest::Manifest::parse("fuzz", m) {
        let _ = m.is_oci_format();
        let legacy_size = manifest::legacy_config_disk_size(config);
        if let Ok(plan) = layout::plan("fuzz", &m, legacy_size) {
            let _ = plan.groups();
            let _ = plan.transfer_bytes();
            let _ = if m.is_oci_format() {
                manifest::describe_oci("fuzz", &m, config, plan.disk_size)
            } else {
                manifest::describe_legacy("fuzz", config, plan.disk_size)
            };
        }
    }
    // The decoder's output is bounded by its blocks; read it all, in odd-sized steps.
    let mut d = Lz4Decoder::new(stream);
    let mut buf = [0u8; 4093];
    let mut total = 0usize;
    while let Ok(n) = d.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        assert!(
            total <= stream.len().saturating_mul(255) + (64 << 20),
            "unbounded output"
        );
    }
});
