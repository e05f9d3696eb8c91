//! Full VMs managed like Lume's, on real QEMU with UEFI firmware: the Lume storage
//! layout, VNC that answers a real RFB client with the guest's screen, the lifecycle
//! commands and their errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::vm_ok as ok;
use common::*;

/// Stops the named VMs of a data directory when the test ends, passed or failed, so
/// that no VM outlives it.
struct StopVms<'a>(&'a Path, &'static [&'static str]);

impl Drop for StopVms<'_> {
    fn drop(&mut self) {
        for name in self.1 {
            let _ = vm_in(self.0, &["stop", name]);
        }
    }
}

fn details(data: &Path, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(data, &["get", name, "-f", "json"])).unwrap();
    v[0].clone()
}

/// A minimal RFB 3.8 client: VNC authentication, one full framebuffer update in raw
/// 32-bit pixels. Returns (width, height, RGB bytes).
fn vnc_screenshot(url: &str) -> (u32, u32, Vec<u8>) {
    let rest = url
        .strip_prefix("vnc://:")
        .expect("vnc://:PASSWORD@HOST:PORT");
    let (password, hostport) = rest.split_once('@').unwrap();
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut version = [0u8; 12];
    s.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).unwrap();
    let mut types = vec![0u8; n[0] as usize];
    s.read_exact(&mut types).unwrap();
    assert!(types.contains(&2), "VNC authentication offered: {types:?}");
    s.write_all(&[2]).unwrap();
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).unwrap();
    // VNC's DES key: the password's first 8 bytes, each bit-reversed.
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.bytes()) {
        *k = b.reverse_bits();
    }
    use des::cipher::{BlockEncrypt, KeyInit};
    let cipher = des::Des::new_from_slice(&key).unwrap();
    for block in challenge.chunks_mut(8) {
        cipher.encrypt_block(block.into());
    }
    s.write_all(&challenge).unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    assert_eq!(result, [0, 0, 0, 0], "VNC authentication succeeded");
    s.write_all(&[1]).unwrap(); // shared
    let mut init = [0u8; 24];
    s.read_exact(&mut init).unwrap();
    let (w, h) = (
        u16::from_be_bytes([init[0], init[1]]) as u32,
        u16::from_be_bytes([init[2], init[3]]) as u32,
    );
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name).unwrap();
    // 32 bits per pixel, little-endian, true colour, red at bit 16, green 8, blue 0.
    let mut fmt = vec![
        0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ];
    s.write_all(&fmt).unwrap();
    fmt.clear();
    // SetEncodings: raw only.
    s.write_all(&[2, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    let mut req = vec![3u8, 0, 0, 0, 0, 0];
    req.extend_from_slice(&(w as u16).to_be_bytes());
    req.extend_from_slice(&(h as u16).to_be_bytes());
    s.write_all(&req).unwrap();
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    loop {
        let mut kind = [0u8; 1];
        s.read_exact(&mut kind).unwrap();
        match kind[0] {
            0 => {
                let mut hdr = [0u8; 3];
                s.read_exact(&mut hdr).unwrap();
                let rects = u16::from_be_bytes([hdr[1], hdr[2]]);
                let mut covered = 0u64;
                for _ in 0..rects {
                    let mut r = [0u8; 12];
                    s.read_exact(&mut r).unwrap();
                    let x = u16::from_be_bytes([r[0], r[1]]) as u32;
                    let y = u16::from_be_bytes([r[2], r[3]]) as u32;
                    let rw = u16::from_be_bytes([r[4], r[5]]) as u32;
                    let rh = u16::from_be_bytes([r[6], r[7]]) as u32;
                    let enc = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                    if enc != 0 {
                        // Pseudo-encodings (desktop size...) carry no pixels here.
                        continue;
                    }
                    let mut px = vec![0u8; (rw * rh * 4) as usize];
                    s.read_exact(&mut px).unwrap();
                    for row in 0..rh {
                        for col in 0..rw {
                            let p = ((row * rw + col) * 4) as usize;
                            let o = (((y + row) * w + x + col) * 3) as usize;
                            if o + 2 < rgb.len() {
                                rgb[o] = px[p + 2];
                                rgb[o + 1] = px[p + 1];
                                rgb[o + 2] = px[p];
                            }
                        }
                    }
                    covered += (rw * rh) as u64;
                }
                if covered > 0 {
                    return (w, h, rgb);
                }
                s.write_all(&req).unwrap();
            }
            2 => {} // bell
            other => panic!("unexpected RFB message {other}"),
        }
    }
}

/// Writes an RGB image as a PNG (stored as one zlib stream of filter-0 rows).
fn write_png(path: &Path, w: u32, h: u32, rgb: &[u8]) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut raw = Vec::new();
    for row in rgb.chunks((w * 3) as usize) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let idat = z.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_vm_is_created_run_with_vnc_stopped_changed_cloned_and_deleted() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let _stop = StopVms(d, &["lab"]);
    ok(
        d,
        &[
            "create",
            "lab",
            "--cpu",
            "1",
            "--memory",
            "512MB",
            "--disk-size",
            "12GB",
            "--display",
            "800x600",
        ],
    );
    // Lume's layout and keys.
    let dir = d.join("vms/lab");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    for key in [
        "os",
        "cpuCount",
        "memorySize",
        "diskSize",
        "macAddress",
        "display",
        "networkMode",
    ] {
        assert!(config.get(key).is_some(), "config.json has {key}: {config}");
    }
    assert_eq!(config["os"], "linux");
    assert_eq!(config["memorySize"], 512u64 << 20);
    assert_eq!(
        std::fs::metadata(dir.join("disk.img")).unwrap().len(),
        12 << 30
    );
    assert!(dir.join("nvram.bin").is_file());
    let v = details(d, "lab");
    assert_eq!(v["status"], "stopped");
    assert_eq!(v["diskSize"]["total"], 12u64 << 30);
    assert!(v["vncUrl"].is_null());

    // Runs in the background under UEFI; VNC answers with the firmware's screen.
    let shared = tempfile::tempdir().unwrap();
    let out = ok(
        d,
        &[
            "run",
            "lab",
            "--detach",
            "--shared-dir",
            &format!("{}:ro", shared.path().display()),
        ],
    );
    assert!(out.contains("VNC server started local=vnc://:"), "{out}");
    let v = details(d, "lab");
    assert_eq!(v["status"], "running");
    let url = v["vncUrl"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("vnc://:") && url.contains("@127.0.0.1:"),
        "{url}"
    );
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sessions.json")).unwrap()).unwrap();
    assert_eq!(session["sharedDirectories"][0]["readOnly"], true);
    let o = vm_in(d, &["run", "lab"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Virtual machine already running: lab"),
        "{}",
        stderr(&o)
    );
    let o = vm_in(d, &["delete", "lab"]);
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    let o = vm_in(d, &["set", "lab", "--cpu", "2"]);
    assert!(!o.status.success(), "a running VM is not changed");

    // The firmware draws something within a few seconds under TCG.
    let mut shot = (0, 0, Vec::new());
    // (The firmware picks its own mode; the configured size is the display's preferred
    // mode, which the guest's driver applies: see cabin-vmm's full.rs test.)
    eventually("the firmware to draw its screen", || {
        shot = vnc_screenshot(&url);
        shot.0 > 640 && shot.2.iter().any(|&b| b != 0)
    });
    let (w, h, rgb) = shot;
    let png = common::web::test_output_dir().join("vm-firmware-screen.png");
    write_png(&png, w, h, &rgb);
    eprintln!("screen saved: {}", png.display());

    ok(d, &["stop", "lab"]);
    assert_eq!(details(d, "lab")["status"], "stopped");
    assert!(!dir.join("sessions.json").exists());
    assert!(ok(d, &["logs", "lab"]).contains("Shell>") || dir.join("console.log").is_file());

    // Set: more CPUs, a new display, a bigger disk; never a smaller one.
    ok(
        d,
        &[
            "set",
            "lab",
            "--cpu",
            "2",
            "--display",
            "1024x768",
            "--disk-size",
            "16GB",
        ],
    );
    let v = details(d, "lab");
    assert_eq!(
        (v["cpuCount"].as_u64(), v["display"].as_str()),
        (Some(2), Some("1024x768"))
    );
    assert_eq!(v["diskSize"]["total"], 16u64 << 30);
    let o = vm_in(d, &["set", "lab", "--disk-size", "12GB"]);
    assert!(stderr(&o).contains("Cannot shrink disk"), "{}", stderr(&o));

    // Clone: same settings, its own MAC address.
    ok(d, &["clone", "lab", "lab2"]);
    let a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("vms/lab2/config.json")).unwrap()).unwrap();
    assert_ne!(a["macAddress"], b["macAddress"]);
    assert_eq!(a["cpuCount"], b["cpuCount"]);
    let list: serde_json::Value = serde_json::from_str(&ok(d, &["ls", "-f", "json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lab", "lab2"]);

    ok(d, &["delete", "lab2"]);
    ok(d, &["delete", "lab"]);
    assert_eq!(ok(d, &["ls", "-f", "json"]).trim(), "[]");
    let o = vm_in(d, &["get", "lab"]);
    assert!(stderr(&o).contains("Virtual machine not found: lab"));
}

