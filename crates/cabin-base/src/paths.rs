//! Where cabin keeps its state and finds what it runs: every directory of the data
//! directory is named here and nowhere else; and [`Host`], all that cabin takes from
//! its environment, read once by a front end at start-up ([`Host::from_env`]) and
//! passed down, so that nothing below the front ends reads an environment variable.

use std::io;
use std::path::{Path, PathBuf};

/// The layout of cabin's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// cabin's state: images, containers, volumes, VMs, snapshots.
    pub data: PathBuf,
    /// Rebuildable things (the guest kernels `scripts/build-kernel.sh` builds).
    pub cache: PathBuf,
    /// The user's home directory (`~` in Lume's storage paths).
    pub home: PathBuf,
}

/// Made absolute against the current directory (QEMU and disk overlays need absolute
/// paths, and a relative `CABIN_DATA_DIR` means relative to where cabin was started).
fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

impl Paths {
    /// `data` and `cache` as given (made absolute), `home` as the environment says.
    pub fn new(data: impl Into<PathBuf>, cache: impl Into<PathBuf>, home: PathBuf) -> Paths {
        Paths {
            data: absolute(data.into()),
            cache: absolute(cache.into()),
            home,
        }
    }

    /// State under `data`, with the cache and home of this environment: for tests and
    /// tools that keep their own data directory.
    pub fn at(data: impl Into<PathBuf>) -> Paths {
        let env = Paths::from_env();
        Paths::new(data, env.cache, env.home)
    }

    /// `CABIN_DATA_DIR`, else `$XDG_DATA_HOME/cabin`, else `~/.local/share/cabin`; the
    /// cache is `$XDG_CACHE_HOME/cabin` or `~/.cache/cabin`. `~` is `HOME`, or the
    /// user's home directory in the password database when `HOME` is not set.
    pub fn from_env() -> Paths {
        // HOME, else the user's entry in the password database: services started
        // without HOME (containerd's shims, systemd units) find the same directories
        // as the user's own commands.
        #[allow(deprecated)] // Sound on Unix, and no longer deprecated since 1.86.
        let home = std::env::home_dir()
            .filter(|h| !h.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("/root"));
        let data = std::env::var_os("CABIN_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("cabin")))
            .unwrap_or_else(|| home.join(".local/share/cabin"));
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache"))
            .join("cabin");
        Paths::new(data, cache, home)
    }

    /// One private directory per running VM: sockets, console log, writable layer.
    pub fn run_root(&self) -> PathBuf {
        self.data.join("run")
    }

    /// Disks built from `--rootfs` directories, by fingerprint.
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

    /// Saved VMs that containers resume from instead of booting.
    pub fn snapshots(&self) -> PathBuf {
        self.data.join("snapshots")
    }

    pub fn initramfs_cache(&self) -> PathBuf {
        self.data.join("initramfs")
    }

    /// One directory per container: its records, log, writable layer, control socket.
    pub fn containers(&self) -> PathBuf {
        self.data.join("containers")
    }

    /// Named volumes.
    pub fn volumes(&self) -> PathBuf {
        self.data.join("volumes")
    }

    /// User-defined networks' records.
    pub fn networks(&self) -> PathBuf {
        self.data.join("networks")
    }

    /// Kernels placed in the data directory by hand (before the build cache's).
    pub fn kernels(&self) -> PathBuf {
        self.data.join("kernel")
    }

    /// The guest kernels of `scripts/build-kernel.sh`.
    pub fn kernel_builds(&self) -> PathBuf {
        self.cache.join("kernel")
    }

    /// Lume's settings (storage locations, the image cache).
    pub fn vm_settings(&self) -> PathBuf {
        self.data.join("vm-settings.json")
    }

    /// The default storage location of full VMs.
    pub fn vms(&self) -> PathBuf {
        self.data.join("vms")
    }

    /// The default cache of pulled VM images.
    pub fn vm_image_cache(&self) -> PathBuf {
        self.data.join("vm-cache")
    }

    /// cabin's SSH key pair for VMs made from images.
    pub fn ssh_key(&self) -> PathBuf {
        self.data.join("ssh/id_ed25519")
    }

    /// A path as Lume's settings write it, `~` meaning the home directory.
    pub fn expand_home(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None if path == "~" => self.home.clone(),
            None => PathBuf::from(path),
        }
    }
}

