//! Where cabin keeps its state.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    pub data: PathBuf,
}

impl Paths {
    /// `CABIN_DATA_DIR`, else `$XDG_DATA_HOME/cabin`, else `~/.local/share/cabin`.
    pub fn from_env() -> Paths {
        let data = std::env::var_os("CABIN_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("cabin")))
            .unwrap_or_else(|| home().join(".local/share/cabin"));
        Paths::at(data)
    }

    /// Paths under `data`, made absolute (a relative CABIN_DATA_DIR means relative to
    /// the current directory, and QEMU and disk overlays need absolute paths).
    pub fn at(data: impl Into<PathBuf>) -> Paths {
        let data = data.into();
        let data = if data.is_absolute() {
            data
        } else {
            std::env::current_dir()
                .map(|d| d.join(&data))
                .unwrap_or(data)
        };
        Paths { data }
    }

    /// One private directory per running VM: sockets, console log, writable layer.
    pub fn run_root(&self) -> PathBuf {
        self.data.join("run")
    }

    pub fn rootfs_cache(&self) -> PathBuf {
        self.data.join("rootfs")
    }

    pub fn image_store(&self) -> PathBuf {
        self.data.join("images")
    }

    /// Registry credentials saved by `cabin login` (0600).
    pub fn credentials(&self) -> PathBuf {
        self.data.join("credentials.json")
    }

    /// Saved VMs that containers resume from instead of booting (snapshot.rs).
    pub fn snapshots(&self) -> PathBuf {
        self.data.join("snapshots")
    }

    pub fn initramfs_cache(&self) -> PathBuf {
        self.data.join("initramfs")
    }
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// `$XDG_CACHE_HOME/cabin` or `~/.cache/cabin`: rebuildable things (the guest kernel).
pub fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("cabin")
}

pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)?;
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o700))
}
