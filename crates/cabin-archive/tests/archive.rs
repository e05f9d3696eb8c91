//! cabin-archive on real file trees: what a copy preserves, docker cp's placement
//! rules, and archives made to escape or damage the destination.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cabin_archive::{extract_into, pack, place, ErrorKind, PackOptions, UnpackOptions};

const OPTS: UnpackOptions = UnpackOptions {
    keep_setid: false,
    top: None,
};

fn set_mtime(p: &Path, t: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0);
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

const LONG: &str = "a-name-long-enough-that-it-does-not-fit-in-the-hundred-bytes-of-an-old-tar-header-so-it-needs-an-extension";

/// A tree with what a copy must keep: modes, times, links, an empty and a read-only
/// directory, a name too long for a plain header.
fn sample_tree(root: &Path) -> PathBuf {
    let t = root.join("tree");
    fs::create_dir_all(t.join("sub/deeper")).unwrap();
    fs::create_dir(t.join("empty")).unwrap();
    fs::create_dir(t.join("locked")).unwrap();
    fs::write(t.join("locked/inside"), "sealed\n").unwrap();
    fs::write(t.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    chmod(&t.join("script.sh"), 0o750);
    fs::write(t.join("secret"), "s3cret").unwrap();
    chmod(&t.join("secret"), 0o600);
    fs::write(t.join("sub/deeper").join(LONG), vec![7u8; 200_000]).unwrap();
    fs::hard_link(t.join("secret"), t.join("sub/secret-again")).unwrap();
    std::os::unix::fs::symlink("../script.sh", t.join("sub/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("abs-link")).unwrap();
    std::os::unix::fs::symlink(format!("/{LONG}/{LONG}"), t.join("long-link")).unwrap();
    for (i, p) in [
        "script.sh",
        "secret",
        "sub/deeper",
        "sub/rel-link",
        "abs-link",
        "empty",
        "locked/inside",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&t.join(p), 1_500_000_000 + i as i64 * 1000);
    }
    chmod(&t.join("locked"), 0o555);
    set_mtime(&t.join("locked"), 1_400_000_000);
    set_mtime(&t.join("sub"), 1_450_000_000);
    t
}

/// Type, mode, time, content or target of everything below `root`, for comparison.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(p).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
        } else {
            let data = fs::read(p).unwrap();
            format!(
                "file {:o} {} {} bytes, sum {}",
                m.mode() & 0o7777,
                m.mtime(),
                data.len(),
                data.iter().map(|&b| b as u64).sum::<u64>()
            )
        };
        out.push(format!("{rel}: {what}"));
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(base, &p.join(n), out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

fn archive_of(src: &Path, top: &str) -> Vec<u8> {
    let mut v = Vec::new();
    pack(src, top.as_ref(), PackOptions::default(), &mut v).unwrap();
    v
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cabin-cp-"))
        .collect()
}

#[test]
fn a_tree_comes_back_with_modes_times_and_links() {
    let t = tempfile::tempdir().unwrap();
    let src = sample_tree(t.path());
    let tar = archive_of(&src, "tree");
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let done = place(&tar[..], &out.join("copy"), false, &OPTS).unwrap();
    assert_eq!(done.skipped_special, 0);
    let copy = out.join("copy");
    assert_eq!(listing(&src), listing(&copy));
    // Hard links stay hard links.
    assert_eq!(
        fs::metadata(copy.join("secret")).unwrap().ino(),
        fs::metadata(copy.join("sub/secret-again")).unwrap().ino()
    );
    assert!(leftovers(&out).is_empty());
    chmod(&copy.join("locked"), 0o755);
    chmod(&src.join("locked"), 0o755);
}

#[test]
fn placement_follows_docker_cp() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    fs::write(p.join("f"), "new").unwrap();
    fs::create_dir_all(p.join("d/inner")).unwrap();
    fs::write(p.join("d/inner/x"), "x").unwrap();
    let file = archive_of(&p.join("f"), "f");
    let dir = archive_of(&p.join("d"), "d");
    let dst = p.join("dst");
    fs::create_dir(&dst).unwrap();

    // A file: to a new name, over a file, into a directory.
    place(&file[..], &dst.join("g"), false, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("g")).unwrap(), "new");
    fs::write(dst.join("old"), "old contents").unwrap();
    place(&file[..], &dst.join("old"), false, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("old")).unwrap(), "new");
    place(&file[..], &dst, false, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("f")).unwrap(), "new");
    let e = place(&file[..], &dst.join("nodir/"), false, &OPTS).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Destination);
    assert!(e.message.contains("does not exist"), "{e}");
    let e = place(&file[..], &dst.join("missing/g"), false, &OPTS).unwrap_err();
    assert!(e.message.contains("parent directory"), "{e}");
    let e = place(&file[..], &dst, true, &OPTS).unwrap_err();
    assert!(e.message.contains("not a directory"), "{e}");

    // A directory: to a new name (its contents), into a directory, its contents into
    // a directory, never onto a file.
    place(&dir[..], &dst.join("new"), false, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("new/inner/x")).unwrap(), "x");
    place(&dir[..], &dst, false, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("d/inner/x")).unwrap(), "x");
    fs::create_dir(dst.join("merged")).unwrap();
    fs::write(dst.join("merged/kept"), "kept").unwrap();
    place(&dir[..], &dst.join("merged"), true, &OPTS).unwrap();
    assert_eq!(fs::read_to_string(dst.join("merged/inner/x")).unwrap(), "x");
    assert_eq!(fs::read_to_string(dst.join("merged/kept")).unwrap(), "kept");
    let e = place(&dir[..], &dst.join("g"), false, &OPTS).unwrap_err();
    assert!(
        e.message.contains("cannot copy a directory to a file"),
        "{e}"
    );

    // A merge that would put a file where a directory is changes nothing at all.
    fs::create_dir_all(p.join("clash/inner")).unwrap();
    fs::write(p.join("clash/a-first"), "1").unwrap();
    fs::write(p.join("clash/inner/x"), "2").unwrap();
    fs::remove_dir_all(dst.join("merged/inner")).unwrap();
    fs::write(dst.join("merged/inner"), "a file").unwrap();
    let clash = archive_of(&p.join("clash"), "clash");
    let e = place(&clash[..], &dst.join("merged"), true, &OPTS).unwrap_err();
    assert!(e.message.contains("with a directory"), "{e}");
    assert!(!dst.join("merged/a-first").exists(), "nothing was moved");
    assert!(leftovers(&dst).is_empty() && leftovers(&dst.join("merged")).is_empty());
}

