//! What goes over the wire: Lume's request bodies (camelCase keys; unknown keys
//! ignored and `null` accepted for optional ones, as Swift's `JSONDecoder` does), and
//! replies encoded as Swift's `JSONEncoder` encodes them (compact, `/` escaped as `\/`).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cabin_machines::settings::SettingsError;
use cabin_machines::store::VmError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A reply, before it becomes an HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: swift_json(value),
        }
    }

    pub fn ok<T: Serialize>(value: &T) -> Reply {
        Reply::json(StatusCode::OK, value)
    }

    pub fn message(status: StatusCode, message: &str) -> Reply {
        Reply::json(status, &Message { message })
    }

    pub fn text(status: StatusCode, text: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
        }
    }

    /// Lume's answer to a delete: 200, JSON content type, no body.
    pub fn empty_json() -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Vec::new(),
        }
    }

    /// The `message` of a JSON error reply, for the log.
    pub fn error_message(&self) -> Option<String> {
        if self.status.is_success() {
            return None;
        }
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(v) => v["message"].as_str().map(String::from),
            Err(_) => Some(String::from_utf8_lossy(&self.body).into_owned()),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(self.content_type),
        );
        r
    }
}

#[derive(Serialize)]
pub struct Message<'a> {
    pub message: &'a str,
}

/// A JSON object of string values, keys in the order given (Lume's replies list
/// `message` first).
pub struct Fields<'a>(pub &'a [(&'a str, &'a str)]);

