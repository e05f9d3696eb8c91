//! Container networks with real traffic: published ports answer curl on the host,
//! containers reach the host and each other, and bridge mode leaves the host's network
//! as it found it, also on a host whose Docker engine drops forwarded traffic.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::dockerd::Dockerd;
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

/// `br-web` on the bridge, publishing `publish`, serving `body`; its address.
fn bridged_web_server(publish: &str, body: &str) -> String {
    let o = run_detached(
        &["--name", "br-web", "--network", "bridge", "-p", publish],
        &["sh", "-c", &web_server(body)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    inspect("br-web")["network"]["ip_address"]
        .as_str()
        .expect("a bridged container has an address")
        .to_string()
}

/// `sh -c SCRIPT` in a busybox container on the bridge, removed after.
fn bridged_shell(script: &str) -> std::process::Output {
    cabin()
        .args(["run", "--rm", "--network", "bridge", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["sh", "-c", script])
        .output()
        .unwrap()
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
    let ip = bridged_web_server(&format!("{port}:80"), "hello-bridge");
    assert!(ip.starts_with("10.89.0."), "{ip}");
    assert!(bridge_exists());
    // IPv4 only: neither the bridge nor its taps get a link-local address that comes
    // and goes with each VM (browsers on the host drop connections on such changes).
    if Path::new("/proc/sys/net/ipv6").exists() {
        let ports: Vec<String> = std::fs::read_dir("/sys/class/net/cabin0/brif")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!ports.is_empty());
        for i in ports.iter().map(String::as_str).chain(["cabin0"]) {
            let v = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{i}/disable_ipv6"))
                .unwrap();
            assert_eq!(v.trim(), "1", "IPv6 on {i}");
        }
    }
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
    let o = bridged_shell(&format!(
        "wget -q -O- http://br-web/ && wget -q -O- http://{ip}/"
    ));
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

    // A host that runs Docker: dockerd sets the iptables FORWARD policy to DROP, and
    // with br_netfilter traffic between two ports of cabin's bridge is forwarded
    // traffic too. Containers still reach each other, the outside (a network
    // namespace behind a veth, as a LAN would be) and are reached on published ports
    // from there; Docker's rules stay as they were, and cabin's go with its bridge.
    let _firewall = HostFirewall::save();
    // As on a host that does not route: dockerd turns forwarding on and, doing so,
    // sets the FORWARD policy to DROP.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
    let docker_dir = tempfile::tempdir().unwrap();
    let docker = Dockerd::start_with_its_firewall(docker_dir.path());
    let docker_rules = iptables_rules();
    assert!(
        docker_rules.contains(&"-P FORWARD DROP".to_string()),
        "Docker's policy is in place: {docker_rules:?}"
    );
    let outside = Outside::start("172.31.252");
    let pub_port = free_port();
    let ip = bridged_web_server(&format!("0.0.0.0:{pub_port}:80"), "hello-beside-docker");
    let o = bridged_shell(&format!(
        "timeout 10 wget -q -O- http://br-web/ && timeout 10 wget -q -O- http://{ip}/ && \
         timeout 10 wget -q -O- http://{}/",
        outside.server
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "hello-beside-docker\nhello-beside-docker\nhello-from-the-lan\n"
    );
    let o = outside.curl(&format!("http://{}:{pub_port}/", outside.host));
    assert_eq!(o.as_deref(), Some("hello-beside-docker\n"));
    let with_cabin = iptables_rules();
    assert!(
        with_cabin
            .iter()
            .any(|r| r == "-A CABIN-FORWARD -i cabin0 -j ACCEPT"),
        "{with_cabin:?}"
    );
    assert!(
        docker_rules.iter().all(|r| with_cabin.contains(r)),
        "Docker's rules are all still there: {with_cabin:?}"
    );
    cabin_ok(&["rm", "-f", "br-web"]);
    eventually("the bridge to go beside Docker", || !bridge_exists());
    assert_eq!(
        iptables_rules(),
        docker_rules,
        "cabin's rules went with its bridge, Docker's stayed"
    );
    drop(outside);
    drop(docker);
}

/// `iptables -S` of the filter table, one rule a line.
fn iptables_rules() -> Vec<String> {
    let o = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(str::to_string).collect()
}

/// The host's firewall as it was: on drop, the nftables tables made since (Docker's
/// iptables tables) are deleted, iptables' tables that were there are restored,
/// docker0 is removed and forwarding set back, so the machine is left as found.
struct HostFirewall {
    tables: Vec<String>,
    iptables: Vec<u8>,
    forwarding: String,
}

impl HostFirewall {
    fn save() -> HostFirewall {
        let saved = Command::new("iptables-save").output().unwrap();
        assert!(saved.status.success(), "{}", stderr(&saved));
        HostFirewall {
            tables: nft_tables(),
            iptables: saved.stdout,
            forwarding: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        }
    }
}

fn nft_tables() -> Vec<String> {
    let o = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    stdout(&o).lines().map(str::to_string).collect()
}

impl Drop for HostFirewall {
    fn drop(&mut self) {
        for t in nft_tables() {
            if !self.tables.contains(&t) {
                let args: Vec<&str> = t.split_whitespace().collect();
                if let ["table", family, name] = args[..] {
                    let _ = Command::new("nft")
                        .args(["delete", "table", family, name])
                        .output();
                }
            }
        }
        if !self.iptables.is_empty() {
            if let Ok(mut restore) = Command::new("iptables-restore")
                .stdin(std::process::Stdio::piped())
                .spawn()
            {
                if let Some(mut input) = restore.stdin.take() {
                    let _ = input.write_all(&self.iptables);
                }
                let _ = restore.wait();
            }
        }
        let _ = Command::new("ip").args(["link", "del", "docker0"]).output();
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.forwarding.trim());
    }
}

/// A network beyond the host: a namespace behind a veth pair (the host at PREFIX.1,
/// the namespace at PREFIX.2) with a web server in it.
struct Outside {
    host: String,
    server: String,
    /// The server's files, kept while it runs.
    _www: tempfile::TempDir,
    httpd: std::process::Child,
}

const OUTSIDE_NS: &str = "cabin-test-lan";

impl Outside {
    fn start(prefix: &str) -> Outside {
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
        };
        Outside::remove();
        ip(&["netns", "add", OUTSIDE_NS]);
        ip(&[
            "link",
            "add",
            "cabt-lan0",
            "type",
            "veth",
            "peer",
            "name",
            "cabt-lan1",
            "netns",
            OUTSIDE_NS,
        ]);
        let (host, server) = (format!("{prefix}.1"), format!("{prefix}.2"));
        ip(&["addr", "add", &format!("{host}/24"), "dev", "cabt-lan0"]);
        ip(&["link", "set", "cabt-lan0", "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", OUTSIDE_NS, "ip"];
            a.extend_from_slice(args);
            ip(&a);
        };
        inside(&["addr", "add", &format!("{server}/24"), "dev", "cabt-lan1"]);
        inside(&["link", "set", "cabt-lan1", "up"]);
        inside(&["link", "set", "lo", "up"]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "hello-from-the-lan\n").unwrap();
        let httpd = Command::new("ip")
            .args(["netns", "exec", OUTSIDE_NS, "busybox", "httpd", "-f", "-p"])
            .arg(format!("{server}:80"))
            .arg("-h")
            .arg(www.path())
            .spawn()
            .expect("busybox is installed (scripts/setup.sh)");
        let o = Outside {
            host,
            server,
            _www: www,
            httpd,
        };
        eventually("the LAN's web server", || {
            o.curl(&format!("http://{}/", o.server)).is_some()
        });
        o
    }

    /// The namespace and the veth pair, from this run or an earlier one.
    fn remove() {
        let _ = Command::new("ip")
            .args(["netns", "del", OUTSIDE_NS])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", "cabt-lan0"])
            .output();
    }

    /// `curl` from inside the namespace.
    fn curl(&self, url: &str) -> Option<String> {
        let o = Command::new("ip")
            .args([
                "netns", "exec", OUTSIDE_NS, "curl", "-s", "-f", "-m", "10", url,
            ])
            .output()
            .unwrap();
        o.status.success().then(|| stdout(&o))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.httpd.kill();
        let _ = self.httpd.wait();
        Outside::remove();
    }
}