#[test]
fn bad_vm_requests_are_refused_and_leave_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let cases: &[(&[&str], &str)] = &[
        (&["create", "../evil"], "Invalid VM name"),
        (&["create", "x", "--memory", "lots"], "invalid size"),
        (&["create", "x", "--disk-size", "1GB"], "at least 10GB"),
        (&["create", "x", "--display", "huge"], "invalid display"),
        (&["create", "x", "--os", "windows"], "Unsupported OS type"),
        (
            &["create", "x", "--network", "host"],
            "Invalid network mode",
        ),
        (
            &["create", "x", "--storage", "nowhere"],
            "Storage location not found: nowhere",
        ),
        (&["run", "ghost"], "Virtual machine not found: ghost"),
        (&["stop", "ghost"], "Virtual machine not found: ghost"),
    ];
    for (args, message) in cases {
        let o = vm_in(d, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
    assert!(
        !d.join("vms").exists() || std::fs::read_dir(d.join("vms")).unwrap().count() == 0,
        "refused creates leave nothing"
    );
    ok(
        d,
        &["create", "one", "--memory", "256MB", "--disk-size", "10GB"],
    );
    let o = vm_in(d, &["create", "one", "--disk-size", "10GB"]);
    assert!(stderr(&o).contains("Virtual machine already exists with name: one"));
    let o = vm_in(d, &["run", "one", "--shared-dir", "/nonexistent/dir"]);
    assert!(
        stderr(&o).contains("Host path does not exist or is not a directory: /nonexistent/dir"),
        "{}",
        stderr(&o)
    );
    let o = vm_in(d, &["run", "one", "--shared-dir", "/tmp:rx"]);
    assert!(stderr(&o).contains("must be ro or rw"), "{}", stderr(&o));
    assert_eq!(details(d, "one")["status"], "stopped");
    let o = vm_in(d, &["stop", "one"]);
    assert!(
        stderr(&o).contains("Virtual machine is not running: one"),
        "{}",
        stderr(&o)
    );

    // Named storage locations and direct paths.
    let elsewhere = tempfile::tempdir().unwrap();
    let loc = elsewhere.path().join("fast");
    let o = cabin_in(d)
        .args(["config", "storage", "add", "fast"])
        .arg(&loc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    ok(
        d,
        &[
            "create",
            "two",
            "--storage",
            "fast",
            "--memory",
            "256MB",
            "--disk-size",
            "10GB",
        ],
    );
    assert!(loc.join("two/config.json").is_file());
    assert_eq!(details(d, "two")["locationName"], "fast");
    let direct = elsewhere.path().join("direct");
    ok(
        d,
        &[
            "create",
            "three",
            "--storage",
            direct.to_str().unwrap(),
            "--memory",
            "256MB",
            "--disk-size",
            "10GB",
        ],
    );
    assert!(direct.join("three/disk.img").is_file());
    let o = cabin_in(d)
        .args(["config", "storage", "remove", "home"])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("Cannot remove the default storage location"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_full_disk_during_create_or_clone_is_clear_and_leaves_no_half_vm() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let small = tempfile::tempdir().unwrap();
    let Some(_guard) = small_tmpfs(small.path(), "4m") else {
        return;
    };
    // The tmpfs cannot hold the firmware's variable store after this.
    std::fs::write(
        small.path().join("filler"),
        vec![1u8; (4 << 20) - (128 << 10)],
    )
    .unwrap();
    let o = vm_in(
        d,
        &[
            "create",
            "full",
            "--disk-size",
            "10GB",
            "--memory",
            "256MB",
            "--storage",
            small.path().to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(small.path().join("filler")).unwrap();
    assert_eq!(
        entries(small.path()),
        Vec::<String>::new(),
        "nothing half-made"
    );

    // A clone whose data does not fit.
    ok(
        d,
        &["create", "big", "--disk-size", "10GB", "--memory", "256MB"],
    );
    let disk = d.join("vms/big/disk.img");
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![9u8; 8 << 20], 1 << 30).unwrap();
    let o = vm_in(
        d,
        &[
            "clone",
            "big",
            "copy",
            "--dest-storage",
            small.path().to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        entries(small.path()),
        Vec::<String>::new(),
        "nothing half-cloned"
    );
    assert_eq!(details(d, "big")["status"], "stopped");
    let o = vm_in(d, &["get", "copy"]);
    assert!(stderr(&o).contains("Virtual machine not found: copy"));
}

#[test]
fn a_vm_whose_qemu_dies_shows_as_stopped_and_runs_again() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let _stop = StopVms(d, &["fragile"]);
    ok(
        d,
        &[
            "create",
            "fragile",
            "--cpu",
            "1",
            "--memory",
            "256MB",
            "--disk-size",
            "10GB",
        ],
    );
    ok(d, &["run", "fragile", "--detach", "--vnc", "disabled"]);
    let v = details(d, "fragile");
    assert_eq!(v["status"], "running");
    assert!(v["vncUrl"].is_null(), "VNC disabled: {v}");
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("vms/fragile/sessions.json")).unwrap())
            .unwrap();
    let runner = session["pid"].as_u64().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children")).unwrap();
    let qemu: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: SIGKILL to the QEMU this test started.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    eventually("the VM to show as stopped", || {
        details(d, "fragile")["status"] == "stopped"
    });
    assert!(!d.join("vms/fragile/sessions.json").exists());
    // The VM shows as stopped once its runner lets go of it, a moment before the
    // runner's own exit.
    eventually("its runner to end with it", || !pid_alive(runner as i32));
    let logs = ok(d, &["logs", "fragile"]);
    assert!(
        logs.contains("[cabin] QEMU ended (signal: 9 (SIGKILL)) while the guest ran"),
        "{logs}"
    );
    ok(d, &["run", "fragile", "--detach", "--vnc", "disabled"]);
    assert_eq!(details(d, "fragile")["status"], "running");
    ok(d, &["delete", "--force", "fragile"]);
    let o = vm_in(d, &["get", "fragile"]);
    assert!(stderr(&o).contains("Virtual machine not found: fragile"));
}

/// `vm ssh NAME -- SCRIPT`, which must succeed; its output.
fn ssh_ok(data: &Path, name: &str, script: &str) -> String {
    ok(data, &["ssh", name, "--", script])
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn a_vm_made_from_a_debian_image_boots_its_own_init_and_answers_on_its_ip() {
    if !is_root() {
        eprintln!("skipped: debootstrap and the bridge need root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    import_debian_system(d);
    let _stop = StopVms(d, &["deb", "deb-copy"]);
    ok(
        d,
        &[
            "create",
            "deb",
            "--image",
            "debian-system:12",
            "--disk-size",
            "12GB",
            "--memory",
            "1GB",
            "--cpu",
            "2",
        ],
    );
    let dir = d.join("vms/deb");
    assert_eq!(
        std::fs::metadata(dir.join("disk.img")).unwrap().len(),
        12 << 30
    );
    assert!(
        allocated(&dir.join("disk.img")) < 1 << 30,
        "the disk is sparse: {} bytes allocated",
        allocated(&dir.join("disk.img"))
    );
    let boot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cabin-boot.json")).unwrap()).unwrap();
    assert_eq!(boot["image"], "debian-system:12", "{boot}");
    assert!(dir.join("vmlinuz").is_file());

    let share = tempfile::tempdir().unwrap();
    let share_dir = share.path().join("notes");
    std::fs::create_dir(&share_dir).unwrap();
    std::fs::write(share_dir.join("hello.txt"), "hello from the host\n").unwrap();
    ok(
        d,
        &[
            "run",
            "deb",
            "--detach",
            "--shared-dir",
            &format!("{}:ro", share_dir.display()),
        ],
    );
    wait_for("deb's SSH server", Duration::from_secs(240), || {
        details(d, "deb")["sshAvailable"] == true
    });
    let info = details(d, "deb");
    let ip = info["ipAddress"].as_str().expect("an address").to_string();
    assert!(ip.starts_with("10.89.0."), "{info}");

    // Its own init, its name, the address cabin reported, the shared folder mounted.
    let out = ssh_ok(
        d,
        "deb",
        "cat /proc/1/comm; hostname; ip -4 -o addr show eth0; \
         cat /mnt/shared/notes/hello.txt; cat /etc/machine-id; \
         findmnt -no OPTIONS /mnt/shared/notes; echo kept > /root/mark; sync",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "systemd", "{out}");
    assert_eq!(lines[1], "deb", "{out}");
    assert!(lines[2].contains(&format!("inet {ip}/24")), "{out}");
    assert_eq!(lines[3], "hello from the host", "{out}");
    let machine_id = lines[4].to_string();
    assert_eq!(machine_id.len(), 32, "{out}");
    assert!(lines[5].split(',').any(|o| o == "ro"), "read-only: {out}");
    let o = vm_in(d, &["ssh", "deb", "--", "touch /mnt/shared/notes/new"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!share_dir.join("new").exists());
    // Lume's conventional account, with sudo, reachable with cabin's key too.
    let o = vm_in(d, &["ssh", "-u", "lume", "deb", "--", "id -un; id -Gn"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    assert!(id.starts_with("lume\n"), "{id}");
    assert!(
        id.lines().nth(1).unwrap().split(' ').any(|g| g == "sudo"),
        "{id}"
    );
    // The host reaches the guest on that address: the SSH server greets there.
    let mut s = TcpStream::connect((ip.as_str(), 22)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 4];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"SSH-");
    // A login prompt on the serial console, and the screen shows the console too.
    wait_for("a login prompt", Duration::from_secs(60), || {
        stdout(&vm_in(d, &["logs", "deb"])).contains("deb login:")
    });
    let (w, h, rgb) = vnc_screenshot(info["vncUrl"].as_str().unwrap());
    write_png(
        &common::web::test_output_dir().join("debian-vm.png"),
        w,
        h,
        &rgb,
    );
    assert!(
        rgb.chunks(3).any(|p| p != &rgb[..3]),
        "the screen shows something"
    );

    // Stop powers the guest off through ACPI; systemd shuts down cleanly.
    ok(d, &["stop", "deb"]);
    let log = stdout(&vm_in(d, &["logs", "deb"]));
    assert!(log.contains("reboot: Power down"), "a clean power-off");
    assert_eq!(details(d, "deb")["ipAddress"], serde_json::Value::Null);

    // A clone keeps the disk and boots with its own name and machine id.
    ok(d, &["clone", "deb", "deb-copy"]);
    ok(d, &["set", "deb-copy", "--disk-size", "14GB"]);
    // ... on the VNC port asked for.
    let o = vm_in(d, &["run", "deb-copy", "--detach", "--vnc-port", "80"]);
    expect_error(&o, 1, "invalid VNC port 80");
    let port = (5950..6100u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port");
    ok(
        d,
        &[
            "run",
            "deb-copy",
            "--detach",
            "--vnc-port",
            &port.to_string(),
        ],
    );
    let url = details(d, "deb-copy")["vncUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.ends_with(&format!("@127.0.0.1:{port}")), "{url}");
    wait_for("deb-copy's SSH server", Duration::from_secs(240), || {
        details(d, "deb-copy")["sshAvailable"] == true
    });
    let out = ssh_ok(
        d,
        "deb-copy",
        "hostname; cat /etc/machine-id; cat /root/mark; df -B1M --output=size / | tail -1",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "deb-copy", "{out}");
    assert_ne!(lines[1], machine_id, "{out}");
    assert_eq!(lines[2], "kept", "{out}");
    // The disk was grown before this boot: the root file system grew with it.
    let mib: u64 = lines[3].trim().parse().unwrap();
    assert!(
        mib > 13 * 1024,
        "root file system of {mib} MiB after growing to 14GB"
    );
    ok(d, &["stop", "deb-copy"]);

    // Rootless: QEMU's user network; no address to report, SSH through a port
    // forwarded from 127.0.0.1. (The same VM, its files handed to an unprivileged user.)
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(d)
        .status()
        .unwrap();
    assert!(st.success());
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
            .arg(format!("HOME={}", d.display()))
            .arg(format!("CABIN_DATA_DIR={}", d.display()))
            .args(["CABIN_ACCEL=tcg", env!("CARGO_BIN_EXE_cabin"), "vm"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = as_nobody(&["run", "deb-copy", "--detach"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let get = || -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(
            &as_nobody(&["get", "deb-copy", "-f", "json"]).stdout,
        )
        .unwrap()[0]
            .clone()
    };
    wait_for("SSH through the forward", Duration::from_secs(240), || {
        get()["sshAvailable"] == true
    });
    assert_eq!(get()["ipAddress"], serde_json::Value::Null);
    let o = as_nobody(&[
        "ssh",
        "deb-copy",
        "--",
        "ip -4 -o addr show eth0; cat /proc/1/comm",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("inet 10.0.2.15/24"), "{}", stdout(&o));
    assert!(stdout(&o).contains("systemd"), "{}", stdout(&o));
    let o = as_nobody(&["stop", "deb-copy"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Creates a small VM (1 CPU, 512 MB, a 10 GB disk) with `extra` options.
fn create_small(d: &Path, name: &str, extra: &[&str]) {
    let mut args = vec![
        "create",
        name,
        "--cpu",
        "1",
        "--memory",
        "512MB",
        "--disk-size",
        "10GB",
    ];
    args.extend_from_slice(extra);
    ok(d, &args);
}

/// An installer ISO made with grub-mkrescue around cabin's VM kernel, in `w`. Its
/// initramfs says which firmware started it, takes an address with DHCP as an
/// installer would, serves a page there, and powers off when /cgi-bin/off is fetched.
fn installer_iso(w: &Path) -> PathBuf {
    let kernel = std::env::var_os("CABIN_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/cabin/kernel/current-vm/bzImage")
        });
    assert!(
        kernel.is_file(),
        "the VM kernel is built (scripts/build-kernel.sh vm)"
    );
    let initrd = w.join("initrd");
    for sub in ["bin", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(initrd.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", initrd.join("bin/busybox")).unwrap();
    std::fs::write(initrd.join("www/index.html"), "served by the installer\n").unwrap();
    let scripts = [
        (
            "init",
            "#!/bin/busybox sh\n\
             /bin/busybox --install -s /bin\n\
             mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
             if [ -d /sys/firmware/efi ]; then fw=UEFI; else fw=BIOS; fi\n\
             echo \"cabin-iso: booted under $fw\" > /dev/ttyS0\n\
             ip link set eth0 up\n\
             udhcpc -i eth0 -n -q -f -s /lease.sh > /dev/ttyS0 2>&1\n\
             httpd -p 8080 -h /www\n\
             # The 'poweroff' page of the test: a CGI that powers off.\n\
             while [ ! -e /www/off ]; do sleep 0.2; done\n\
             poweroff -f\n",
        ),
        (
            "lease.sh",
            "#!/bin/sh\n\
             [ \"$1\" = bound ] || exit 0\n\
             ip addr add \"$ip/$mask\" dev \"$interface\"\n\
             echo \"cabin-iso: leased $ip\" > /dev/ttyS0\n",
        ),
        (
            "www/cgi-bin/off",
            "#!/bin/sh\ntouch /www/off\nprintf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\n",
        ),
    ];
    use std::os::unix::fs::PermissionsExt;
    for (name, text) in scripts {
        let p = initrd.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let iso_tree = w.join("iso");
    std::fs::create_dir_all(iso_tree.join("boot/grub")).unwrap();
    std::fs::copy(&kernel, iso_tree.join("boot/vmlinuz")).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc 2>/dev/null | gzip > \"$2\"")
        .arg("sh")
        .arg(&initrd)
        .arg(iso_tree.join("boot/initrd.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        iso_tree.join("boot/grub/grub.cfg"),
        "set timeout=0\n\
         menuentry \"cabin test\" {\n\
           linux /boot/vmlinuz console=ttyS0 rdinit=/init\n\
           initrd /boot/initrd.gz\n\
         }\n",
    )
    .unwrap();
    let iso = w.join("installer.iso");
    let o = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&iso_tree)
        .output()
        .expect("grub-mkrescue is installed (apt-get install grub-common grub-efi-amd64-bin xorriso mtools)");
    assert!(o.status.success(), "grub-mkrescue: {}", stderr(&o));
    iso
}

/// Boots the VM `name` from `iso` in the foreground (`vm run` returns when the guest
/// powers off): UEFI starts it; as root the guest's DHCP gets an address in
/// `subnet_prefix` that cabin reports, and the host fetches a page from it there.
/// Boots the installer ISO in the foreground (`vm run` returns when the guest powers
/// off); with `suspend_once`, suspends the running installer and resumes it before
/// asking it to power off (root: it is reached on the bridge).
fn boot_installer(d: &Path, name: &str, iso: &Path, subnet_prefix: &str, suspend_once: bool) {
    let start = || {
        cabin_in(d)
            .env("CABIN_ACCEL", "tcg")
            .args(["vm", "run", name, "--vnc", "disabled", "--mount"])
            .arg(iso)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let logs = || stdout(&vm_in(d, &["logs", name]));
    wait_for("the installer to boot", Duration::from_secs(240), || {
        logs().contains("cabin-iso: booted under")
    });
    assert!(
        logs().contains("cabin-iso: booted under UEFI"),
        "{}",
        logs()
    );
    if is_root() {
        // On cabin's bridge, the guest's DHCP gets the address cabin reports, and the
        // host reaches it there.
        wait_for("the guest's DHCP lease", Duration::from_secs(60), || {
            logs().contains("cabin-iso: leased ")
        });
        let log = logs();
        let leased = log
            .lines()
            .find_map(|l| l.strip_prefix("cabin-iso: leased "))
            .unwrap()
            .trim()
            .to_string();
        assert!(leased.starts_with(subnet_prefix), "{log}");
        wait_for(
            "the address to be reported",
            Duration::from_secs(10),
            || details(d, name)["ipAddress"] == leased.as_str(),
        );
        let get = |path: &str| {
            let o = Command::new("curl")
                .args([
                    "-s",
                    "--max-time",
                    "10",
                    "--retry",
                    "10",
                    "--retry-connrefused",
                ])
                .arg(format!("http://{leased}:8080{path}"))
                .output()
                .unwrap();
            stdout(&o)
        };
        assert_eq!(get("/index.html"), "served by the installer\n");
        if suspend_once {
            // A UEFI PC with an installer disc, suspended and resumed: its firmware,
            // disc and network come back and its server goes on where it was.
            ok(d, &["suspend", name]);
            assert!(
                child.wait().unwrap().success(),
                "vm run ended with the suspend"
            );
            assert_eq!(details(d, name)["status"], "suspended");
            child = start();
            wait_for("the resumed VM", Duration::from_secs(60), || {
                details(d, name)["status"] == "running"
            });
            // The console log goes on from the suspended run's: one boot in it.
            let log = logs();
            assert_eq!(log.matches("cabin-iso: booted under").count(), 1, "{log}");
            assert!(log.contains(&format!("[cabin] {name} suspended")), "{log}");
            assert_eq!(get("/index.html"), "served by the installer\n");
        }
        assert_eq!(get("/cgi-bin/off"), "bye\n");
    } else {
        eprintln!("DHCP on the bridge skipped: needs root");
        ok(d, &["stop", name]);
    }
    let mut status = None;
    wait_for(
        "the installer to power off",
        Duration::from_secs(60),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success());
    if is_root() {
        assert!(
            logs().contains("reboot: Power down"),
            "the guest powered off"
        );
    }
}

#[test]
fn an_installer_iso_built_with_grub_boots_under_uefi() {
    let work = tempfile::tempdir().unwrap();
    let iso = installer_iso(work.path());
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let _stop = StopVms(d, &["installer"]);
    create_small(d, "installer", &[]);
    boot_installer(d, "installer", &iso, "10.89.0.", true);
}

/// A host bridge with its own DHCP server (Debian's dnsmasq), removed when dropped.
struct TestLan {
    name: &'static str,
    dnsmasq: std::process::Child,
}

impl Drop for TestLan {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip").args(["link", "del", self.name]).status();
    }
}

#[test]
fn a_bridged_vm_is_a_machine_on_the_hosts_lan() {
    if !is_root() {
        eprintln!("skipped: bridged networking needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let iso = installer_iso(work.path());
    let lan = "cbtestlan0";
    let _ = Command::new("ip").args(["link", "del", lan]).status();
    for args in [
        vec!["link", "add", lan, "type", "bridge"],
        vec!["addr", "add", "192.168.231.1/24", "dev", lan],
        vec!["link", "set", lan, "up"],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    let dnsmasq = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--port=0",
            "--bind-interfaces",
            &format!("--interface={lan}"),
            "--except-interface=lo",
            "--dhcp-range=192.168.231.50,192.168.231.60,1h",
            "--dhcp-authoritative",
        ])
        .arg(format!(
            "--dhcp-leasefile={}",
            work.path().join("leases").display()
        ))
        .arg(format!("--pid-file={}", work.path().join("pid").display()))
        .spawn()
        .expect("dnsmasq is installed (apt-get install dnsmasq-base)");
    let _lan = TestLan { name: lan, dnsmasq };
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let _stop = StopVms(d, &["onlan"]);
    let o = vm_in(
        d,
        &[
            "create",
            "nolan",
            "--network",
            "bridged:nosuchbr0",
            "--disk-size",
            "10GB",
        ],
    );
    assert!(o.status.success(), "the bridge is looked for at run time");
    let o = vm_in(d, &["run", "nolan", "--detach"]);
    expect_error(&o, 1, "nosuchbr0 is not a bridge on this host");
    create_small(d, "onlan", &["--network", &format!("bridged:{lan}")]);
    boot_installer(d, "onlan", &iso, "192.168.231.", false);
}

#[test]
fn a_vm_from_a_bad_image_is_refused_and_leaves_nothing_behind() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let import = |dir: &Path, name: &str| {
        let o = cabin_in(d)
            .args(["image", "import"])
            .arg(dir)
            .arg(name)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let create = |name: &str, image: &str, extra: &[&str]| {
        let mut args = vec!["create", name, "--image", image, "--memory", "256MB"];
        args.extend_from_slice(extra);
        vm_in(d, &args)
    };
    let no_vms = || {
        let list: serde_json::Value = serde_json::from_str(&ok(d, &["ls", "-f", "json"])).unwrap();
        assert_eq!(list, serde_json::json!([]));
        let vms = d.join("vms");
        let left = if vms.exists() { entries(&vms) } else { vec![] };
        assert!(left.is_empty(), "nothing half-made: {left:?}");
    };
    let o = create("a", "nope:1", &[]);
    expect_error(&o, 1, "image not found: nope:1");
    no_vms();

    // An image with no init of its own.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::write(tree.path().join("etc/os-release"), "ID=none\n").unwrap();
    import(tree.path(), "noinit:1");
    expect_error(&create("b", "noinit:1", &[]), 1, "noinit:1 has no init");
    no_vms();

    // A hostile image: its /etc leads out of the tree; cabin writes nothing through it.
    let outside = tempfile::tempdir().unwrap();
    let hostile = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hostile.path().join("sbin")).unwrap();
    std::fs::write(hostile.path().join("sbin/init"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), hostile.path().join("etc")).unwrap();
    import(hostile.path(), "hostile:1");
    expect_error(
        &create("c", "hostile:1", &[]),
        1,
        "the image's etc is not a directory",
    );
    assert_eq!(entries(outside.path()), Vec::<String>::new());
    no_vms();

    // A storage location that fills up while the disk is made.
    let small = tempfile::tempdir().unwrap();
    if let Some(_guard) = small_tmpfs(small.path(), "4m") {
        let big = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(big.path().join("sbin")).unwrap();
        std::fs::write(big.path().join("sbin/init"), "#!/bin/sh\n").unwrap();
        let noise: Vec<u8> = (0..6u32 << 20)
            .map(|i| i.wrapping_mul(2654435761) as u8)
            .collect();
        std::fs::write(big.path().join("data.bin"), noise).unwrap();
        import(big.path(), "big:1");
        let o = create(
            "full",
            "big:1",
            &["--storage", small.path().to_str().unwrap()],
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("No space left on device") && stderr(&o).contains("--storage"),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            entries(small.path()),
            Vec::<String>::new(),
            "nothing half-made"
        );
    }
}
