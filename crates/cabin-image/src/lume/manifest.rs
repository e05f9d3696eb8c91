//! Lume's manifests and config blobs: built on push, read (and checked) on pull.
//!
//! Keys are written sorted and pretty-printed, as Lume writes them; field order in the
//! structs below is alphabetical for that reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{media, LumeError};

/// Largest manifest accepted (a 4 TiB disk in 64 MiB chunks is ~20 MiB of JSON; Lume's
/// 512 MiB chunks make ~1 KiB per 512 MiB).
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// Largest config blob accepted.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest NVRAM layer accepted (OVMF's variable store is 540 KiB, a Mac's auxiliary
/// storage 32 MiB).
pub const MAX_NVRAM_BYTES: u64 = 128 << 20;

/// An OCI descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
}

impl Descriptor {
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// An OCI image manifest as Lume writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serialisable")
    }

    pub fn parse(image: &str, bytes: &[u8]) -> Result<Manifest, LumeError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(LumeError::invalid(
                image,
                "the manifest is larger than 16 MiB",
            ));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            LumeError::invalid(
                image,
                format!("the manifest is not an OCI image manifest ({e})"),
            )
        })?;
        if m.schema_version != 2 {
            return Err(LumeError::invalid(
                image,
                format!(
                    "manifest schemaVersion {} (only 2 is known)",
                    m.schema_version
                ),
            ));
        }
        Ok(m)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Lume's test: OCI if the config or any layer has a trycua media type.
    pub fn is_oci_format(&self) -> bool {
        self.config.media_type == media::CONFIG
            || self.layers.iter().any(|l| l.media_type == media::DISK)
    }
}

/// What an image says about its VM (Lume's `config.json` less the MAC address, which
/// every pull makes anew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDescription {
    pub os: String,
    pub cpu_count: u32,
    pub memory_size: u64,
    pub disk_size: u64,
    pub display: String,
    pub network_mode: String,
    pub hardware_model: Option<String>,
    pub machine_identifier: Option<String>,
}

/// The config blob of the OCI format (sorted keys, pretty).
pub fn config_blob(vm: &VmDescription) -> Vec<u8> {
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert("mediatype", media::CONFIG.into());
    m.insert("os", vm.os.clone().into());
    if let Some(h) = &vm.hardware_model {
        m.insert("hardwareModel", h.clone().into());
    }
    if let Some(id) = &vm.machine_identifier {
        m.insert("machineIdentifier", id.clone().into());
    }
    let storage = |mt: &str, file: &str| {
        let mut s: BTreeMap<&str, Value> = BTreeMap::new();
        s.insert("file", file.into());
        s.insert("mediatype", mt.into());
        s
    };
    m.insert(
        "storage",
        serde_json::to_value([
            storage(media::NVRAM, "nvram.bin"),
            storage(media::DISK, "disk.img"),
        ])
        .expect("serialisable"),
    );
    serde_json::to_vec_pretty(&m).expect("serialisable")
}

