//! `save` and `load`: images as tar archives, to move them without a registry.
//!
//! `save` writes an OCI image layout (oci-layout, index.json, blobs/sha256/...) plus
//! docker's manifest.json in one tar, the format `docker save` writes since Docker 25, so
//! `docker load`, skopeo (docker-archive: and oci-archive:) and cabin all read it. `load`
//! reads that, plain OCI layout archives, and the older `docker save` format
//! (`<id>/layer.tar` with manifest.json). Every blob is verified; names inside an
//! archive are hostile input like any other.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde_json::{json, Value};

use crate::image::{self, normalize_reference, Image, ImageError};
use crate::store::{digest_hex, Store};

const MAX_JSON: u64 = 4 << 20;

fn archive_err(path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    }
}

/// Writes the named images into one tar archive at `out`.
pub fn save(store: &Store, names: &[String], out: &Path) -> Result<(), ImageError> {
    let images: Vec<Image> = names
        .iter()
        .map(|n| image::resolve(store, n))
        .collect::<Result<_, _>>()?;
    let tmp = out.with_extension(format!("partial-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut tar = tar::Builder::new(io::BufWriter::new(fs::File::create(&tmp)?));
        // Plain entries only: `docker load` refuses GNU sparse ones.
        tar.sparse(false);
        let add = |tar: &mut tar::Builder<_>, name: &str, data: &[u8]| -> io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data)
        };
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut written = std::collections::HashSet::new();
        let mut index = Vec::new();
        let mut docker = Vec::new();
        for img in &images {
            let mut blobs = vec![
                img.manifest_digest.clone(),
                img.manifest.config().digest().to_string(),
            ];
            blobs.extend(img.manifest.layers().iter().map(|l| l.digest().to_string()));
            for d in &blobs {
                if written.insert(d.clone()) {
                    let path = store.blob_path(d).map_err(io::Error::other)?;
                    let mut f = fs::File::open(&path)?;
                    let mut h = tar::Header::new_ustar();
                    h.set_size(f.metadata()?.len());
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut h, format!("blobs/sha256/{}", &d[7..]), &mut f)?;
                }
            }
            let manifest_size = fs::metadata(
                store
                    .blob_path(&img.manifest_digest)
                    .map_err(io::Error::other)?,
            )?
            .len();
            let mut entry = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": img.manifest_digest,
                "size": manifest_size,
            });
            if !img.reference.is_empty() {
                let tag = img
                    .reference
                    .rsplit_once(':')
                    .map(|(_, t)| t)
                    .unwrap_or("latest");
                entry["annotations"] = json!({
                    "io.containerd.image.name": img.reference,
                    "org.opencontainers.image.ref.name": tag,
                });
            }
            index.push(entry);
            docker.push(json!({
                "Config": format!("blobs/sha256/{}", &img.manifest.config().digest().to_string()[7..]),
                "RepoTags": if img.reference.is_empty() { vec![] } else { vec![img.reference.clone()] },
                "Layers": img.manifest.layers().iter().map(|l| format!("blobs/sha256/{}", &l.digest().to_string()[7..])).collect::<Vec<_>>(),
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index});
        add(&mut tar, "index.json", &serde_json::to_vec(&index)?)?;
        add(&mut tar, "manifest.json", &serde_json::to_vec(&docker)?)?;
        tar.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        fs::rename(&tmp, out)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        ImageError::Save {
            path: out.to_path_buf(),
            source,
        }
    })
}

/// What `load` stored: (name or "", manifest digest) per image.
pub type Loaded = Vec<(String, String)>;

