//! `cabin cp`'s archives, as both sides read them: the host extracting what a
//! container sent, cabin-init extracting what the host sent (the same reader, with
//! set-ID bits kept or not), as `place` (a copy's one top-level entry, to a new name, an
//! existing directory, or its contents) and as `extract_into` (`cabin cp - C:DIR`).
//! The first byte picks the call; nothing may be written outside the destination.
#![no_main]

use cabin_archive::{extract_into, place, UnpackOptions};
use cabin_fuzz::Scratch;
use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, archive)) = data.split_first() else {
        return;
    };
    let s = Scratch::shared("cp_archive");
    s.reset();
    let opts = UnpackOptions {
        keep_setid: mode & 0x10 != 0,
        top: (mode & 0x20 != 0).then(|| OsString::from("f")),
    };
    // An existing file in the destination, which a copy may replace but not follow.
    std::fs::write(s.work.join("existing"), b"x").expect("scratch file");
    let _ = match mode % 4 {
        0 => extract_into(archive, &s.work, &opts),
        1 => place(archive, &s.work, false, &opts),
        2 => place(archive, &s.work, true, &opts),
        _ => place(archive, &s.work.join("new"), false, &opts),
    };
    s.assert_confined(&[]);
});
