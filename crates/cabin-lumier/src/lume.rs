//! The few calls of Lume's HTTP API that Lumier makes, against `cabin serve` (or Lume):
//! get, pull, set, run, stop and delete a VM. One connection per call, bounded replies.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::config::{Config, Image};

/// The largest reply read from the API.
const REPLY_LIMIT: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LumeError {
    #[error("cannot reach cabin serve's Lume API at {address}: {source} (is `cabin serve` running, and reachable from here? see LUME_API_HOST and LUME_API_PORT)")]
    Unreachable {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("talking to the Lume API: {0}")]
    Http(String),
    /// The API answered with an error: its status and message.
    #[error("the Lume API refused {what}: {message} ({status})")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
}

pub struct Lume {
    address: SocketAddr,
    host: String,
    token: Option<String>,
    storage: String,
}

pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Lume {
    pub fn new(config: &Config) -> Lume {
        Lume {
            address: config.api,
            host: config.api_host.clone(),
            token: config.token.clone(),
            storage: config.storage.clone(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), LumeError> {
        let stream =
            TcpStream::connect(self.address)
                .await
                .map_err(|source| LumeError::Unreachable {
                    address: self.address,
                    source,
                })?;
        let http = |e: hyper::Error| LumeError::Http(e.to_string());
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| LumeError::Http(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), REPLY_LIMIT)
            .collect()
            .await
            .map_err(|e| LumeError::Http(e.to_string()))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status >= 400 {
            let message = value["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.as_str().unwrap_or_default().to_string());
            return Err(LumeError::Refused {
                what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
                status,
                message,
            });
        }
        Ok((status, value))
    }

    fn vm_path(&self, name: &str, action: &str) -> String {
        format!(
            "/lume/vms/{}{action}?storage={}",
            encode(name),
            encode(&self.storage)
        )
    }

    /// The VM's details; None when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Value>, LumeError> {
        match self.call(Method::GET, &self.vm_path(name, ""), None).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(LumeError::Refused { message, .. })
                if message.contains("Virtual machine not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Pulls `image` as the VM `name` (and waits for it).
    pub async fn pull(&self, image: &Image, name: &str) -> Result<(), LumeError> {
        self.call(
            Method::POST,
            "/lume/pull",
            Some(json!({
                "image": image.image,
                "name": name,
                "registry": image.registry,
                "organization": image.organization,
                "storage": self.storage,
            })),
        )
        .await
        .map(drop)
    }

    pub async fn set(
        &self,
        name: &str,
        cpu: u32,
        memory_mb: u64,
        display: &str,
    ) -> Result<(), LumeError> {
        self.call(
            Method::PATCH,
            &self.vm_path(name, ""),
            Some(json!({
                "cpu": cpu,
                "memory": format!("{memory_mb}MB"),
                "display": display,
                "storage": self.storage,
            })),
        )
        .await
        .map(drop)
    }

    pub async fn run(&self, name: &str, shared: Option<&str>) -> Result<(), LumeError> {
        let shares: Vec<Value> = shared
            .map(|p| json!({"hostPath": p, "readOnly": false}))
            .into_iter()
            .collect();
        self.call(
            Method::POST,
            &self.vm_path(name, "/run"),
            Some(json!({
                "noDisplay": true,
                "sharedDirectories": shares,
                "storage": self.storage,
                "recoveryMode": false,
            })),
        )
        .await
        .map(drop)
    }

    pub async fn stop(&self, name: &str) -> Result<(), LumeError> {
        self.call(
            Method::POST,
            &self.vm_path(name, "/stop"),
            Some(json!({"storage": self.storage})),
        )
        .await
        .map(drop)
    }

    pub async fn delete(&self, name: &str) -> Result<(), LumeError> {
        self.call(Method::DELETE, &self.vm_path(name, ""), None)
            .await
            .map(drop)
    }
}