/// Reads an archive written by `save`, `docker save` (old or new) or an OCI layout tar.
pub fn load(store: &Store, input: &Path) -> Result<Loaded, ImageError> {
    let file = fs::File::open(input).map_err(|e| archive_err(input, e))?;
    let mut head = [0u8; 2];
    let gz = fs::File::open(input)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0)
        == 2
        && head == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    // Small JSON files by name, and every other regular file as a blob by its digest.
    let mut json_files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut blob_by_path: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().map_err(|e| archive_err(input, e))? {
        let mut entry = entry.map_err(|e| archive_err(input, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| archive_err(input, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path.ends_with(".json") || path == "oci-layout" || path.ends_with("/json") {
            if entry.size() > MAX_JSON {
                return Err(archive_err(input, format!("{path} is larger than 4 MiB")));
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| archive_err(input, e))?;
            // JSON files are blobs too when they live under blobs/ (configs, manifests).
            if path.starts_with("blobs/") {
                let d = store.put_bytes(&data)?;
                blob_by_path.insert(path.clone(), d);
            }
            json_files.insert(path, data);
            continue;
        }
        let mut w = store.blob_writer()?;
        io::copy(&mut entry, &mut w).map_err(|e| archive_err(input, e))?;
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(|h| format!("sha256:{h}"));
        // In an OCI layout the file name is the digest and must match it.
        let (digest, _) = store.commit(w, expected.as_deref())?;
        blob_by_path.insert(path, digest);
    }
    // Configs and manifests stored as small files have names that are digests too.
    for (path, d) in &blob_by_path {
        if let Some(h) = path.strip_prefix("blobs/sha256/") {
            if format!("sha256:{h}") != *d {
                return Err(archive_err(
                    input,
                    format!("{path} does not match its digest"),
                ));
            }
        }
    }
    if let Some(index) = json_files.get("index.json") {
        return load_oci_index(store, input, index);
    }
    if let Some(manifest) = json_files.get("manifest.json") {
        return load_docker(store, input, manifest, &json_files, &blob_by_path);
    }
    Err(archive_err(
        input,
        "neither an OCI layout (index.json) nor a docker save archive (manifest.json)",
    ))
}

fn load_oci_index(store: &Store, input: &Path, index: &[u8]) -> Result<Loaded, ImageError> {
    let index: Value = serde_json::from_slice(index)
        .map_err(|e| archive_err(input, format!("index.json: {e}")))?;
    let mut loaded = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let mut digest = m["digest"].as_str().unwrap_or_default().to_string();
        digest_hex(&digest)?;
        // A nested index: take its linux/amd64 image.
        let bytes = store.read_blob(&digest, MAX_JSON)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| archive_err(input, e))?;
        if v.get("manifests").is_some() {
            digest = crate::pull::choose_platform(&bytes, &input.display().to_string())?;
        }
        let ann = &m["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or(ann["org.opencontainers.image.ref.name"]
                .as_str()
                .filter(|r| r.contains(['/', ':'])))
            .and_then(|n| normalize_reference(n).ok())
            .unwrap_or_default();
        image::load(store, &name, &digest)?;
        if !name.is_empty() {
            store.update_refs(|r| r.insert(name.clone(), digest.clone()))?;
        }
        loaded.push((name, digest));
    }
    Ok(loaded)
}

/// The older docker save format: configs and `<id>/layer.tar` files named in
/// manifest.json. cabin writes an OCI manifest for each image.
fn load_docker(
    store: &Store,
    input: &Path,
    manifest: &[u8],
    json_files: &HashMap<String, Vec<u8>>,
    blobs: &HashMap<String, String>,
) -> Result<Loaded, ImageError> {
    let list: Value = serde_json::from_slice(manifest)
        .map_err(|e| archive_err(input, format!("manifest.json: {e}")))?;
    let mut loaded = Vec::new();
    for item in list.as_array().into_iter().flatten() {
        let config_path = item["Config"].as_str().unwrap_or_default();
        let config = json_files
            .get(config_path)
            .ok_or_else(|| archive_err(input, format!("config {config_path:?} is missing")))?;
        let config_digest = store.put_bytes(config)?;
        let mut layers = Vec::new();
        for l in item["Layers"].as_array().into_iter().flatten() {
            let p = l.as_str().unwrap_or_default();
            let d = blobs
                .get(p)
                .ok_or_else(|| archive_err(input, format!("layer {p:?} is missing")))?;
            let size = fs::metadata(store.blob_path(d)?)
                .map(|m| m.len())
                .unwrap_or(0);
            let mut head = [0u8; 2];
            let gz = fs::File::open(store.blob_path(d)?)
                .and_then(|mut f| f.read(&mut head))
                .unwrap_or(0)
                == 2
                && head == [0x1f, 0x8b];
            layers.push(json!({
                "mediaType": if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
                "digest": d,
                "size": size,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).expect("json");
        let digest = store.put_bytes(&bytes)?;
        let tags: Vec<String> = item["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().and_then(|t| normalize_reference(t).ok()))
            .collect();
        let first = tags.first().cloned().unwrap_or_default();
        image::load(store, &first, &digest)?;
        store.update_refs(|r| {
            for t in &tags {
                r.insert(t.clone(), digest.clone());
            }
        })?;
        loaded.push((first, digest));
    }
    Ok(loaded)
}