/// One raw tar header block (bypassing the checks the tar crate makes when writing).
fn raw(path: &[u8], kind: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn finished(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let out = outside.to_str().unwrap().as_bytes();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("absolute path", finished(raw(b"/x", b'0', b"", b""))),
        (
            "dot-dot",
            finished(
                [
                    raw(b"x", b'5', b"", b""),
                    raw(b"x/../../y", b'0', b"p", b""),
                ]
                .concat(),
            ),
        ),
        (
            "write through a link it made",
            finished(
                [
                    raw(b"x", b'5', b"", b""),
                    raw(b"x/l", b'2', b"", out),
                    raw(b"x/l/pwned", b'0', b"p", b""),
                ]
                .concat(),
            ),
        ),
        (
            "top entry is a link, then entries beneath it",
            finished([raw(b"x", b'2', b"", out), raw(b"x/pwned", b'0', b"p", b"")].concat()),
        ),
        (
            "hard link to a file outside",
            finished(
                [
                    raw(b"x", b'5', b"", b""),
                    raw(b"x/h", b'1', b"", b"y/secret"),
                ]
                .concat(),
            ),
        ),
        (
            "second top-level entry",
            finished([raw(b"x", b'5', b"", b""), raw(b"y", b'0', b"p", b"")].concat()),
        ),
        ("a long name claiming a gigabyte", {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            h.set_entry_type(tar::EntryType::GNULongName);
            h.set_size(1 << 30);
            h.set_cksum();
            finished(h.as_bytes().to_vec())
        }),
        (
            "cut short at an entry boundary",
            [raw(b"x", b'5', b"", b""), raw(b"x/f", b'0', b"data", b"")].concat(),
        ),
        ("cut short inside a file", {
            let mut v = raw(b"x", b'0', &[1u8; 2000], b"");
            v.truncate(1024);
            v
        }),
        ("not a tar archive", vec![b'z'; 2048]),
    ];
    // An archive that names its entry otherwise than asked cannot pick a name in the
    // destination directory.
    let mut named = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    named.append_data(&mut h, ".bashrc", &b"x"[..]).unwrap();
    let named = named.into_inner().unwrap();
    let want = UnpackOptions {
        top: Some("notes".into()),
        ..OPTS
    };
    let e = place(&named[..], &dst, false, &want).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Archive, "{e}");
    assert!(!dst.join(".bashrc").exists() && leftovers(&dst).is_empty());
    assert_eq!(cabin_archive::top_name(Path::new("/a/notes/")), "notes");
    assert_eq!(cabin_archive::top_name(Path::new("/")), "rootfs");

    for (what, archive) in cases {
        let r = place(&archive[..], &dst.join("x"), false, &OPTS);
        let e = r.expect_err(what);
        assert_eq!(e.kind, ErrorKind::Archive, "{what}: {e}");
        assert!(!dst.join("x").exists(), "{what}: nothing is placed");
        assert!(
            leftovers(&dst).is_empty(),
            "{what}: the staging directory is removed"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{what}: {e}");
    }
}

