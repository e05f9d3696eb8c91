//! `cabin serve`: Lume's HTTP API, tested over real TCP against a real server process
//! with a data directory of its own, as Lume's clients use it: every route's status,
//! content type and body shape, Lume's error messages, the bugs of Lume's server that
//! cabin's does not have, a VM run and stopped under TCG, and pylume (Lume's Python
//! client) driving it.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::http::{http, Resp};
use common::*;
use serde_json::{json, Value};

/// A `cabin serve` process; stops the VMs it started, and itself, when dropped.
struct Server {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    child: std::process::Child,
}

impl Server {
    fn start(data: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_on(data, env, 0)
    }

    fn start_on(data: &Path, env: &[(&str, &str)], port: u16) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let log = data.join(format!("serve-{port}.log"));
        let mut cmd = cabin_in(data);
        cmd.envs(env.iter().copied())
            .args(["serve", "--port", &port.to_string()])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ));
        let mut child = spawn_for_test_process(cmd).unwrap();
        let start = Instant::now();
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("INFO: Server started port=").nth(1) {
                break rest.lines().next().unwrap().trim().parse().unwrap();
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("cabin serve exited ({st}): {text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no Server started line: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Server {
            port,
            data: data.to_path_buf(),
            log,
            child,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        http(self.port, method, path, body)
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: &str) -> Resp {
        self.call("POST", path, Some(body))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // No VM outlives the test, passed or failed.
        if let Ok(o) = cabin_in(&self.data)
            .args(["vm", "ls", "-f", "json"])
            .output()
        {
            let list: Value = serde_json::from_slice(&o.stdout).unwrap_or(json!([]));
            for vm in list.as_array().into_iter().flatten() {
                if vm["status"] == "running" {
                    let _ = cabin_in(&self.data)
                        .args(["vm", "stop", vm["name"].as_str().unwrap()])
                        .output();
                }
            }
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

const VM_KEYS: &[&str] = &[
    "name",
    "os",
    "cpuCount",
    "memorySize",
    "diskSize",
    "display",
    "status",
    "provisioningOperation",
    "vncUrl",
    "ipAddress",
    "sshAvailable",
    "locationName",
    "sharedDirectories",
    "networkMode",
    "downloadProgress",
    // cabin's own: why the last start failed.
    "startError",
];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn create_body(name: &str) -> String {
    json!({"name": name, "os": "linux", "cpu": 1, "memory": "512MB", "diskSize": "10GB", "display": "1024x768"})
        .to_string()
}

#[test]
fn every_route_answers_with_lumes_shapes_and_status_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(&data, &[]);

    // Lume's ready line, on 127.0.0.1 only.
    let line = srv
        .log_text()
        .lines()
        .find(|l| l.contains("Server started"))
        .unwrap()
        .to_string();
    assert!(
        line.starts_with("[20") && line.contains("Z] INFO: Server started port="),
        "{line}"
    );
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listening: Vec<&str> = tcp
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{:04X}", srv.port))
        })
        .collect();
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert!(
        listening[0]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .starts_with("0100007F:"),
        "bound to 127.0.0.1: {listening:?}"
    );

    let r = srv.get("/health");
    assert_eq!(
        (r.status, r.content_type.as_deref(), r.body.as_str()),
        (200, Some("text/plain"), "ok")
    );
    let r = srv.get("/lume/vms");
    assert_eq!(
        (r.status, r.content_type.as_deref(), r.body.as_str()),
        (200, Some("application/json"), "[]")
    );

    // Create: 202, Lume's body exactly.
    let r = srv.post("/lume/vms", &create_body("web"));
    assert_eq!(r.status, 202);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        r.body,
        r#"{"message":"VM creation started","name":"web","status":"provisioning"}"#
    );

    // List and get: VMDetails with every key, compact.
    let r = srv.get("/lume/vms");
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(": ") && !r.body.contains('\n'), "compact");
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let vm = &list[0];
    assert_eq!(keys(vm), sorted(VM_KEYS));
    assert_eq!(vm["name"], "web");
    assert_eq!(vm["os"], "linux");
    assert_eq!(vm["cpuCount"], 1);
    assert_eq!(vm["memorySize"], 512u64 << 20);
    assert_eq!(vm["diskSize"]["total"], 10u64 << 30);
    assert!(vm["diskSize"]["allocated"].as_u64().unwrap() < 1 << 20);
    assert_eq!(vm["display"], "1024x768");
    assert_eq!(vm["status"], "stopped");
    assert_eq!(vm["locationName"], "home");
    assert_eq!(vm["networkMode"], "nat");
    for null in [
        "vncUrl",
        "ipAddress",
        "sharedDirectories",
        "provisioningOperation",
        "downloadProgress",
        "startError",
    ] {
        assert!(vm[null].is_null(), "{null}: {vm}");
    }
    let one = srv.get("/lume/vms/web");
    assert_eq!(one.status, 200);
    assert_eq!(&one.json(), vm);

    // The command line sees the API's VM, and the API the command line's.
    let o = cabin_in(&data)
        .args(["vm", "get", "web", "-f", "json"])
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(&cli[0], vm);
    let o = cabin_in(&data)
        .args([
            "vm",
            "create",
            "fromcli",
            "--memory",
            "256MB",
            "--disk-size",
            "10GB",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        srv.get("/lume/vms/fromcli").json()["memorySize"],
        256u64 << 20
    );

    // Storage locations, and ?storage= on the list (a 404 in Lume).
    let fast = tmp.path().join("fast");
    let body = json!({"name": "fast", "path": fast}).to_string();
    let r = srv.post("/lume/config/locations", &body);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"message": "Location added successfully", "name": "fast", "path": fast})
    );
    assert!(
        r.body.contains(r#""path":"\/"#),
        "slashes escaped: {}",
        r.body
    );
    let mut c: Value = serde_json::from_str(&create_body("quick")).unwrap();
    c["storage"] = json!("fast");
    assert_eq!(srv.post("/lume/vms", &c.to_string()).status, 202);
    assert!(fast.join("quick/config.json").is_file());
    let names = |r: Resp| -> Vec<String> {
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(srv.get("/lume/vms")), ["fromcli", "quick", "web"]);
    assert_eq!(names(srv.get("/lume/vms?storage=fast")), ["quick"]);
    assert_eq!(names(srv.get("/lume/vms/?storage=fast")), ["quick"]);
    assert_eq!(names(srv.get("/lume/vms?storage=home")), ["fromcli", "web"]);
    let direct = format!(
        "/lume/vms?storage={}",
        fast.display().to_string().replace('/', "%2F")
    );
    assert_eq!(names(srv.get(&direct)), ["quick"]);
    assert_eq!(
        srv.get("/lume/vms?storage=nowhere").error(),
        "Storage location not found: nowhere"
    );
    assert_eq!(
        srv.get("/lume/vms/quick?storage=fast").json()["locationName"],
        "fast"
    );
    assert_eq!(
        srv.get("/lume/vms/quick?storage=home").error(),
        "Virtual machine not found: quick"
    );
    let r = srv.get("/lume/config/locations");
    assert_eq!(
        r.json(),
        json!([{"name": "fast", "path": fast}, {"name": "home", "path": data.join("vms")}])
    );
    let r = srv.post("/lume/config/locations/default/fast", "");
    assert_eq!(
        r.json(),
        json!({"message": "Default location set successfully"})
    );
    assert_eq!(
        srv.call("DELETE", "/lume/config/locations/fast", None)
            .error(),
        "Cannot remove the default storage location: fast"
    );
    srv.post("/lume/config/locations/default/home", "");
    assert_eq!(
        srv.call("DELETE", "/lume/config/locations/nope", None)
            .error(),
        "Storage location not found: nope"
    );
    assert_eq!(
        srv.post("/lume/config/locations/default/nope", "").error(),
        "Storage location not found: nope"
    );

    // Config.
    let r = srv.get("/lume/config");
    assert_eq!(r.status, 200);
    let cfg = r.json();
    assert_eq!(
        keys(&cfg),
        sorted(&[
            "vmLocations",
            "defaultLocationName",
            "cacheDirectory",
            "cachingEnabled",
            "registry",
            "telemetryEnabled"
        ])
    );
    assert_eq!(cfg["defaultLocationName"], "home");
    assert_eq!(cfg["cachingEnabled"], false);
    assert_eq!(
        cfg["registry"],
        json!({"type": "ghcr", "ghcr": {"registry": "ghcr.io", "organization": "trycua"}})
    );
    let cache = tmp.path().join("cache");
    let r = srv.post(
        "/lume/config",
        &json!({"cacheDirectory": cache, "cachingEnabled": true, "homeDirectory": null})
            .to_string(),
    );
    assert_eq!(
        r.json(),
        json!({"message": "Configuration updated successfully"})
    );
    let cfg = srv.get("/lume/config").json();
    assert_eq!(
        (cfg["cachingEnabled"].clone(), cfg["cacheDirectory"].clone()),
        (json!(true), json!(cache))
    );
    assert!(srv
        .post("/lume/config", r#"{"homeDirectory":"relative/dir"}"#)
        .error()
        .contains("absolute path"));

    // Set (PATCH): Lume's message; pylume's snake_case disk_size is ignored, as by Lume.
    let r = srv.call(
        "PATCH",
        "/lume/vms/web",
        Some(r#"{"cpu":2,"memory":"1GB","diskSize":"12GB","display":"800x600","storage":null}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"message":"VM settings updated successfully"}"#);
    let vm = srv.get("/lume/vms/web").json();
    assert_eq!(
        (
            &vm["cpuCount"],
            &vm["memorySize"],
            &vm["diskSize"]["total"],
            &vm["display"]
        ),
        (
            &json!(2),
            &json!(1u64 << 30),
            &json!(12u64 << 30),
            &json!("800x600")
        )
    );
    let r = srv.call("PATCH", "/lume/vms/web", Some(r#"{"cpu":4,"dryRun":true}"#));
    assert_eq!(r.status, 200);
    assert_eq!(
        srv.get("/lume/vms/web").json()["cpuCount"],
        2,
        "a dry run changes nothing"
    );
    let r = srv.call("PATCH", "/lume/vms/web", Some(r#"{"disk_size":"5GB"}"#));
    assert_eq!(r.status, 200);
    assert!(srv
        .call("PATCH", "/lume/vms/web", Some(r#"{"diskSize":"10GB"}"#))
        .error()
        .starts_with("Cannot shrink disk: web is 12884901888 bytes"));
    assert_eq!(
        srv.get("/lume/vms/web").json()["diskSize"]["total"],
        12u64 << 30
    );

    // Clone, delete.
    let r = srv.post("/lume/vms/clone", r#"{"name":"web","newName":"web2"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"message":"VM cloned successfully","source":"web","destination":"web2"}"#
    );
    assert_eq!(srv.get("/lume/vms/web2").json()["cpuCount"], 2);
    assert_eq!(
        srv.post("/lume/vms/clone", r#"{"name":"web","newName":"web2"}"#)
            .error(),
        "Virtual machine already exists with name: web2"
    );
    let r = srv.post(
        "/lume/vms/clone",
        r#"{"name":"web","newName":"web3","sourceLocation":"home","destLocation":"fast"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(srv.get("/lume/vms/web3").json()["locationName"], "fast");
    let r = srv.call("DELETE", "/lume/vms/web2", None);
    assert_eq!(
        (r.status, r.content_type.as_deref(), r.body.as_str()),
        (200, Some("application/json"), "")
    );
    let r = srv.call("DELETE", "/lume/vms/web3?storage=fast", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        srv.call("DELETE", "/lume/vms/web2", None).error(),
        "Virtual machine not found: web2"
    );

    // Stop of a stopped VM; setup; what cabin lacks answers in Lume's shapes.
    assert_eq!(
        srv.post("/lume/vms/web/stop", "").error(),
        "Virtual machine is not running: web"
    );
    assert_eq!(
        srv.post("/lume/vms/web/setup", "").error(),
        "Request body is required"
    );
    assert_eq!(
        srv.post("/lume/vms/web/setup", "{}").error(),
        "Either configPath or configYaml is required"
    );
    assert!(srv
        .post("/lume/vms/web/setup", r#"{"configPath":"/tmp/x.yml"}"#)
        .error()
        .contains("does not apply to linux VMs"));
    // Image routes (tests/vm_images.rs has the transfers): a registry that is not
    // there fails a synchronous pull with the reason; background ones answer 202.
    let pull = r#"{"image":"ubuntu-noble-vanilla:latest","name":null,"registry":"127.0.0.1:1","organization":"trycua"}"#;
    let m = srv.post("/lume/pull", pull).error();
    assert!(m.contains("127.0.0.1:1"), "{m}");
    for route in ["/lume/pull", "/lume/pull/start"] {
        assert_eq!(
            srv.post(route, r#"{"name":"x"}"#).error(),
            "Invalid request body"
        );
    }
    let r = srv.post("/lume/pull/start", pull);
    assert_eq!(r.status, 202, "{r:?}");
    let r = srv.post(
        "/lume/vms/push",
        r#"{"name":"web","imageName":"web","tags":["latest"],"registry":"127.0.0.1:1"}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        srv.post("/lume/vms/push", "{}").error(),
        "Invalid request body"
    );
    let r = srv.post("/lume/prune", "");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"message":"Successfully removed cached images"}"#)
    );
    for path in ["/lume/images", "/lume/images?organization=trycua"] {
        let r = srv.get(path);
        assert_eq!((r.status, r.body.as_str()), (200, "[]"), "{path}");
    }
    assert!(srv
        .get("/lume/ipsw")
        .error()
        .contains("do not apply on Linux"));

    // Host status (snake_case keys).
    let h = srv.get("/lume/host/status").json();
    assert_eq!(
        keys(&h),
        sorted(&[
            "status",
            "vm_count",
            "max_vms",
            "available_slots",
            "version"
        ])
    );
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["vm_count"], 0);
    assert!(h["max_vms"].as_u64().unwrap() >= 1);
    assert_eq!(h["available_slots"], h["max_vms"]);
    assert!(h["version"].is_string());

    // Logs: the server's own lines, by type, the last N (a 404 in Lume: ?type= broke it).
    let l = srv.get("/lume/logs").json();
    assert_eq!(keys(&l), sorted(&["info", "error"]));
    assert!(l["info"]
        .as_str()
        .unwrap()
        .contains("INFO: Server started port="));
    assert!(l["error"]
        .as_str()
        .unwrap()
        .contains("ERROR: Request failed method=GET path=/lume/ipsw status=400"));
    let l = srv.get("/lume/logs?type=info&lines=2").json();
    assert_eq!(keys(&l), ["info"]);
    assert_eq!(l["info"].as_str().unwrap().lines().count(), 2);
    let l = srv.get("/lume/logs?type=error").json();
    assert_eq!(keys(&l), ["error"]);

    // An explicit --port, and one already taken.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let second = Server::start_on(&data, &[], port);
    assert_eq!(second.port, port);
    assert_eq!(second.get("/lume/vms").json().as_array().unwrap().len(), 3);
    let o = cabin_in(&data)
        .args(["serve", "--port", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("Port {port} is already in use by another process")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_requests_get_lumes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(&data, &[]);

    // Undecodable bodies, wrong types, missing fields.
    for (method, path, body) in [
        ("POST", "/lume/vms", "{not json"),
        ("POST", "/lume/vms", ""),
        (
            "POST",
            "/lume/vms",
            r#"{"name":"x","os":"linux","cpu":"two","memory":"1GB","diskSize":"10GB","display":"1024x768"}"#,
        ),
        (
            "POST",
            "/lume/vms",
            r#"{"name":"x","os":"linux","cpu":1,"memory":"1GB","diskSize":"10GB"}"#,
        ),
        (
            "POST",
            "/lume/vms",
            r#"{"name":null,"os":"linux","cpu":1,"memory":"1GB","diskSize":"10GB","display":"1024x768"}"#,
        ),
        (
            "POST",
            "/lume/vms",
            r#"{"name":"x","os":"linux","cpu":1,"memory":8,"diskSize":"10GB","display":"1024x768"}"#,
        ),
        ("POST", "/lume/vms", "[]"),
        ("POST", "/lume/vms/clone", r#"{"name":"a"}"#),
        ("PATCH", "/lume/vms/x", r#"{"cpu":"many"}"#),
        ("PATCH", "/lume/vms/x", ""),
        ("POST", "/lume/vms/x/run", r#"{"noDisplay":"yes"}"#),
        (
            "POST",
            "/lume/vms/x/run",
            r#"{"sharedDirectories":[{"readOnly":true}]}"#,
        ),
        ("POST", "/lume/config", "nope"),
        ("POST", "/lume/config/locations", r#"{"name":"x"}"#),
    ] {
        let r = srv.call(method, path, Some(body));
        assert_eq!(r.status, 400, "{method} {path} {body}: {r:?}");
        assert_eq!(
            r.body, r#"{"message":"Invalid request body"}"#,
            "{method} {path} {body}"
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }

    // Unknown routes and methods: 404 text/plain. Empty parameters: 400 text/plain.
    // (`/` is the web console's, tests/console.rs.)
    for (method, path) in [
        ("GET", "/lume/nope"),
        ("GET", "/nope"),
        ("PUT", "/lume/vms/x"),
        ("GET", "/lume/vms/x/run"),
        ("POST", "/lume/vms/x/update"),
        ("DELETE", "/lume/vms"),
        ("GET", "/lume/host"),
    ] {
        let r = srv.call(method, path, None);
        assert_eq!(
            (r.status, r.content_type.as_deref(), r.body.as_str()),
            (404, Some("text/plain"), "Not found"),
            "{method} {path}"
        );
    }
    for (method, path, text) in [
        ("POST", "/lume/vms//run", "Missing VM name"),
        ("POST", "/lume/vms//stop", "Missing VM name"),
        (
            "DELETE",
            "/lume/config/locations//",
            "Missing location name",
        ),
    ] {
        let r = srv.call(method, path, None);
        assert_eq!(
            (r.status, r.content_type.as_deref(), r.body.as_str()),
            (400, Some("text/plain"), text),
            "{method} {path}"
        );
    }

    // Query strings never break routing (they did in Lume).
    for path in [
        "/lume/vms?storage=home",
        "/lume/vms/?storage=home",
        "/lume/images?organization=trycua",
        "/lume/logs?type=info&lines=5",
        "/lume/host/status?x=1",
        "/health?probe=1",
    ] {
        assert_eq!(srv.get(path).status, 200, "{path}");
    }

    // A missing VM is a 400 with Lume's message, on every route that names one.
    for (method, path, body) in [
        ("GET", "/lume/vms/ghost", None),
        ("GET", "/lume/vms/ghost?storage=home", None),
        ("DELETE", "/lume/vms/ghost", None),
        ("PATCH", "/lume/vms/ghost", Some(r#"{"cpu":2}"#)),
        ("POST", "/lume/vms/ghost/run", None),
        (
            "POST",
            "/lume/vms/ghost/run",
            Some(r#"{"noDisplay":true,"sharedDirectories":[]}"#),
        ),
        ("POST", "/lume/vms/ghost/stop", None),
        (
            "POST",
            "/lume/vms/ghost/stop",
            Some(r#"{"storage":"home"}"#),
        ),
        (
            "POST",
            "/lume/vms/ghost/setup",
            Some(r#"{"configYaml":"x: 1"}"#),
        ),
        (
            "POST",
            "/lume/vms/clone",
            Some(r#"{"name":"ghost","newName":"g2"}"#),
        ),
    ] {
        let r = srv.call(method, path, body);
        assert_eq!(
            r.error(),
            "Virtual machine not found: ghost",
            "{method} {path}"
        );
    }
    assert_eq!(
        srv.get("/lume/vms/ubuntu:latest").error(),
        "Virtual machine not found: ubuntu_latest",
        "name:tag is Lume's name_tag"
    );

    // Creates: nulls and unknown keys accepted; bad values refused with the reason.
    let r = srv.post(
        "/lume/vms",
        r#"{"name":"one","os":"linux","cpu":1,"memory":"512MB","diskSize":"10GB","display":"1024x768","ipsw":null,"storage":null,"unattended":null,"network":null,"extra":{"a":1}}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        srv.post("/lume/vms", &create_body("one")).error(),
        "Virtual machine already exists with name: one"
    );
    let bad = |field: &str, value: Value| {
        let mut b: Value = serde_json::from_str(&create_body("two")).unwrap();
        b[field] = value;
        srv.post("/lume/vms", &b.to_string()).error()
    };
    assert_eq!(bad("os", json!("windows")), "Unsupported OS type");
    assert!(bad("os", json!("macOS")).contains("Apple hardware"));
    assert!(bad("memory", json!("lots")).starts_with("invalid size \"lots\""));
    assert_eq!(
        bad("diskSize", json!("1GB")),
        "disk size must be at least 10GB for linux VMs"
    );
    assert!(bad("display", json!("huge")).starts_with("invalid display"));
    assert!(bad("cpu", json!(0)).starts_with("invalid CPU count 0"));
    assert!(bad("name", json!("../evil")).starts_with("Invalid VM name"));
    assert!(bad("network", json!("host")).starts_with("Invalid network mode: host"));
    assert!(bad("ipsw", json!("latest")).contains("macOS VMs only"));
    // cabin's own field: a VM made from an image in cabin's store.
    assert!(bad("image", json!("nope:1")).starts_with("image not found: nope:1"));
    assert_eq!(
        bad("storage", json!("nowhere")),
        "Storage location not found: nowhere"
    );
    assert!(
        !data.join("vms/two").exists(),
        "nothing left of refused creates"
    );
    assert_eq!(srv.get("/lume/vms").json().as_array().unwrap().len(), 1);

    // Run options checked before anything starts.
    for (body, message) in [
        (
            r#"{"sharedDirectories":[{"hostPath":"/nonexistent/dir","readOnly":false}]}"#,
            "Host path does not exist or is not a directory: /nonexistent/dir",
        ),
        (
            r#"{"vnc":"sometimes"}"#,
            "Invalid VNC policy: sometimes: use enabled or disabled",
        ),
        (
            r#"{"network":"bridged"}"#,
            "Network mode bridged is not supported yet for VMs: use nat",
        ),
        (
            r#"{"recoveryMode":true}"#,
            "Recovery mode applies to macOS VMs only",
        ),
    ] {
        assert_eq!(
            srv.post("/lume/vms/one/run", body).error(),
            message,
            "{body}"
        );
    }
    assert_eq!(srv.get("/lume/vms/one").json()["status"], "stopped");
    assert!(srv.get("/lume/vms/one").json()["startError"].is_null());

    // Lume ignores a stop body it cannot read.
    assert_eq!(
        srv.post("/lume/vms/one/stop", "{garbage").error(),
        "Virtual machine is not running: one"
    );
}

#[test]
fn a_vm_runs_and_stops_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(&data, &[("CABIN_ACCEL", "tcg")]);
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    assert_eq!(srv.post("/lume/vms", &create_body("lab")).status, 202);

    // What pylume and Lumier send: a 202 once the VM runs.
    let body = json!({"noDisplay": true, "sharedDirectories": [{"hostPath": shared, "readOnly": true}], "storage": null, "recoveryMode": false, "cpu": 4});
    let started = Instant::now();
    let r = srv.post("/lume/vms/lab/run", &body.to_string());
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"message":"VM start initiated","name":"lab","status":"pending"}"#
    );
    eprintln!("run answered in {:?}", started.elapsed());

    let r = srv.get("/lume/vms/lab");
    let vm = r.json();
    assert_eq!(vm["status"], "running", "{vm}");
    let url = vm["vncUrl"].as_str().unwrap().to_string();
    assert!(r.body.contains(r#""vncUrl":"vnc:\/\/:"#), "{}", r.body);
    // vnc://:PASSWORD@127.0.0.1:PORT, as cua-sandbox parses it; 8 random letters and
    // digits (QEMU reads no more than 8), nothing a URL or Lumier's sed would trip on.
    let rest = url.strip_prefix("vnc://:").unwrap();
    let (password, hostport) = rest.split_once('@').unwrap();
    assert_eq!(password.len(), 8, "{url}");
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()), "{url}");
    let (host, port) = hostport.split_once(':').unwrap();
    assert_eq!(host, "127.0.0.1");
    let mut vnc = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    vnc.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut banner = [0u8; 12];
    vnc.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    drop(vnc);
    let session: Value =
        serde_json::from_slice(&std::fs::read(data.join("vms/lab/sessions.json")).unwrap())
            .unwrap();
    assert_eq!(session["sharedDirectories"][0]["readOnly"], true);
    assert_eq!(srv.get("/lume/host/status").json()["vm_count"], 1);
    let o = cabin_in(&data)
        .args(["vm", "get", "lab", "-f", "json"])
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        cli[0]["vncUrl"],
        url.as_str(),
        "the CLI sees the API's VM run"
    );

    // A running VM is not run twice, deleted, changed or cloned.
    assert_eq!(
        srv.post("/lume/vms/lab/run", "").error(),
        "Virtual machine already running: lab"
    );
    assert_eq!(
        srv.call("DELETE", "/lume/vms/lab", None).error(),
        "Virtual machine already running: lab"
    );
    assert_eq!(
        srv.call("PATCH", "/lume/vms/lab", Some(r#"{"cpu":2}"#))
            .error(),
        "Virtual machine already running: lab"
    );
    assert_eq!(
        srv.post("/lume/vms/clone", r#"{"name":"lab","newName":"lab2"}"#)
            .error(),
        "Virtual machine already running: lab"
    );

    // Stop answers once the VM is down (no extra sleep; the firmware ignores the ACPI
    // button, so this is the runner's power-off grace).
    let started = Instant::now();
    let r = srv.post("/lume/vms/lab/stop", "");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, r#"{"message":"VM stopped successfully"}"#);
    assert!(took < Duration::from_secs(12), "stop took {took:?}");
    eprintln!("stop answered in {took:?}");
    let vm = srv.get("/lume/vms/lab").json();
    assert_eq!(vm["status"], "stopped");
    assert!(vm["vncUrl"].is_null());
    assert!(vm["startError"].is_null());
    assert_eq!(srv.get("/lume/host/status").json()["vm_count"], 0);

    // VNC disabled: running, no URL.
    let r = srv.post(
        "/lume/vms/lab/run",
        r#"{"vnc":"disabled","storage":"home"}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    let vm = srv.get("/lume/vms/lab").json();
    assert_eq!(vm["status"], "running", "{vm}");
    assert!(vm["vncUrl"].is_null(), "{vm}");
    assert_eq!(
        srv.post("/lume/vms/lab/stop", r#"{"storage":"home"}"#)
            .status,
        200
    );
    assert_eq!(srv.get("/lume/vms/lab").json()["status"], "stopped");
    assert_eq!(srv.call("DELETE", "/lume/vms/lab", None).status, 200);
    assert_eq!(srv.get("/lume/vms").body, "[]");
}

/// A QEMU that fails at once, and one that fails after `run` has answered.
fn fake_qemu(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn failed_starts_are_reported_not_hidden_behind_a_202() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Fails before the VM runs: the run request says why.
    let missing = Server::start(&data, &[("CABIN_QEMU", "/nonexistent/qemu")]);
    assert_eq!(missing.post("/lume/vms", &create_body("lab")).status, 202);
    let m = missing.post("/lume/vms/lab/run", "").error();
    assert_eq!(
        m,
        "CABIN_QEMU points to /nonexistent/qemu, which does not exist"
    );
    let vm = missing.get("/lume/vms/lab").json();
    assert_eq!(vm["status"], "stopped");
    assert_eq!(vm["startError"], m.as_str());
    drop(missing);

    // Fails after the server stopped waiting (10 s): 202, then the failure shows in
    // the VM's details.
    let slow = fake_qemu(
        tmp.path(),
        "slow-qemu",
        "sleep 12; echo 'qemu: could not load firmware' >&2; exit 1",
    );
    let srv = Server::start(&data, &[("CABIN_QEMU", slow.to_str().unwrap())]);
    let r = srv.post("/lume/vms/lab/run", "");
    assert_eq!(r.status, 202, "{r:?}");
    let vm = srv.get("/lume/vms/lab").json();
    assert!(
        vm["startError"].is_null(),
        "the old error went with the new start: {vm}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let vm = loop {
        let vm = srv.get("/lume/vms/lab").json();
        if !vm["startError"].is_null() {
            break vm;
        }
        assert!(Instant::now() < deadline, "no startError: {vm}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(vm["status"], "stopped");
    let e = vm["startError"].as_str().unwrap();
    assert!(
        e.starts_with("QEMU exited") && e.contains("could not load firmware"),
        "{e}"
    );
    let o = cabin_in(&data)
        .args(["vm", "get", "lab", "-f", "json"])
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cli[0]["startError"], e, "the CLI sees it too");
}

const PYLUME_SCRIPT: &str = r#"
import asyncio, sys
from pylume import PyLume, VMConfig, VMRunOpts, VMUpdateOpts, SharedDirectory, LumeConfigError

port, shared = int(sys.argv[1]), sys.argv[2]

async def main():
    async with PyLume(port=port, use_existing_server=True, host="127.0.0.1") as lume:
        await lume.create_vm(VMConfig.model_validate({"name": "py", "os": "linux", "cpu": 1,
            "memory": "512MB", "diskSize": "10GB", "display": "1024x768"}))
        vms = await lume.list_vms()
        assert [v.name for v in vms] == ["py"], vms
        vm = await lume.get_vm("py")
        assert (vm.status, vm.os, vm.cpu_count, vm.memory_size, vm.disk_size.total) == \
            ("stopped", "linux", 1, 512 << 20, 10 << 30), vm
        await lume.update_vm("py", VMUpdateOpts(cpu=2, memory="1GB"))
        vm = await lume.get_vm("py")
        assert (vm.cpu, vm.memory) == (2, "1GB"), vm
        await lume.run_vm("py", VMRunOpts(no_display=True,
            shared_directories=[SharedDirectory(host_path=shared, read_only=True)]))
        vm = await lume.get_vm("py")
        assert vm.status == "running" and vm.vnc_url.startswith("vnc://:"), vm
        print("running", vm.vnc_url)
        await lume.stop_vm("py")
        vm = await lume.get_vm("py")
        assert vm.status == "stopped" and vm.vnc_url is None, vm
        await lume.clone_vm("py", "py2")
        assert sorted(v.name for v in await lume.list_vms()) == ["py", "py2"]
        await lume.delete_vm("py2")
        await lume.delete_vm("py")
        assert await lume.list_vms() == []
        try:
            await lume.get_vm("ghost")
            raise AssertionError("no error for a missing VM")
        except LumeConfigError as e:
            assert "Virtual machine not found: ghost" in str(e), e
        assert len(await lume.get_images()) == 0
    print("PYLUME OK")

asyncio.run(main())
"#;

#[test]
fn pylume_drives_cabin_serve() {
    let python = match python_with("pylume==0.2.1", "pylume") {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED pylume_drives_cabin_serve: pylume cannot be installed: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(&data, &[("CABIN_ACCEL", "tcg")]);
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let script = tmp.path().join("pylume_test.py");
    std::fs::write(&script, PYLUME_SCRIPT).unwrap();
    let o = std::process::Command::new("timeout")
        .arg("300")
        .arg(&python)
        .arg(&script)
        .arg(srv.port.to_string())
        .arg(&shared)
        .output()
        .unwrap();
    assert!(
        o.status.success() && stdout(&o).contains("PYLUME OK"),
        "pylume: {}\n{}\nserver log:\n{}",
        stdout(&o),
        stderr(&o),
        srv.log_text()
    );
    eprintln!(
        "{}",
        stdout(&o)
            .lines()
            .find(|l| l.starts_with("running"))
            .unwrap_or("")
    );
}

#[test]
fn vm_images_are_pushed_pulled_and_cached_through_the_api() {
    use common::vm_disks::*;
    let tmp = tempfile::tempdir().unwrap();
    let reg = start_registry(&tmp.path().join("reg"), |_| String::new());
    let data = tmp.path().join("data");
    let srv = Server::start(&data, &[]);
    let src = make_vm(&data, "src", 640 << 20);
    // 40 chunks of distinct data among holes.
    for i in 0..40u64 {
        write_at(&src.join("disk.img"), i * (16 << 20), &pattern(i, 1 << 20));
    }

    // Push in the background: 202 at once, the image in the registry soon after.
    let r = srv.post(
        "/lume/vms/push",
        &json!({"name": "src", "imageName": "api-img", "tags": ["v1", "latest"],
                "registry": reg.addr, "organization": "cabin", "chunkSizeMb": 16})
        .to_string(),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"message": "Push initiated in background", "name": "src",
               "imageName": "api-img", "tags": ["v1", "latest"]})
    );
    wait_for("the push to finish", Duration::from_secs(120), || {
        let log = srv.log_text();
        assert!(!log.contains("Push failed"), "{log}");
        log.contains("Push complete name=src")
    });
    let port: u16 = reg.addr.rsplit(':').next().unwrap().parse().unwrap();
    let tags = http(port, "GET", "/v2/cabin/api-img/tags/list", None).json();
    assert_eq!(tags["tags"], json!(["latest", "v1"]), "{tags}");

    // Pull in the background, frozen midway: the VM shows as pulling with its progress.
    let pull_body = |image: &str, name: &str| {
        json!({"image": image, "name": name, "registry": reg.addr, "organization": "cabin"})
            .to_string()
    };
    let gets = reg.blob_gets();
    let r = srv.post("/lume/pull/start", &pull_body("api-img:v1", "copy"));
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"message": "Pull started", "name": "copy", "image": "api-img:v1"})
    );
    wait_for("some chunks to arrive", Duration::from_secs(60), || {
        reg.blob_gets() - gets >= 12
    });
    reg.freeze();
    let v = srv.get("/lume/vms/copy").json();
    reg.thaw();
    assert_eq!(
        keys(&v),
        sorted(&["name", "status", "downloadProgress"]),
        "{v}"
    );
    assert_eq!(
        (&v["name"], &v["status"]),
        (&json!("copy"), &json!("pulling"))
    );
    let progress = v["downloadProgress"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 100.0, "{v}");
    wait_for("the pull to finish", Duration::from_secs(120), || {
        let r = srv.get("/lume/vms/copy");
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["status"] == "stopped"
    });
    let v = srv.get("/lume/vms/copy").json();
    assert_eq!(keys(&v), sorted(VM_KEYS));
    assert_eq!(v["diskSize"]["total"], 640u64 << 20, "{v}");
    let same = std::process::Command::new("cmp")
        .arg(src.join("disk.img"))
        .arg(vms_dir(&data).join("copy/disk.img"))
        .status()
        .unwrap();
    assert!(same.success(), "the pulled disk differs");

    // A failed background pull is reported on the name it would have had.
    let r = srv.post("/lume/pull/start", &pull_body("api-img:missing", "nope"));
    assert_eq!(r.status, 202, "{r:?}");
    let mut message = String::new();
    wait_for("the pull to fail", Duration::from_secs(60), || {
        let r = srv.get("/lume/vms/nope");
        if r.status == 400 {
            message = r.error();
        }
        !message.is_empty()
    });
    assert!(message.starts_with("Pull failed for 'nope': "), "{message}");
    assert!(message.contains("api-img:missing"), "{message}");

    // With caching on, a synchronous pull fills the cache; images lists it; prune
    // empties it and leaves the VM.
    let r = srv.post("/lume/config", r#"{"cachingEnabled":true}"#);
    assert_eq!(r.status, 200, "{r:?}");
    let r = srv.post("/lume/pull", &pull_body("api-img:latest", "cached"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"message": "Image pulled successfully", "image": "api-img:latest",
               "name": "cached"})
    );
    let images = srv.get("/lume/images").json();
    let list = images.as_array().unwrap();
    assert_eq!(list.len(), 1, "{images}");
    assert_eq!(list[0]["repository"], "api-img:latest");
    assert_eq!(list[0]["imageId"].as_str().unwrap().len(), 12);
    let r = srv.post("/lume/prune", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(srv.get("/lume/images").body, "[]");
    assert_eq!(srv.get("/lume/vms/cached").json()["status"], "stopped");
}
