//! Container networks with real traffic: published ports answer curl on the host,
//! containers reach the host and each other, and bridge mode leaves the host's network
//! as it found it.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl -s URL`, with a deadline; None when nothing answered.
fn curl(url: &str) -> Option<String> {
    let o = Command::new("curl")
        .args(["-s", "-f", "-m", "10", url])
        .output()
        .expect("curl is installed (scripts/setup.sh)");
    o.status.success().then(|| stdout(&o))
}

/// A busybox web server serving `body` as /index.html.
fn web_server(body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn a_published_port_answers_curl_and_a_taken_port_is_refused() {
    let _c = Cleanup(&["net-web", "net-clash"]);
    let port = free_port();
    let publish = format!("{port}:80");
    let o = run_detached(
        &["--name", "net-web", "-p", &publish],
        &["sh", "-c", &web_server("hello-user-net")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut body = None;
    eventually("the published port to answer", || {
        body = curl(&url);
        body.is_some()
    });
    assert_eq!(body.unwrap(), "hello-user-net\n");
    assert!(ps_line("net-web")
        .unwrap()
        .contains(&format!("127.0.0.1:{port}->80/tcp")));
    let record = inspect("net-web");
    assert_eq!(record["network"]["mode"], "user");
    assert_eq!(
        record["network"]["ports"][0],
        format!("127.0.0.1:{port}->80/tcp")
    );

    // The same host port again: refused before any VM starts, the first one untouched.
    let o = run_detached(&["--name", "net-clash", "-p", &publish], &["true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("port {port} of 127.0.0.1 is already in use")),
        "{}",
        stderr(&o)
    );
    let o = run(&["-p", &publish], &["true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    assert_eq!(curl(&url).as_deref(), Some("hello-user-net\n"));

    // Bad specs are refused with the expected form.
    for bad in ["80:http", "99999:80", "8080:80/sctp"] {
        let o = run(&["-p", bad], &["true"]);
        assert_eq!(o.status.code(), Some(125), "{bad}");
        assert!(
            stderr(&o).contains("invalid port mapping"),
            "{bad}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_port_published_without_a_host_port_gets_a_free_one() {
    let _c = Cleanup(&["net-any"]);
    let o = run_detached(
        &["--name", "net-any", "-p", "80"],
        &["sh", "-c", &web_server("any-port")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let published = inspect("net-any")["network"]["ports"][0]
        .as_str()
        .unwrap()
        .to_string();
    let port: u16 = published
        .strip_prefix("127.0.0.1:")
        .and_then(|r| r.strip_suffix("->80/tcp"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{published}"));
    assert_ne!(port, 0);
    let mut body = None;
    eventually("the chosen port to answer", || {
        body = curl(&format!("http://127.0.0.1:{port}/"));
        body.is_some()
    });
    assert_eq!(body.unwrap(), "any-port\n");
}

#[test]
fn user_mode_containers_reach_the_host_as_host_docker_internal_and_get_its_dns_forwarder() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = [0u8; 1024];
        let n = s.read(&mut req).unwrap();
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-host");
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    // host.docker.internal is the host, as Docker's host-gateway names it: 10.0.2.2 on
    // QEMU's user-mode network, which reaches the host's loopback.
    let url = format!("http://host.docker.internal:{port}/probe");
    let o = run(
        &[],
        &[
            "sh",
            "-c",
            &format!(
                "cat /etc/resolv.conf; ip -4 -o addr show eth0; grep host.docker /etc/hosts; \
                 wget -q -O- {url}"
            ),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("10.0.2.2\thost.docker.internal host.containers.internal"),
        "{out}"
    );
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    assert!(out.contains("inet 10.0.2.15/24"), "{out}");
    assert!(out.ends_with("from-host"), "{out}");
    assert!(server.join().unwrap().starts_with("GET /probe"));
}

#[test]
fn network_none_leaves_only_the_loopback() {
    let o = run_booted(
        &["--network", "none"],
        &[
            "sh",
            "-c",
            "ip -o link | cut -d: -f2; ip -o addr show lo | grep -c 127.0.0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["lo", "1"]
    );
    let o = run(&["--network", "none", "-p", "8080:80"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--network none cannot publish ports"));
    let o = run(&["--network", "wifi"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("network wifi not found (use user, bridge, none"),
        "{}",
        stderr(&o)
    );
}

fn bridge_exists() -> bool {
    Path::new("/sys/class/net/cabin0").exists()
}

fn nft_table() -> Option<String> {
    let o = Command::new("nft")
        .args(["list", "table", "ip", "cabin"])
        .output()
        .ok()?;
    o.status.success().then(|| stdout(&o))
}

fn endpoints() -> usize {
    std::fs::read_dir("/run/cabin/bridge/endpoints")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One test for everything bridged: the bridge and its rules are host-wide, and the
/// end of the test checks that they are gone.
#[test]
fn bridged_containers_get_addresses_names_and_ports_and_leave_no_trace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let o = run(&["--network", "bridge"], &["true"]);
        assert!(stderr(&o).contains("--network bridge needs root"));
        return;
    }
    assert!(
        !bridge_exists(),
        "a bridge from an earlier run is still there"
    );
    let forwarding_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let _c = Cleanup(&["br-web", "br-db", "br-crash"]);
    let port = free_port();
    let o = run_detached(
        &[
            "--name",
            "br-web",
            "--network",
            "bridge",
            "-p",
            &format!("{port}:80"),
        ],
        &["sh", "-c", &web_server("hello-bridge")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ip = inspect("br-web")["network"]["ip_address"]
        .as_str()
        .expect("a bridged container has an address")
        .to_string();
    assert!(ip.starts_with("10.89.0."), "{ip}");
    assert!(bridge_exists());
    let mut body = None;
    eventually("the published port to answer", || {
        body = curl(&format!("http://127.0.0.1:{port}/"));
        body.is_some()
    });
    assert_eq!(body.unwrap(), "hello-bridge\n");
    assert_eq!(
        curl(&format!("http://{ip}/")).as_deref(),
        Some("hello-bridge\n"),
        "the container's own address answers from the host"
    );
    assert!(nft_table()
        .unwrap()
        .contains(&format!("dport {port} dnat to {ip}:80")));

    // A second container reaches the first by name and by address.
    let o = cabin()
        .args(["run", "--rm", "--network", "bridge", "--rootfs"])
        .arg(busybox_rootfs())
        .args([
            "sh",
            "-c",
            &format!("wget -q -O- http://br-web/ && wget -q -O- http://{ip}/"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello-bridge\nhello-bridge\n");

    // A container that starts later shows up in the first one's /etc/hosts.
    let o = run_detached(
        &["--name", "br-db", "--network", "bridge"],
        &["sleep", "1000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let db_ip = inspect("br-db")["network"]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(db_ip, ip);
    eventually("br-web to learn br-db's name", || {
        cabin_ok(&["exec", "br-web", "cat", "/etc/hosts"]).contains(&format!("{db_ip}\tbr-db"))
    });
    // The host, on the bridge, keeps its name through that rewrite.
    let gateway = inspect("br-web")["network"]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cabin_ok(&["exec", "br-web", "cat", "/etc/hosts"])
            .contains(&format!("{gateway}\thost.docker.internal")),
        "host.docker.internal is the bridge's gateway {gateway}"
    );
    assert!(
        cabin_ok(&["exec", "br-web", "ping", "-c", "1", "-W", "5", "br-db"])
            .contains("1 packets received")
    );

    // A container whose supervisor is killed leaves an endpoint nobody holds; the next
    // change on the bridge drops it with its rules.
    let o = run_detached(
        &[
            "--name",
            "br-crash",
            "--network",
            "bridge",
            "-p",
            &format!("{}:80", free_port()),
        ],
        &["sleep", "1000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let crash_ip = inspect("br-crash")["network"]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let supervisor = inspect("br-crash")["supervisor_pid"].as_u64().unwrap() as i32;
    // SAFETY: SIGKILL to the supervisor this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    eventually("the supervisor to die", || !pid_alive(supervisor));
    cabin_ok(&["rm", "-f", "br-db"]);
    let table = nft_table().unwrap();
    assert!(
        !table.contains(&crash_ip),
        "dead endpoint's rules stay: {table}"
    );
    assert!(!table.contains(&db_ip), "{table}");
    assert!(table.contains(&ip), "{table}");

    // The last one out takes the bridge, the rules and the forwarding setting with it.
    cabin_ok(&["rm", "-f", "br-web", "br-crash"]);
    eventually("the bridge to go", || !bridge_exists());
    assert!(nft_table().is_none(), "the nftables table is gone");
    assert_eq!(endpoints(), 0);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forwarding_before
    );

    // Every bridged container's owner killed: the bridge outlives them until the next
    // container start, whatever its network.
    let o = run_detached(
        &["--name", "br-crash", "--network", "bridge"],
        &["sleep", "1000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let supervisor = inspect("br-crash")["supervisor_pid"].as_u64().unwrap() as i32;
    // SAFETY: SIGKILL to the supervisor this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    eventually("the supervisor to die", || !pid_alive(supervisor));
    let o = run(&[], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("the bridge to go after the crash", || !bridge_exists());
    assert!(nft_table().is_none());
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forwarding_before
    );
}