impl Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Compact JSON with every `/` written `\/`, as Swift's encoder writes it. A `/` can only
/// occur inside a JSON string, so escaping every one of them is exact.
pub fn swift_json<T: Serialize>(value: &T) -> Vec<u8> {
    let plain = serde_json::to_vec(value).expect("serialisable");
    let mut out = Vec::with_capacity(plain.len() + 16);
    for b in plain {
        if b == b'/' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// A handler's failure: Lume answers these with 400 and `{"message": ...}`.
#[derive(Debug)]
pub struct ApiError(pub String);

impl ApiError {
    pub fn new(message: impl Into<String>) -> ApiError {
        ApiError(message.into())
    }

    pub fn reply(&self) -> Reply {
        Reply::message(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// Lume's wording of a VM error, as its API answers it: the one place where the
/// library's errors become wire messages.
pub fn lume_message(e: &VmError) -> String {
    match e {
        VmError::NotFound(name) => format!("Virtual machine not found: {name}"),
        VmError::Exists(name) => format!("Virtual machine already exists with name: {name}"),
        VmError::Running(name) => format!("Virtual machine already running: {name}"),
        VmError::NotRunning(name) => format!("Virtual machine is not running: {name}"),
        VmError::Settings(SettingsError::NotFound(name)) => {
            format!("Storage location not found: {name}")
        }
        VmError::Settings(SettingsError::Exists(name)) => {
            format!("Storage location already exists: {name}")
        }
        VmError::Settings(SettingsError::RemoveDefault(name)) => {
            format!("Cannot remove the default storage location: {name}")
        }
        // cabin's own failures, which Lume's clients show as they are.
        other => other.to_string(),
    }
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> ApiError {
        ApiError(lume_message(&e))
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> ApiError {
        ApiError::from(VmError::from(e))
    }
}

impl From<String> for ApiError {
    fn from(e: String) -> ApiError {
        ApiError(e)
    }
}

pub const INVALID_BODY: &str = "Invalid request body";

// Fields marked `accepted` are Lume's, decoded (so a wrong type is refused as Lume
// refuses it) but of no use to cabin: backups guard Lume's macOS disk resizes (a linux
// disk only grows its file), there is no local display window on Linux, the clipboard
// is not shared yet, and setup is refused.

/// A required body: missing or undecodable is Lume's "Invalid request body".
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(INVALID_BODY));
    }
    serde_json::from_slice(bytes).map_err(|_| ApiError::new(INVALID_BODY))
}

/// An optional body: none means every field's default.
pub fn optional_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    body(bytes)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateVm {
    pub name: String,
    pub os: String,
    pub cpu: u32,
    pub memory: String,
    pub disk_size: String,
    pub display: String,
    pub ipsw: Option<String>,
    pub storage: Option<String>,
    pub unattended: Option<String>,
    pub network: Option<String>,
    /// cabin's own: make the VM from an image in cabin's store (`vm create --image`).
    pub image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedDirectory {
    pub host_path: String,
    pub read_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunVm {
    #[allow(dead_code)] // accepted
    pub no_display: Option<bool>,
    pub shared_directories: Option<Vec<SharedDirectory>>,
    pub recovery_mode: Option<bool>,
    pub storage: Option<String>,
    pub disk_path: Option<String>,
    pub nvram_path: Option<String>,
    pub network: Option<String>,
    #[allow(dead_code)] // accepted
    pub clipboard: Option<bool>,
    pub vnc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetVm {
    pub cpu: Option<u32>,
    pub memory: Option<String>,
    pub disk_size: Option<String>,
    pub display: Option<String>,
    pub storage: Option<String>,
    #[allow(dead_code)] // accepted
    pub no_backup: Option<bool>,
    #[allow(dead_code)] // accepted
    pub keep_backup: Option<bool>,
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Storage {
    pub storage: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneVm {
    pub name: String,
    /// pylume 0.2.1's clone_vm sends `new_name` (Lume refuses that body); taking it too
    /// turns that failure into the clone asked for.
    #[serde(alias = "new_name")]
    pub new_name: String,
    pub source_location: Option<String>,
    pub dest_location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupVm {
    pub config_path: Option<String>,
    pub config_yaml: Option<String>,
    pub storage: Option<String>,
    #[allow(dead_code)] // accepted
    pub vnc_port: Option<u16>,
    #[allow(dead_code)] // accepted
    pub no_display: Option<bool>,
    #[allow(dead_code)] // accepted
    pub debug: Option<bool>,
    #[allow(dead_code)] // accepted
    pub debug_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pull {
    pub image: String,
    pub name: Option<String>,
    pub registry: Option<String>,
    pub organization: Option<String>,
    pub storage: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    pub name: String,
    pub image_name: String,
    pub tags: Vec<String>,
    pub registry: Option<String>,
    pub organization: Option<String>,
    pub storage: Option<String>,
    pub chunk_size_mb: Option<u64>,
    pub single_layer: Option<bool>,
    /// cabin's own: a suspended VM pushed with its saved memory (`vm push --with-memory`).
    pub with_memory: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetConfig {
    pub home_directory: Option<String>,
    pub cache_directory: Option<String>,
    pub caching_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct AddLocation {
    pub name: String,
    pub path: String,
}

/// `GET /lume/config`: Lume's `LumeSettings`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LumeSettings<'a> {
    pub vm_locations: &'a [cabin_machines::settings::Location],
    pub default_location_name: &'a str,
    pub cache_directory: &'a str,
    pub caching_enabled: bool,
    pub registry: RegistrySettings,
    pub telemetry_enabled: bool,
}

#[derive(Serialize)]
pub struct RegistrySettings {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ghcr: Ghcr,
}

#[derive(Serialize)]
pub struct Ghcr {
    pub registry: &'static str,
    pub organization: &'static str,
}

#[derive(Serialize)]
pub struct HostStatus {
    pub status: &'static str,
    pub vm_count: usize,
    pub max_vms: usize,
    pub available_slots: usize,
    pub version: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_errors_become_lumes_messages_in_one_place() {
        assert_eq!(
            lume_message(&VmError::NotFound("web".into())),
            "Virtual machine not found: web"
        );
        assert_eq!(
            lume_message(&VmError::Running("web".into())),
            "Virtual machine already running: web"
        );
        assert_eq!(
            lume_message(&SettingsError::NotFound("ssd".into()).into()),
            "Storage location not found: ssd"
        );
        assert_eq!(
            ApiError::from(SettingsError::RemoveDefault("home".into())).0,
            "Cannot remove the default storage location: home"
        );
    }

    #[test]
    fn json_is_compact_and_escapes_slashes_like_swift() {
        let v = serde_json::json!({"vncUrl": "vnc://:pw@127.0.0.1:5901", "n": [1, 2]});
        let s = String::from_utf8(swift_json(&v)).unwrap();
        assert_eq!(s, r#"{"n":[1,2],"vncUrl":"vnc:\/\/:pw@127.0.0.1:5901"}"#);
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn bodies_decode_as_swift_decodes_them() {
        let r: RunVm = optional_body(b"").unwrap();
        assert!(r.shared_directories.is_none());
        let r: RunVm = optional_body(
            br#"{"noDisplay":true,"cpu":4,"storage":null,"sharedDirectories":[{"hostPath":"/tmp"}]}"#,
        )
        .unwrap();
        assert_eq!(r.no_display, Some(true));
        assert_eq!(r.shared_directories.unwrap()[0].read_only, None);
        assert_eq!(
            optional_body::<RunVm>(b"{not json").unwrap_err().0,
            INVALID_BODY
        );
        assert_eq!(
            optional_body::<RunVm>(br#"{"noDisplay":"yes"}"#)
                .unwrap_err()
                .0,
            INVALID_BODY
        );
        let missing = br#"{"name":"a","os":"linux","cpu":1,"memory":"1GB","diskSize":"10GB"}"#;
        assert_eq!(body::<CreateVm>(missing).unwrap_err().0, INVALID_BODY);
        assert_eq!(body::<CreateVm>(b"").unwrap_err().0, INVALID_BODY);
        let c: CloneVm = body(br#"{"name":"a","new_name":"b"}"#).unwrap();
        assert_eq!(c.new_name, "b");
    }
}
