//! Where full VMs live: named storage locations (Lume's `vmLocations`), a default one,
//! and Lume's `--storage` rule (a name, a path with a slash, or `ephemeral`).
//!
//! Kept as JSON in `<data>/vm-settings.json`, in the shape of Lume's `GET /lume/config`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cabin_base::Paths;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub vm_locations: Vec<Location>,
    pub default_location_name: String,
    pub cache_directory: String,
    #[serde(default)]
    pub caching_enabled: bool,
    /// What `~` means in the paths above.
    #[serde(skip)]
    home: PathBuf,
}

/// What is wrong with a settings change or the settings file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the VM settings {} are unreadable ({detail}); fix or remove the file", path.display())]
    Unreadable { path: PathBuf, detail: String },
    #[error("{} is too large", .0.display())]
    TooLarge(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("Invalid location name: {0}: use letters, digits, '_' and '-'")]
    InvalidName(String),
    #[error("Storage location already exists: {0}")]
    Exists(String),
    #[error("Storage location not found: {0}")]
    NotFound(String),
    #[error("Cannot remove the default storage location: {0}")]
    RemoveDefault(String),
    #[error("Invalid storage path: {0}: give an absolute path")]
    RelativePath(String),
    #[error("Invalid storage path: {path}: {source}")]
    UnusablePath { path: String, source: io::Error },
    #[error("Invalid home directory: {0}: give an absolute path")]
    RelativeHome(String),
    #[error("Invalid home directory: {path}: {source}")]
    UnusableHome { path: String, source: io::Error },
    #[error("the default storage location {0} is not defined")]
    NoDefault(String),
}

pub const HOME: &str = "home";
pub const EPHEMERAL: &str = "ephemeral";

fn file(paths: &Paths) -> PathBuf {
    paths.vm_settings()
}

