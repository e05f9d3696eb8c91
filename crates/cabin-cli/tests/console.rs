//! The web console of `cabin serve`: its session token, the Host and Origin rules (plain
//! HTTP and websocket clients), and, in Debian's Chromium driven by playwright-core, a
//! real VM's screen and serial console and a container's logs and shell.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::web::*;
use common::*;

#[test]
fn the_console_needs_its_token_and_refuses_other_names_and_origins() {
    let data = tempfile::tempdir().unwrap();
    let c = Console::start(data.path(), &[]);
    assert_eq!(c.token.len(), 32);

    // No token, a wrong one: 401 with what to do, on pages, data and websockets.
    for path in [
        "/",
        "/vm/web",
        "/container/web",
        "/api/state",
        "/assets/console/vm.js",
    ] {
        let r = c.request("GET", path, &[]);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.body.contains("open the Console URL"), "{}", r.body);
    }
    let r = c.request("GET", "/?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &[]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("token is wrong"), "{}", r.body);
    let e = websocket(c.port, "/ws/vm/web/screen", &[]).unwrap_err();
    assert_eq!(e.0, 401, "{e:?}");

    // The printed URL opens the console and sets the session cookie.
    let r = c.request("GET", &format!("/?token={}", c.token), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let set_cookie = r
        .head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(set_cookie.contains(&c.cookie()), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(r.body.contains("<title>cabin</title>"), "{}", r.body);
    assert!(r.head.contains("x-frame-options: DENY"), "{}", r.head);
    let cookie = c.cookie();
    let r = c.request("GET", "/api/state", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["vms"], serde_json::json!([]));
    // The libraries are built in from the npm packages, with their licences.
    for path in [
        "/assets/vendor/novnc/core/rfb.js",
        "/assets/vendor/novnc/vendor/pako/lib/zlib/inflate.js",
        "/assets/vendor/novnc/LICENSE.txt",
        "/assets/vendor/xterm/xterm.mjs",
        "/assets/vendor/xterm/addon-fit.mjs",
    ] {
        let r = c.request("GET", path, &[("Cookie", &cookie)]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let r = c.request(
        "GET",
        "/assets/console/../../Cargo.toml",
        &[("Cookie", &cookie)],
    );
    assert_ne!(r.status, 200);

    // Lume's API on the loopback needs no token (Lume's clients send none)...
    let r = c.request("GET", "/lume/vms", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    // ...but no other name (DNS rebinding) and no other site's page, on any route.
    for path in ["/lume/vms", "/", "/api/state"] {
        let r = c.request(
            "GET",
            path,
            &[("Host", "rebound.example:7777"), ("Cookie", &cookie)],
        );
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("does not answer to the name"), "{}", r.body);
        let r = c.request(
            "GET",
            path,
            &[("Origin", "http://evil.example"), ("Cookie", &cookie)],
        );
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("another web site"), "{}", r.body);
    }
    let r = c.request(
        "POST",
        "/lume/vms/web/run",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403);
    for name in ["localhost", "host.docker.internal"] {
        let host = format!("{name}:{}", c.port);
        let r = c.request("GET", "/lume/vms", &[("Host", &host)]);
        assert_eq!(r.status, 200, "{name}");
    }
    let origin = c.origin();
    let e = websocket(
        c.port,
        "/ws/vm/web/serial",
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
    )
    .unwrap_err();
    assert_eq!(e.0, 403, "{e:?}");
    // With the session and its own origin: the console's own answer.
    let e = websocket(
        c.port,
        "/ws/vm/web/serial",
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .unwrap_err();
    assert_eq!(e.0, 404, "{e:?}");
    assert!(e.1.contains("Virtual machine not found: web"), "{e:?}");
    let r = c.api("POST", "/api/vms/web/start");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = c.api("POST", "/api/containers/nothing/stop");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no such container"), "{}", r.body);
    // A pull started through Lume's API shows on the dashboard, here with why it failed.
    let r = post_json(
        c.port,
        "/lume/pull/start",
        r#"{"image":"nothing:1","registry":"127.0.0.1:1","organization":"o"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let start = Instant::now();
    let transfer = loop {
        let state = c.api("GET", "/api/state").json();
        let t = state["transfers"][0].clone();
        if !t["error"].is_null() {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{state}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(transfer["vm"], "nothing", "{transfer}");
    assert_eq!(transfer["direction"], "pull", "{transfer}");
    assert!(
        transfer["image"].as_str().unwrap().contains("nothing:1"),
        "{transfer}"
    );

    // The token stays out of the log Lume's API serves.
    let r = c.request("GET", "/lume/logs", &[]);
    assert!(!r.body.contains(&c.token), "{}", r.body);

    // A token from a file; a bad file is refused with what a token is.
    let file = data.path().join("token");
    std::fs::write(&file, "abcdefghijklmnop-QRSTUVWXYZ_0123456789\n").unwrap();
    let d2 = data.path().join("second");
    let c2 = Console::start(&d2, &["--token-file", file.to_str().unwrap()]);
    assert_eq!(c2.token, "abcdefghijklmnop-QRSTUVWXYZ_0123456789");
    std::fs::write(&file, "short\n").unwrap();
    let o = cabin_in(&d2)
        .args([
            "serve",
            "--port",
            "0",
            "--token-file",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a token is 16 to 256 characters"),
        "{}",
        stderr(&o)
    );

    // Beyond the loopback, Lume's API asks for the token too.
    let d3 = data.path().join("third");
    let c3 = Console::start(&d3, &["--listen", "0.0.0.0"]);
    let r = c3.request("GET", "/lume/vms", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    let bearer = format!("Bearer {}", c3.token);
    let r = c3.request("GET", "/lume/vms", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let _ = std::fs::read_to_string(&c3.log);
    drop(c3);

    // ... unless the user opts out by a flag that names the risk; the console keeps
    // its token all the same.
    let d4 = data.path().join("fourth");
    let c4 = Console::start(
        &d4,
        &[
            "--listen",
            "0.0.0.0",
            "--unauthenticated-lume-api-on-the-network",
        ],
    );
    let r = c4.request("GET", "/lume/vms", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c4.request("GET", "/", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
}

/// The VM's screen as QEMU has it (QMP `screendump`, PPM): width, height, RGB.
fn screendump(qmp: &Path, out: &Path) -> (usize, usize, Vec<u8>) {
    let s = UnixStream::connect(qmp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    for cmd in [
        r#"{"execute":"qmp_capabilities"}"#.to_string(),
        serde_json::json!({"execute": "screendump", "arguments": {"filename": out}}).to_string(),
    ] {
        writeln!(w, "{cmd}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
            assert!(!line.contains("\"error\""), "{line}");
        }
    }
    let ppm = std::fs::read(out).unwrap();
    // P6\n<w> <h>\n255\n<rgb>
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&ppm[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, ppm[at + 1..].to_vec())
}

#[test]
fn a_vms_screen_and_serial_console_and_a_containers_shell_work_in_a_browser() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let root = bootable_busybox(&d.join("rootfs"));
    let o = cabin_in(d)
        .args(["image", "import", root.to_str().unwrap(), "local/bbvm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    vm_ok(
        d,
        &[
            "create",
            "bb",
            "--image",
            "local/bbvm",
            "--disk-size",
            "10GB",
            "--memory",
            "256MB",
            "--cpu",
            "1",
        ],
    );
    let c = Console::start(d, &[]);
    struct StopVm<'a>(&'a Path);
    impl Drop for StopVm<'_> {
        fn drop(&mut self) {
            let _ = vm_in(self.0, &["stop", "bb"]);
        }
    }
    let _stop = StopVm(d);

    // The dashboard's start button's request.
    let r = c.api("POST", "/api/vms/bb/start");
    assert_eq!(r.status, 200, "{}", r.body);
    let state = c.api("GET", "/api/state").json();
    let vm = &state["vms"][0];
    assert_eq!(vm["name"], "bb", "{state}");
    assert_eq!(vm["status"], "running", "{state}");
    assert_eq!(vm["screen"], true, "{state}");
    assert!(
        !c.api("GET", "/api/state").body.contains("vnc://"),
        "the VNC password stays on the host"
    );
    let r = c.api("POST", "/api/vms/bb/start");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("already running"), "{}", r.body);

    // Without a browser: the screen's websocket speaks RFB with no password asked, with
    // and without the `binary` subprotocol.
    let (cookie, origin) = (c.cookie(), c.origin());
    for protocol in [None, Some("binary")] {
        let mut headers = vec![("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
        if let Some(p) = protocol {
            headers.push(("Sec-WebSocket-Protocol", p));
        }
        let mut ws = websocket(c.port, "/ws/vm/bb/screen", &headers).unwrap();
        assert_eq!(next_binary(&mut ws), b"RFB 003.008\n");
        ws.send(tungstenite::Message::Binary(
            b"RFB 003.008\n".to_vec().into(),
        ))
        .unwrap();
        assert_eq!(next_binary(&mut ws), [1, 1], "one security type: none");
        ws.send(tungstenite::Message::Binary(vec![1].into()))
            .unwrap();
        assert_eq!(next_binary(&mut ws), [0, 0, 0, 0], "security result: OK");
        // ClientInit (shared); ServerInit comes from QEMU: a screen size (the guest's
        // mode of the moment) and the desktop's name.
        ws.send(tungstenite::Message::Binary(vec![1].into()))
            .unwrap();
        let init = next_binary(&mut ws);
        assert!(init.len() >= 24, "{init:?}");
        let width = u16::from_be_bytes([init[0], init[1]]);
        assert!(width >= 640, "{init:?}");
        assert_eq!(&init[24..], b"QEMU (bb)", "{init:?}");
    }

    // In the browser: the dashboard lists it, the token leaves the address bar.
    let out = test_output_dir();
    let outs = out.to_str().unwrap();
    let v = browser(&["dashboard", &c.url(), outs]);
    assert_eq!(v["vms"], serde_json::json!(["bb"]), "{v:#}");
    assert!(!v["address"].as_str().unwrap().contains("token"), "{v:#}");
    // Its page: the screen drawn, the serial console answering, keys typed on the
    // screen reaching the guest.
    let v = browser(&["vm", &c.url(), "bb", outs]);
    assert_eq!(v["serial"], "serial-42");
    assert_eq!(v["typed"], "typed-42-ON-SCREEN");
    let (w, h) = (
        v["width"].as_u64().unwrap() as usize,
        v["height"].as_u64().unwrap() as usize,
    );
    let canvas = std::fs::read(out.join("console-canvas.rgba")).unwrap();
    // The same pixels as QEMU's own screendump.
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("vms/bb/sessions.json")).unwrap()).unwrap();
    let run_dir = Path::new(session["serialSocket"].as_str().expect("a serial socket"))
        .parent()
        .unwrap()
        .to_path_buf();
    // QEMU runs as the VM's own user: it writes its screendump where anyone may.
    let dump = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dump.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let (qw, qh, rgb) = screendump(
        &run_dir.join("monitor.sock"),
        &dump.path().join("screen.ppm"),
    );
    assert_eq!((w, h), (qw, qh));
    let differing = (0..w * h)
        .filter(|i| (0..3).any(|k| (canvas[i * 4 + k] as i32 - rgb[i * 3 + k] as i32).abs() > 48))
        .count();
    let lit = (0..w * h)
        .filter(|i| rgb[i * 3..i * 3 + 3] != [0, 0, 0])
        .count();
    assert!(
        lit > w * h / 100,
        "the screen shows text ({lit} lit pixels)"
    );
    assert!(
        differing < w * h / 50,
        "{differing} of {} pixels differ between the page's canvas and QEMU's screen",
        w * h
    );

    // A container's page: its logs and a shell, sized as the page's terminal.
    let o = cabin_in(d)
        .args([
            "run",
            "-d",
            "--name",
            "web",
            "local/bbvm",
            "sh",
            "-c",
            "echo hello-from-the-logs; while sleep 1; do :; done",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let v = browser(&["container", &c.url(), "web", outs]);
    let shell = v["shell"].as_str().unwrap();
    assert!(
        shell.contains(&format!("shell-42 {}", &id[..12])),
        "{shell}"
    );
    let (rows, cols) = (
        v["size"][0].as_u64().unwrap(),
        v["size"][1].as_u64().unwrap(),
    );
    assert!(
        shell.contains(&format!("{rows} {cols}")),
        "stty size: {shell}"
    );
    assert!(
        v["logs"].as_str().unwrap().contains("hello-from-the-logs"),
        "{v:#}"
    );
    let r = c.api("POST", "/api/containers/web/stop");
    assert_eq!(r.status, 200, "{}", r.body);
    let e = websocket(
        c.port,
        "/ws/container/web/shell",
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .unwrap_err();
    assert_eq!(e.0, 409, "{e:?}");
    assert!(e.1.contains("is not running"), "{e:?}");
    let _ = cabin_in(d).args(["rm", "-f", "web"]).output();

    // The suspend button, then the start (Resume) button: the same guest goes on.
    let r = c.api("POST", "/api/vms/bb/suspend");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "suspended", "{}", r.body);
    let state = c.api("GET", "/api/state").json();
    assert_eq!(state["vms"][0]["status"], "suspended", "{state}");
    let r = c.api("POST", "/api/vms/bb/start");
    assert_eq!(r.status, 200, "{}", r.body);
    let state = c.api("GET", "/api/state").json();
    assert_eq!(state["vms"][0]["status"], "running", "{state}");
    let logs = vm_ok(d, &["logs", "bb"]);
    assert!(logs.contains("[cabin] bb suspended"), "{logs}");

    // The stop button: the VM goes down, its consoles say so.
    let r = c.api("POST", "/api/vms/bb/stop");
    assert_eq!(r.status, 200, "{}", r.body);
    let e = websocket(
        c.port,
        "/ws/vm/bb/screen",
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .unwrap_err();
    assert_eq!(e.0, 409, "{e:?}");
    assert!(e.1.contains("is not running"), "{e:?}");
    // `vm logs` still has what the guest wrote on its serial console.
    let logs = vm_ok(d, &["logs", "bb"]);
    assert!(logs.contains("console-test-vm ready"), "{logs}");
    assert!(logs.contains("serial-42"), "{logs}");
}