/// The manifest annotations that describe the VM (OCI format).
pub fn vm_annotations(vm: &VmDescription) -> BTreeMap<String, String> {
    [
        (media::OS, vm.os.clone()),
        (media::CPU_COUNT, vm.cpu_count.to_string()),
        (media::MEMORY_SIZE, vm.memory_size.to_string()),
        (media::DISK_SIZE, vm.disk_size.to_string()),
        (media::DISPLAY, vm.display.clone()),
        (media::NETWORK_MODE, vm.network_mode.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn bounded_str(image: &str, what: &str, v: &str, max: usize) -> Result<String, LumeError> {
    if v.is_empty() || v.len() > max || v.chars().any(|c| c.is_control()) {
        return Err(LumeError::invalid(
            image,
            format!("{what} {v:?} is not valid"),
        ));
    }
    Ok(v.to_string())
}

fn number<T: std::str::FromStr>(image: &str, key: &str, v: &str) -> Result<T, LumeError> {
    v.trim()
        .parse()
        .map_err(|_| LumeError::invalid(image, format!("annotation {key} = {v:?} is not a number")))
}

fn check(image: &str, d: &VmDescription) -> Result<(), LumeError> {
    if d.cpu_count == 0 || d.cpu_count > 256 {
        return Err(LumeError::invalid(
            image,
            format!("CPU count {} (1 to 256)", d.cpu_count),
        ));
    }
    if d.memory_size < 64 << 20 || d.memory_size > 16 << 40 {
        return Err(LumeError::invalid(
            image,
            format!("memory size {} bytes", d.memory_size),
        ));
    }
    let ok_display = d
        .display
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .is_some_and(|(w, h)| (1..=16384).contains(&w) && (1..=16384).contains(&h));
    if !ok_display {
        return Err(LumeError::invalid(
            image,
            format!("display {:?} (WIDTHxHEIGHT)", d.display),
        ));
    }
    for v in [&d.hardware_model, &d.machine_identifier]
        .into_iter()
        .flatten()
    {
        if v.len() > 4096
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        {
            return Err(LumeError::invalid(
                image,
                "hardwareModel/machineIdentifier is not base64",
            ));
        }
    }
    Ok(())
}

/// The VM an OCI-format image describes: its config blob (os, identities) and the
/// manifest's annotations (CPUs, memory, display, network); Lume's defaults for what
/// is missing. `disk_size` is the disk's size from the layer plan.
pub fn describe_oci(
    image: &str,
    m: &Manifest,
    config: &[u8],
    disk_size: u64,
) -> Result<VmDescription, LumeError> {
    let v: Value = serde_json::from_slice(config)
        .map_err(|e| LumeError::invalid(image, format!("the config blob is not JSON ({e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| LumeError::invalid(image, "the config blob is not a JSON object"))?;
    let text = |k: &str| -> Result<Option<String>, LumeError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(LumeError::invalid(
                image,
                format!("config blob key {k} is not a string"),
            )),
        }
    };
    let os = match (text("os")?, m.annotation(media::OS)) {
        (Some(os), _) => os,
        (None, Some(os)) => os.to_string(),
        (None, None) => return Err(LumeError::invalid(image, "the config blob names no os")),
    };
    let d = VmDescription {
        os: bounded_str(image, "os", &os, 32)?,
        cpu_count: m
            .annotation(media::CPU_COUNT)
            .map(|v| number(image, media::CPU_COUNT, v))
            .transpose()?
            .unwrap_or(4),
        memory_size: m
            .annotation(media::MEMORY_SIZE)
            .map(|v| number(image, media::MEMORY_SIZE, v))
            .transpose()?
            .unwrap_or(8 << 30),
        disk_size,
        display: bounded_str(
            image,
            "display",
            m.annotation(media::DISPLAY).unwrap_or("1920x1080"),
            32,
        )?,
        network_mode: bounded_str(
            image,
            "network mode",
            m.annotation(media::NETWORK_MODE).unwrap_or("nat"),
            64,
        )?,
        hardware_model: text("hardwareModel")?,
        machine_identifier: text("machineIdentifier")?,
    };
    check(image, &d)?;
    Ok(d)
}

/// Lume's `config.json` as the legacy format carries it (the config blob itself).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyConfig {
    os: String,
    cpu_count: u32,
    memory_size: u64,
    #[serde(default)]
    disk_size: Option<u64>,
    #[serde(default)]
    display: Option<String>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    hardware_model: Option<String>,
    #[serde(default)]
    machine_identifier: Option<String>,
}

/// The disk size a legacy config blob declares, if any.
pub fn legacy_config_disk_size(config: &[u8]) -> Option<u64> {
    serde_json::from_slice::<LegacyConfig>(config)
        .ok()?
        .disk_size
}

/// The VM a legacy image describes: its config blob is Lume's `config.json`.
pub fn describe_legacy(
    image: &str,
    config: &[u8],
    disk_size: u64,
) -> Result<VmDescription, LumeError> {
    let c: LegacyConfig = serde_json::from_slice(config).map_err(|e| {
        LumeError::invalid(
            image,
            format!("the config blob is not Lume's config.json ({e})"),
        )
    })?;
    let d = VmDescription {
        os: bounded_str(image, "os", &c.os, 32)?,
        cpu_count: c.cpu_count,
        memory_size: c.memory_size,
        disk_size,
        display: bounded_str(
            image,
            "display",
            c.display.as_deref().unwrap_or("1920x1080"),
            32,
        )?,
        network_mode: bounded_str(
            image,
            "network mode",
            c.network_mode.as_deref().unwrap_or("nat"),
            64,
        )?,
        hardware_model: c.hardware_model,
        machine_identifier: c.machine_identifier,
    };
    check(image, &d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmDescription {
        VmDescription {
            os: "linux".into(),
            cpu_count: 2,
            memory_size: 4 << 30,
            disk_size: 10 << 30,
            display: "1024x768".into(),
            network_mode: "nat".into(),
            hardware_model: None,
            machine_identifier: Some("AAECAwQFBgcICQoLDA0ODw==".into()),
        }
    }

    #[test]
    fn config_blob_has_lumes_keys_sorted() {
        let b = config_blob(&vm());
        let s = String::from_utf8(b.clone()).unwrap();
        let keys: Vec<usize> = ["machineIdentifier", "mediatype", "os", "storage"]
            .iter()
            .map(|k| s.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{s}");
        assert!(s.contains(media::NVRAM) && s.contains("\"disk.img\""));
        let m = Manifest {
            annotations: vm_annotations(&vm()),
            config: Descriptor {
                annotations: BTreeMap::new(),
                digest: "sha256:x".into(),
                media_type: media::CONFIG.into(),
                size: b.len() as u64,
            },
            layers: vec![],
            media_type: Some(media::MANIFEST.into()),
            schema_version: 2,
        };
        let d = describe_oci("i", &m, &b, 10 << 30).unwrap();
        assert_eq!(d, vm());
        let back = Manifest::parse("i", &m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert!(back.is_oci_format());
    }

    #[test]
    fn invalid_configs_are_refused_with_the_reason() {
        let m = Manifest::parse(
            "i",
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"d","size":1},
                "annotations":{"org.trycua.lume.cpu-count":"many"}}"#,
        )
        .unwrap();
        let e = describe_oci("i", &m, br#"{"os":"linux"}"#, 1).unwrap_err();
        assert!(e.to_string().contains("cpu-count"), "{e}");
        let e = describe_oci("i", &m, b"[1]", 1).unwrap_err();
        assert!(e.to_string().contains("not a JSON object"), "{e}");
        let e =
            describe_legacy("i", br#"{"os":"linux","cpuCount":0,"memorySize":1}"#, 1).unwrap_err();
        assert!(e.to_string().contains("CPU count 0"), "{e}");
        assert!(Manifest::parse("i", b"{}").is_err());
    }
}