/// Everything cabin takes from its environment (see the module comment).
#[derive(Debug, Clone)]
pub struct Host {
    pub paths: Paths,
    /// The guest kernel for containers (`CABIN_KERNEL`), else cabin's own build.
    pub kernel: Option<PathBuf>,
    /// The kernel for VMs made from images (`CABIN_VM_KERNEL`).
    pub vm_kernel: Option<PathBuf>,
    /// The static cabin-init (`CABIN_INIT`), else the one built beside cabin.
    pub init: Option<PathBuf>,
    /// QEMU (`CABIN_QEMU`), else `qemu-system-x86_64` on `PATH`.
    pub qemu: Option<PathBuf>,
    /// Whether container VMs resume from and build boot snapshots (`CABIN_SNAPSHOTS`,
    /// on unless `off`).
    pub snapshots: bool,
    /// Developers' aid: where to copy the guest console of the last container run
    /// (`CABIN_KEEP_CONSOLE`, for `bench/trace.sh`).
    pub keep_console: Option<PathBuf>,
    /// The `cabin` binary that helper processes run (`CABIN_BIN`), else found by
    /// [`Host::cabin_binary`]'s rule.
    pub cabin: Option<PathBuf>,
    /// Lume's registry credentials for ghcr.io (`GITHUB_USERNAME`/`GITHUB_TOKEN`, or
    /// `GHCR_USERNAME`/`GHCR_TOKEN`).
    pub ghcr_credentials: Option<(String, String)>,
}

impl Host {
    /// A host with `paths` and nothing overridden.
    pub fn with_paths(paths: Paths) -> Host {
        Host {
            paths,
            kernel: None,
            vm_kernel: None,
            init: None,
            qemu: None,
            snapshots: true,
            keep_console: None,
            cabin: None,
            ghcr_credentials: None,
        }
    }

    /// Reads the environment (the front ends' start-up does this, once).
    pub fn from_env() -> Host {
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let text = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Host {
            paths: Paths::from_env(),
            kernel: path("CABIN_KERNEL"),
            vm_kernel: path("CABIN_VM_KERNEL"),
            init: path("CABIN_INIT"),
            qemu: path("CABIN_QEMU"),
            snapshots: !matches!(
                std::env::var("CABIN_SNAPSHOTS").as_deref(),
                Ok("off" | "0" | "no" | "false")
            ),
            keep_console: path("CABIN_KEEP_CONSOLE"),
            cabin: path("CABIN_BIN"),
            ghcr_credentials: ghcr_credentials(text),
        }
    }

    /// The `cabin` binary that runs helper processes (a container's supervisor, a VM's
    /// runner, a snapshot builder). One rule, whoever asks (the `cabin` command itself,
    /// another program of the workspace, an installed layout): the one this host names
    /// (`CABIN_BIN`); else the running program if it is `cabin`; else a `cabin` beside
    /// the running program (a build's `target/` directory, an installed `bin/`); else
    /// `cabin` on `PATH`.
    pub fn cabin_binary(&self) -> io::Result<PathBuf> {
        let current = std::env::current_exe().ok();
        let path = std::env::var_os("PATH").unwrap_or_default();
        cabin_binary_by_rule(
            self.cabin.as_deref(),
            current.as_deref(),
            std::env::split_paths(&path),
        )
    }
}

/// Lume's credentials for ghcr.io from `var` (the environment): `GITHUB_USERNAME` (or
/// `GHCR_USERNAME`) and `GITHUB_TOKEN` (or `GHCR_TOKEN`), empty values skipped.
fn ghcr_credentials(var: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let either = |a: &str, b: &str| var(a).or_else(|| var(b));
    either("GITHUB_USERNAME", "GHCR_USERNAME").zip(either("GITHUB_TOKEN", "GHCR_TOKEN"))
}

/// Why [`locate`] found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocated {
    /// The file named does not exist.
    NamedMissing(PathBuf),
    /// None of these (listed, comma-separated) exists.
    NoneOf(String),
}

/// A file cabin runs (a kernel, its init): the one `named`, which must exist; else the
/// first of `candidates` that does.
pub fn locate(named: Option<PathBuf>, candidates: &[PathBuf]) -> Result<PathBuf, Unlocated> {
    if let Some(p) = named {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Unlocated::NamedMissing(p))
        };
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            Unlocated::NoneOf(
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// The name of cabin's binary.
pub const CABIN: &str = "cabin";

/// Where an installed cabin keeps what it runs in its guests (`scripts/install.sh`):
/// `PREFIX/lib/cabin` beside `PREFIX/bin`, the running program's directory.
pub fn installed_lib_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(installed_lib_dir_of(&exe))
}

/// [`installed_lib_dir`] of the program at `exe`.
pub fn installed_lib_dir_of(exe: &Path) -> PathBuf {
    let bin = exe.parent().unwrap_or(Path::new("/"));
    bin.parent().unwrap_or(bin).join("lib/cabin")
}

