//! Bearer-token auth, the flow Docker Hub, GHCR and most registries use: the registry
//! answers 401 with a WWW-Authenticate challenge naming a token service; the client gets
//! a token there (with its credentials) and retries. Real docker-registry configured
//! for token auth; the token service is a small one written here, signing JWTs with a
//! key made by openssl.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..chunk.len() + 1 {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64std(data: &[u8]) -> String {
    let mut s = b64url(data).replace('-', "+").replace('_', "/");
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

fn openssl(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut c = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    if let Some(i) = input {
        c.stdin.take().unwrap().write_all(i).unwrap();
    }
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Serves GET /token: checks basic auth, grants what the scope asks for.
fn token_service(
    dir: &Path,
    user: &'static str,
    password: &'static str,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let cert_der = openssl(dir, &["x509", "-in", "cert.pem", "-outform", "DER"], None);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (dir, log) = (dir.to_path_buf(), seen.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap_or(0);
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line.to_lowercase().starts_with("authorization:") {
                    auth = line["authorization:".len()..].trim().to_string();
                }
            }
            let expected = format!("Basic {}", b64std(format!("{user}:{password}").as_bytes()));
            let mut conn = conn;
            if auth != expected {
                log.lock().unwrap().push("refused".into());
                let _ = conn.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            // scope=repository:NAME:pull,push (possibly several)
            let query = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .split_once('?')
                .map(|x| x.1)
                .unwrap_or("");
            let mut access = Vec::new();
            for kv in query.split('&') {
                if let Some(scope) = kv.strip_prefix("scope=") {
                    let scope = scope
                        .replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",");
                    let parts: Vec<&str> = scope.split(':').collect();
                    if parts.len() == 3 {
                        access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                    }
                }
            }
            log.lock().unwrap().push(format!(
                "granted {}",
                serde_json::Value::Array(access.clone())
            ));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header =
                serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [b64std(&cert_der)]});
            let claims = serde_json::json!({
                "iss": "cabin-test-issuer", "sub": user, "aud": "cabin-test-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let sig = openssl(
                &dir,
                &["dgst", "-sha256", "-sign", "key.pem"],
                Some(signing_input.as_bytes()),
            );
            let token = format!("{signing_input}.{}", b64url(&sig));
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                    .to_string();
            let _ = conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
            );
        }
    });
    (addr, seen)
}

#[test]
fn a_token_authenticated_registry_works_after_login() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=cabin-test-issuer",
        ],
        None,
    );
    let (token_addr, grants) = token_service(d, "tokenuser", "t0ken");
    let reg = start_registry(d, |_| {
        format!(
            "auth:\n  token:\n    realm: http://{token_addr}/token\n    service: cabin-test-registry\n    issuer: cabin-test-issuer\n    rootcertbundle: {}\n",
            d.join("cert.pem").display()
        )
    });
    let addr = reg.addr.clone();

    let data = d.join("data");
    let o = cabin_in(&data)
        .args([
            "image",
            "import",
            busybox_rootfs().to_str().unwrap(),
            "tok:1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dest = format!("{addr}/cabin/tok:1");
    let o = cabin_in(&data)
        .args(["image", "push", "tok:1", &dest])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "no token without credentials");

    let mut login = cabin_in(&data)
        .args(["login", &addr, "-u", "tokenuser", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(login.stdin.take().unwrap(), "t0ken").unwrap();
    let o = login.wait_with_output().unwrap();
    assert_eq!(stdout(&o).trim(), "Login Succeeded", "{}", stderr(&o));

    let o = cabin_in(&data)
        .args(["image", "push", "tok:1", &dest])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(cabin_in(&data)
        .args(["image", "rm", "tok:1"])
        .output()
        .unwrap()
        .status
        .success());
    let o = cabin_in(&data)
        .args(["run", &dest, "echo", "via-token"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "via-token\n", "{}", stderr(&o));
    let granted = grants.lock().unwrap().clone();
    assert!(granted.iter().any(|g| g.contains("push")), "{granted:?}");
    assert!(
        granted
            .iter()
            .any(|g| g.starts_with("granted") && g.contains("pull")),
        "{granted:?}"
    );
}
