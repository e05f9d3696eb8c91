//! Registry credentials saved by `cabin login`: one JSON file, mode 0600, in the data
//! directory, keyed by registry host[:port].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

pub struct Credentials {
    path: PathBuf,
}

impl Credentials {
    pub fn at(path: impl Into<PathBuf>) -> Credentials {
        Credentials { path: path.into() }
    }

    fn read(&self) -> io::Result<BTreeMap<String, Credential>> {
        match fs::read(&self.path) {
            Ok(d) => serde_json::from_slice(&d).map_err(|e| {
                io::Error::other(format!(
                    "{} is not valid ({e}); remove it and log in again",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    fn write(&self, all: &BTreeMap<String, Credential>) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(all).expect("json"))?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)
    }

    pub fn get(&self, registry: &str) -> io::Result<Option<Credential>> {
        Ok(self.read()?.remove(registry))
    }

    pub fn set(&self, registry: &str, c: Credential) -> io::Result<()> {
        let mut all = self.read()?;
        all.insert(registry.to_string(), c);
        self.write(&all)
    }

    /// Returns whether there was something to remove.
    pub fn remove(&self, registry: &str) -> io::Result<bool> {
        let mut all = self.read()?;
        let had = all.remove(registry).is_some();
        self.write(&all)?;
        Ok(had)
    }
}

/// The registry host[:port] a reference points at ("docker.io" for short names).
pub fn registry_of(reference: &str) -> Option<String> {
    reference
        .parse::<oci_client::Reference>()
        .ok()
        .map(|r| r.resolve_registry().to_string())
}

/// Registry options for `reference` with the saved credentials of its registry, if any.
pub fn options_for(
    reference: &str,
    creds: &Credentials,
    mut opts: crate::registry::RegistryOptions,
) -> io::Result<crate::registry::RegistryOptions> {
    if opts.auth.is_none() {
        if let Some(reg) = registry_of(reference) {
            opts.auth = creds.get(&reg)?.map(|c| (c.username, c.password));
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_are_kept_private_and_removable() {
        let t = tempfile::tempdir().unwrap();
        let c = Credentials::at(t.path().join("sub/credentials.json"));
        assert_eq!(c.get("r:5000").unwrap(), None);
        let cred = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        c.set("r:5000", cred.clone()).unwrap();
        assert_eq!(c.get("r:5000").unwrap(), Some(cred));
        let mode = fs::metadata(t.path().join("sub/credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(c.remove("r:5000").unwrap());
        assert!(!c.remove("r:5000").unwrap());
        assert_eq!(c.get("r:5000").unwrap(), None);
    }
}