/// [`Host::cabin_binary`]'s rule, with its inputs given.
pub fn cabin_binary_by_rule(
    named: Option<&Path>,
    current: Option<&Path>,
    search_path: impl IntoIterator<Item = PathBuf>,
) -> io::Result<PathBuf> {
    if let Some(p) = named {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("CABIN_BIN names {}, which does not exist", p.display()),
            ))
        };
    }
    if let Some(exe) = current {
        if exe.file_name().is_some_and(|n| n == CABIN) {
            return Ok(exe.to_path_buf());
        }
        if let Some(beside) = exe.parent().map(|d| d.join(CABIN)) {
            if beside.is_file() {
                return Ok(beside);
            }
        }
    }
    search_path
        .into_iter()
        .map(|d| d.join(CABIN))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the cabin binary was not found (beside this program, or on PATH); set CABIN_BIN to it",
            )
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_installed_cabin_finds_its_guest_files_under_lib_beside_bin() {
        assert_eq!(
            installed_lib_dir_of(Path::new("/opt/cabin/bin/cabin")),
            Path::new("/opt/cabin/lib/cabin")
        );
    }

    use super::*;

    #[test]
    fn directories_have_one_name_each_under_an_absolute_data_directory() {
        let p = Paths::new("relative/data", "/c", PathBuf::from("/home/u"));
        assert!(p.data.is_absolute());
        assert!(p.containers().starts_with(&p.data));
        assert_eq!(p.kernel_builds(), PathBuf::from("/c/kernel"));
        assert_eq!(p.expand_home("~/vms"), PathBuf::from("/home/u/vms"));
        assert_eq!(p.expand_home("~"), PathBuf::from("/home/u"));
        assert_eq!(p.expand_home("/srv/vms"), PathBuf::from("/srv/vms"));
    }

    #[test]
    fn lumes_github_variables_give_ghcr_credentials_github_first() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, v)| *k == name && !v.is_empty())
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(ghcr_credentials(env(&[])), None);
        let ghcr = &[("GHCR_USERNAME", "octo"), ("GHCR_TOKEN", "t1")];
        assert_eq!(
            ghcr_credentials(env(ghcr)),
            Some(("octo".to_string(), "t1".to_string()))
        );
        // GITHUB_* first; an empty one falls back to GHCR_*.
        let both = &[
            ("GHCR_USERNAME", "octo"),
            ("GHCR_TOKEN", "t1"),
            ("GITHUB_USERNAME", "cat"),
            ("GITHUB_TOKEN", ""),
        ];
        assert_eq!(
            ghcr_credentials(env(both)),
            Some(("cat".to_string(), "t1".to_string()))
        );
        assert_eq!(ghcr_credentials(env(&[("GHCR_USERNAME", "octo")])), None);
    }

    #[test]
    fn files_are_located_by_name_or_as_the_first_candidate_there() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&b, "").unwrap();
        assert_eq!(locate(None, &[a.clone(), b.clone()]), Ok(b.clone()));
        assert_eq!(locate(Some(b.clone()), &[]), Ok(b.clone()));
        assert_eq!(
            locate(Some(a.clone()), std::slice::from_ref(&b)),
            Err(Unlocated::NamedMissing(a.clone()))
        );
        assert_eq!(
            locate(None, std::slice::from_ref(&a)),
            Err(Unlocated::NoneOf(a.display().to_string()))
        );
    }

    #[test]
    fn the_cabin_binary_is_found_by_one_rule() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        let other = t.path().join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let cabin = bin.join(CABIN);
        std::fs::write(&cabin, "").unwrap();
        let shim = bin.join("containerd-shim-cabin-v2");
        // Named: that one, or an error saying so.
        assert_eq!(
            cabin_binary_by_rule(Some(&cabin), Some(&shim), vec![]).unwrap(),
            cabin
        );
        let e = cabin_binary_by_rule(Some(&other.join("nope")), None, vec![]).unwrap_err();
        assert!(e.to_string().contains("CABIN_BIN names"), "{e}");
        // The running program when it is cabin, wherever it lies.
        let elsewhere = other.join(CABIN);
        assert_eq!(
            cabin_binary_by_rule(None, Some(&elsewhere), vec![]).unwrap(),
            elsewhere
        );
        // Another program of the workspace: the cabin beside it.
        assert_eq!(
            cabin_binary_by_rule(None, Some(&shim), vec![]).unwrap(),
            cabin
        );
        // Nothing beside it: PATH.
        let lone = other.join("lumier");
        assert_eq!(
            cabin_binary_by_rule(None, Some(&lone), vec![other.clone(), bin.clone()]).unwrap(),
            cabin
        );
        assert!(cabin_binary_by_rule(None, Some(&lone), vec![other]).is_err());
    }
}