/// Lume's rule for location names.
pub fn valid_location_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Settings {
    /// A location's path with `~` expanded.
    pub fn expand(&self, path: &str) -> PathBuf {
        Paths::new("/", "/", self.home.clone()).expand_home(path)
    }

    pub fn defaults(paths: &Paths) -> Settings {
        Settings {
            vm_locations: vec![Location {
                name: HOME.into(),
                path: paths.vms().to_string_lossy().into_owned(),
            }],
            default_location_name: HOME.into(),
            cache_directory: paths.vm_image_cache().to_string_lossy().into_owned(),
            caching_enabled: false,
            home: paths.home.clone(),
        }
    }

    pub fn load(paths: &Paths) -> Result<Settings, SettingsError> {
        match fs::read(file(paths)) {
            Ok(b) if b.len() < 1 << 20 => serde_json::from_slice(&b)
                .map(|s: Settings| Settings {
                    home: paths.home.clone(),
                    ..s
                })
                .map_err(|e| SettingsError::Unreadable {
                    path: file(paths),
                    detail: e.to_string(),
                }),
            Ok(_) => Err(SettingsError::TooLarge(file(paths))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Settings::defaults(paths)),
            Err(source) => Err(SettingsError::Io {
                what: format!("reading {}", file(paths).display()),
                source,
            }),
        }
    }

    /// Writes the settings whole (temporary file, then rename).
    pub fn save(&self, paths: &Paths) -> Result<(), SettingsError> {
        let target = file(paths);
        let saving = |source| SettingsError::Io {
            what: format!("saving {}", target.display()),
            source,
        };
        cabin_base::files::create_private_dir(&paths.data).map_err(saving)?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| saving(e.into()))?;
        cabin_base::files::write_atomic(&target, &text, 0o600).map_err(saving)
    }

    pub fn location(&self, name: &str) -> Option<&Location> {
        self.vm_locations.iter().find(|l| l.name == name)
    }

    pub fn add_location(&mut self, name: &str, path: &str) -> Result<(), SettingsError> {
        if !valid_location_name(name) {
            return Err(SettingsError::InvalidName(name.to_string()));
        }
        if self.location(name).is_some() {
            return Err(SettingsError::Exists(name.to_string()));
        }
        let dir = self.expand(path);
        if !dir.is_absolute() {
            return Err(SettingsError::RelativePath(path.to_string()));
        }
        fs::create_dir_all(&dir).map_err(|source| SettingsError::UnusablePath {
            path: path.to_string(),
            source,
        })?;
        self.vm_locations.push(Location {
            name: name.into(),
            path: path.into(),
        });
        self.vm_locations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    pub fn remove_location(&mut self, name: &str) -> Result<(), SettingsError> {
        if name == self.default_location_name {
            return Err(SettingsError::RemoveDefault(name.to_string()));
        }
        let before = self.vm_locations.len();
        self.vm_locations.retain(|l| l.name != name);
        if self.vm_locations.len() == before {
            return Err(SettingsError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Lume's `homeDirectory` setting: moves the default location to `path` (an absolute
    /// directory, created if missing). The VMs already there stay where they are.
    pub fn set_home_directory(&mut self, path: &str) -> Result<(), SettingsError> {
        let dir = self.expand(path);
        if !dir.is_absolute() {
            return Err(SettingsError::RelativeHome(path.to_string()));
        }
        fs::create_dir_all(&dir).map_err(|source| SettingsError::UnusableHome {
            path: path.to_string(),
            source,
        })?;
        let default = self.default_location_name.clone();
        match self.vm_locations.iter_mut().find(|l| l.name == default) {
            Some(l) => l.path = path.into(),
            None => {
                self.vm_locations.push(Location {
                    name: default,
                    path: path.into(),
                });
                self.vm_locations.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        Ok(())
    }

    pub fn set_default(&mut self, name: &str) -> Result<(), SettingsError> {
        if self.location(name).is_none() {
            return Err(SettingsError::NotFound(name.to_string()));
        }
        self.default_location_name = name.into();
        Ok(())
    }

    /// Where `--storage` points: (the name shown as `locationName`, the directory that
    /// holds VM directories). None means the default location.
    pub fn resolve(&self, storage: Option<&str>) -> Result<(String, PathBuf), SettingsError> {
        match storage {
            None | Some("") => {
                let l = self
                    .location(&self.default_location_name)
                    .ok_or_else(|| SettingsError::NoDefault(self.default_location_name.clone()))?;
                Ok((l.name.clone(), self.expand(&l.path)))
            }
            Some(EPHEMERAL) => Ok((EPHEMERAL.into(), std::env::temp_dir())),
            Some(s) if s.contains('/') || s.contains('\\') => Ok((s.into(), self.expand(s))),
            Some(name) => self
                .location(name)
                .map(|l| (l.name.clone(), self.expand(&l.path)))
                .ok_or_else(|| SettingsError::NotFound(name.to_string())),
        }
    }

    /// Every place a VM may be when no `--storage` is given, default first.
    pub fn search_order(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        if let Ok(d) = self.resolve(None) {
            out.push(d);
        }
        for l in &self.vm_locations {
            if l.name != self.default_location_name {
                out.push((l.name.clone(), self.expand(&l.path)));
            }
        }
        out
    }
}

/// Whether `dir` is a directory we can create VMs in.
pub fn usable(dir: &Path) -> bool {
    fs::create_dir_all(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_resolves_like_lume() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::at(t.path());
        let mut s = Settings::defaults(&paths);
        assert_eq!(s.resolve(None).unwrap().0, "home");
        assert_eq!(
            s.resolve(Some("ephemeral")).unwrap().1,
            std::env::temp_dir()
        );
        let direct = s.resolve(Some("/srv/vms")).unwrap();
        assert_eq!(direct, ("/srv/vms".into(), PathBuf::from("/srv/vms")));
        assert!(s
            .resolve(Some("nope"))
            .unwrap_err()
            .to_string()
            .contains("not found: nope"));
        let extra = t.path().join("fast");
        s.add_location("fast", extra.to_str().unwrap()).unwrap();
        assert!(extra.is_dir());
        assert!(s.add_location("fast", "/x").is_err());
        assert!(s.add_location("bad name", "/x").is_err());
        assert!(s.add_location("rel", "relative/dir").is_err());
        s.set_default("fast").unwrap();
        assert_eq!(s.search_order()[0].0, "fast");
        assert!(s
            .remove_location("fast")
            .unwrap_err()
            .to_string()
            .contains("default"));
        s.set_default("home").unwrap();
        s.remove_location("fast").unwrap();
        let moved = t.path().join("moved");
        s.set_home_directory(moved.to_str().unwrap()).unwrap();
        assert_eq!(s.resolve(None).unwrap().1, moved);
        assert!(s.set_home_directory("relative").is_err());
        s.save(&paths).unwrap();
        assert_eq!(Settings::load(&paths).unwrap(), s);
    }
}