#[test]
fn set_id_bits_are_dropped_unless_kept_and_special_files_skipped() {
    let t = tempfile::tempdir().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("tool").unwrap();
    h.set_mode(0o4755);
    h.set_size(2);
    h.set_cksum();
    let mut a = h.as_bytes().to_vec();
    a.extend_from_slice(b"hi");
    a.resize(1024, 0);
    let a = finished(a);
    place(&a[..], &t.path().join("plain"), false, &OPTS).unwrap();
    let mode = fs::metadata(t.path().join("plain")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    place(
        &a[..],
        &t.path().join("kept"),
        false,
        &UnpackOptions {
            keep_setid: true,
            top: None,
        },
    )
    .unwrap();
    let mode = fs::metadata(t.path().join("kept")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o4755);

    let dev = finished(
        [
            raw(b"d", b'5', b"", b""),
            raw(b"d/null", b'3', b"", b""),
            raw(b"d/fifo", b'6', b"", b""),
        ]
        .concat(),
    );
    let done = place(&dev[..], &t.path().join("devs"), false, &OPTS).unwrap();
    assert_eq!(done.skipped_special, 2);
    assert_eq!(fs::read_dir(t.path().join("devs")).unwrap().count(), 0);
}

#[test]
fn archives_from_gnu_tar_extract_into_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let src = sample_tree(t.path());
    chmod(&src.join("locked"), 0o755);
    let tar_file = t.path().join("pax.tar");
    let st = std::process::Command::new("tar")
        .args(["--format=pax", "-cf"])
        .arg(&tar_file)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .expect("GNU tar is installed");
    assert!(st.success());
    let dst = t.path().join("into");
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("already-there"), "x").unwrap();
    extract_into(fs::File::open(&tar_file).unwrap(), &dst, &OPTS).unwrap();
    assert_eq!(
        fs::read(dst.join("sub/deeper").join(LONG)).unwrap(),
        vec![7u8; 200_000]
    );
    assert_eq!(
        fs::read_link(dst.join("long-link")).unwrap(),
        PathBuf::from(format!("/{LONG}/{LONG}"))
    );
    assert!(dst.join("already-there").exists());
    let e = extract_into(fs::File::open(&tar_file).unwrap(), &dst.join("nope"), &OPTS).unwrap_err();
    assert!(e.message.contains("does not exist"), "{e}");
}
