//! Lume's media types and annotation keys (`../shared/reference/lume.md` §4). These
//! strings are the compatibility: change none of them.

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// The OCI format (Lume v0.3.0 and later).
pub const CONFIG: &str = "application/vnd.trycua.lume.config.v1+json";
pub const NVRAM: &str = "application/vnd.trycua.lume.nvram.v1";
pub const DISK: &str = "application/vnd.trycua.lume.disk.v1";

// The legacy format (Lume v0.2.x) and the fallbacks Lume accepts.
pub const LEGACY_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LEGACY_NVRAM: &str = "application/octet-stream";
pub const LEGACY_DISK_LZ4: &str = "application/octet-stream+lz4";
pub const FALLBACK_DISK_GZIP: &str = "application/octet-stream+gzip";
pub const FALLBACK_DISK_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub const TITLE: &str = "org.opencontainers.image.title";

// Disk layer annotations (OCI format).
pub const UNCOMPRESSED_SIZE: &str = "org.trycua.lume.content.uncompressed-size";
pub const UNCOMPRESSED_DIGEST: &str = "org.trycua.lume.content.uncompressed-digest";
pub const PART_NUMBER: &str = "org.trycua.lume.part.number";
pub const PART_TOTAL: &str = "org.trycua.lume.part.total";
pub const PART_OFFSET: &str = "org.trycua.lume.part.offset";
pub const CHUNK_SIZE: &str = "org.trycua.lume.chunk.size";

// Manifest annotations (OCI format).
pub const UPLOAD_TIME: &str = "org.trycua.lume.upload-time";
pub const TOTAL_UNCOMPRESSED_SIZE: &str = "org.trycua.lume.total-uncompressed-size";
pub const OS: &str = "org.trycua.lume.os";
pub const CPU_COUNT: &str = "org.trycua.lume.cpu-count";
pub const MEMORY_SIZE: &str = "org.trycua.lume.memory-size";
pub const DISK_SIZE: &str = "org.trycua.lume.disk-size";
pub const DISPLAY: &str = "org.trycua.lume.display";
pub const NETWORK_MODE: &str = "org.trycua.lume.network-mode";

// Legacy annotations.
pub const LEGACY_UNCOMPRESSED_SIZE: &str = "org.trycua.lume.uncompressed-size";
pub const LEGACY_UNCOMPRESSED_DIGEST: &str = "org.trycua.lume.uncompressed-content-digest";
pub const LEGACY_DISK_SIZE: &str = "org.trycua.lume.uncompressed-disk-size";
pub const LEGACY_CONFIG_DISK_SIZE: &str = "com.trycua.lume.disk.uncompressed_size";
