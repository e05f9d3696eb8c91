//! `cabin cp` between the host and running containers, on real VMs: what a copy keeps,
//! docker cp's rules, errors, and links in a container that must not lead out of it.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

fn set_mtime(p: &Path, t: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [libc::timespec {
        tv_sec: t,
        tv_nsec: 0,
    }; 2];
    // SAFETY: a valid path and two timespecs.
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

const LONG: &str = "a-file-name-longer-than-the-hundred-bytes-an-old-style-tar-header-holds-so-the-archive-needs-an-extension";

/// Files with what a copy must keep: modes, times, relative and absolute links, an
/// empty directory, a long name, a file bigger than a chunk.
fn host_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    fs::create_dir_all(t.join("sub/deep")).unwrap();
    fs::create_dir(t.join("empty")).unwrap();
    fs::write(t.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(t.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(t.join("private"), "key").unwrap();
    fs::set_permissions(t.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(t.join("sub/deep").join(LONG), &big).unwrap();
    std::os::unix::fs::symlink("../run.sh", t.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("abs")).unwrap();
    for (i, p) in [
        "run.sh", "private", "sub/deep", "sub/link", "abs", "empty", "sub",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&t.join(p), 1_600_000_000 + i as i64 * 3600);
    }
    t
}

/// Everything below `root`: type, mode, time, size and checksum or link target.
fn listing(root: &Path) -> Vec<String> {
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(p).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
        } else {
            let data = fs::read(p).unwrap();
            let sum: u64 = data
                .iter()
                .enumerate()
                .map(|(i, &b)| i as u64 * b as u64)
                .sum();
            format!("{:o} {} {} {sum}", m.mode() & 0o7777, m.mtime(), data.len())
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
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn exec(name: &str, script: &str) -> String {
    cabin_ok(&["exec", name, "sh", "-c", script])
}

fn cp(args: &[&str]) -> std::process::Output {
    cabin().arg("cp").args(args).output().unwrap()
}

fn cp_ok(args: &[&str]) {
    let o = cp(args);
    assert!(o.status.success(), "cabin cp {args:?}: {}", stderr(&o));
    assert_eq!(stdout(&o), "", "cabin cp {args:?} prints nothing");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_tree_goes_in_and_comes_back_with_its_modes_times_and_links() {
    let _c = Cleanup(&["cp-tree"]);
    let o = run_detached(&["--name", "cp-tree"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = tempfile::tempdir().unwrap();
    let tree = host_tree(t.path());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Copied in, files belong to root whoever owns them on the host.
        std::os::unix::fs::lchown(tree.join("private"), Some(1000), Some(1000)).unwrap();
    }

    cp_ok(&[p(&tree), "cp-tree:/tmp"]);
    let inside = exec(
        "cp-tree",
        "cd /tmp/tree && stat -c '%n %a %u:%g %Y' run.sh private sub/link && readlink sub/link && readlink abs && sub/../run.sh && cat sub/deep/a-file* | wc -c",
    );
    assert_eq!(
        inside,
        "run.sh 750 0:0 1600000000\nprivate 600 0:0 1600003600\nsub/link 777 0:0 1600010800\n../run.sh\n/etc/passwd\nran\n300000\n"
    );

    let back = t.path().join("back");
    cp_ok(&["cp-tree:/tmp/tree", p(&back)]);
    assert_eq!(listing(&tree), listing(&back));
    // Into an existing directory: inside it, under the source's name.
    let into = t.path().join("into");
    fs::create_dir(&into).unwrap();
    cp_ok(&["cp-tree:/tmp/tree/sub", p(&into)]);
    assert_eq!(listing(&tree.join("sub")), listing(&into.join("sub")));
    // A directory's contents with /.: merged into the existing directory.
    cp_ok(&["cp-tree:/tmp/tree/sub/.", p(&into)]);
    assert!(into.join("deep").join(LONG).is_file() && into.join("sub/deep").is_dir());
}

#[test]
fn files_follow_docker_cp_rules_and_errors_say_what_is_wrong() {
    let _c = Cleanup(&["cp-rules", "cp-stopped"]);
    let o = run_detached(&["--name", "cp-rules"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = tempfile::tempdir().unwrap();
    let note = t.path().join("note");
    fs::write(&note, "v1").unwrap();

    // To a new name, over an existing file, into a directory.
    cp_ok(&[p(&note), "cp-rules:/tmp/n"]);
    fs::write(&note, "v2").unwrap();
    cp_ok(&[p(&note), "cp-rules:/tmp/n"]);
    cp_ok(&[p(&note), "cp-rules:tmp"]);
    assert_eq!(
        exec("cp-rules", "cat /tmp/n; echo; cat /tmp/note"),
        "v2\nv2"
    );

    // The container's own files, not the guest's: the image's /etc/passwd.
    let passwd = t.path().join("passwd");
    cp_ok(&["cp-rules:/etc/passwd", p(&passwd)]);
    assert!(fs::read_to_string(&passwd)
        .unwrap()
        .contains("user:x:1000:1000"));

    let fails = |args: &[&str], needle: &str| {
        let o = cp(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "cabin cp {args:?}: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(needle),
            "cabin cp {args:?}: {}",
            stderr(&o)
        );
    };
    let nope = t.path().join("nope");
    fails(
        &["cp-rules:/no/such/file", p(&nope)],
        "no such file or directory in the container: /no/such/file",
    );
    assert!(!nope.exists());
    fails(
        &[p(&note), "cp-rules:/missing/x"],
        "the destination's parent directory /missing does not exist",
    );
    fails(&[p(&note), "cp-rules:/tmp/newdir/"], "does not exist");
    fails(
        &["cp-rules:/etc", p(&passwd)],
        "cannot copy a directory to a file",
    );
    fails(
        &[p(&t.path().join("absent")), "cp-rules:/tmp"],
        "no such file or directory",
    );
    fails(
        &[p(&note), p(&passwd)],
        "one of the two paths must be in a container",
    );
    fails(&["cp-rules:/etc", "cp-rules:/tmp"], "between containers");
    fails(
        &["cp-nobody:/etc", p(&nope)],
        "no such container: cp-nobody",
    );
    let o = run_detached(&["--name", "cp-stopped"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    cabin_ok(&["wait", "cp-stopped"]);
    fails(
        &["cp-stopped:/etc/passwd", p(&nope)],
        "container cp-stopped is not running",
    );

    // A copy that cannot be placed changes nothing: /tmp/clash/sub is a file in the
    // container, the host's clash/sub a directory.
    exec("cp-rules", "mkdir /tmp/clash && echo keep > /tmp/clash/sub");
    let clash = t.path().join("clash");
    fs::create_dir_all(clash.join("sub")).unwrap();
    fs::write(clash.join("a-first"), "1").unwrap();
    fs::write(clash.join("sub/x"), "2").unwrap();
    fails(
        &[p(&clash), "cp-rules:/tmp"],
        "cannot overwrite the non-directory /tmp/clash/sub with a directory",
    );
    assert_eq!(
        exec("cp-rules", "ls -A /tmp/clash; cat /tmp/clash/sub"),
        "sub\nkeep\n"
    );
    assert!(!exec("cp-rules", "ls -A /tmp").contains(".cabin-cp"));
}

#[test]
fn links_in_the_container_cannot_reach_the_guest_and_tar_streams_work() {
    let _c = Cleanup(&["cp-links"]);
    let o = run_detached(&["--name", "cp-links"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = tempfile::tempdir().unwrap();
    // In the guest, outside the container, /run/cabin holds every container's root
    // file system; inside the container there is no /run at all. A link that climbs
    // out of the container's root must still resolve inside it.
    exec(
        "cp-links",
        "ln -s ../../../../../../run/cabin /tmp/up && ln -s /etc/group /tmp/host && mkdir /srv",
    );
    let out = t.path().join("out");
    let o = cp(&["-L", "cp-links:/tmp/up", p(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no such file or directory in the container: /tmp/up"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // Without -L a link is copied as the link it is; with it, what it points to.
    cp_ok(&["cp-links:/tmp/up", p(&out)]);
    assert_eq!(
        fs::read_link(&out).unwrap(),
        Path::new("../../../../../../run/cabin")
    );
    let group = t.path().join("group");
    cp_ok(&["-L", "cp-links:/tmp/host", p(&group)]);
    assert!(fs::symlink_metadata(&group).unwrap().is_file());
    assert_eq!(
        fs::read_to_string(&group).unwrap().trim(),
        exec("cp-links", "cat /etc/group").trim()
    );

    // "-" on the host side: a tar archive on standard output, or from standard input.
    let o = cp(&["cp-links:/etc/passwd", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut archive = tar::Archive::new(&o.stdout[..]);
    let mut entries = archive.entries().unwrap();
    let mut e = entries.next().unwrap().unwrap();
    assert_eq!(e.path().unwrap(), Path::new("passwd"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut e, &mut text).unwrap();
    assert!(text.contains("user:x:1000"), "{text}");

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_size(6);
    h.set_mtime(1_234_567_890);
    b.append_data(&mut h, "from/stdin.txt", &b"hello\n"[..])
        .unwrap();
    let tarball = b.into_inner().unwrap();
    let send = |dest: &str| {
        let mut child = cabin()
            .args(["cp", "-", dest])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tarball).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = send("cp-links:/srv");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        exec(
            "cp-links",
            "stat -c '%a %Y' /srv/from/stdin.txt; cat /srv/from/stdin.txt"
        ),
        "640 1234567890\nhello\n"
    );
    let o = send("cp-links:/srv/none");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}
