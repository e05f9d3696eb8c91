//! Where a container's root filesystem comes from (a directory or an image in the
//! store), and how the image's defaults combine with the user's options, as docker
//! combines them.

use std::path::PathBuf;

use cabin_image::{image, rootfs, store::Store};

use crate::error::{NoCommand, Notify, RunError};
use cabin_base::Paths;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootSource {
    /// A root filesystem directory on the host.
    Dir(PathBuf),
    /// An image in cabin's store, by name[:tag], digest or id.
    Image(String),
}

/// What an image says to run when the user does not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The image's HEALTHCHECK.
    pub healthcheck: Option<crate::health::HealthCheck>,
}

pub struct ResolvedRoot {
    pub disk: PathBuf,
    /// For --timings: whether the disk was built or found.
    pub note: String,
    pub defaults: ProcessDefaults,
}

/// The root file system `source` names, as a disk; `notify` hears what the user should
/// know on the way (an image being pulled).
pub async fn resolve(
    paths: &Paths,
    source: &RootSource,
    notify: Notify<'_>,
) -> Result<ResolvedRoot, RunError> {
    match source {
        RootSource::Dir(dir) => {
            let img = rootfs::ensure_image(dir, &paths.rootfs_cache())?;
            Ok(ResolvedRoot {
                disk: img.path,
                note: if img.built { "built" } else { "cached" }.into(),
                defaults: ProcessDefaults::default(),
            })
        }
        RootSource::Image(name) => {
            let store = Store::open(paths.image_store()).map_err(image::ImageError::from)?;
            // As with docker, an image that is not here is pulled (Docker Hub for a
            // name without a registry).
            let img = match image::resolve(&store, name) {
                Err(image::ImageError::NotFound(_)) => {
                    notify(&format!("{name} is not here; pulling it"));
                    let creds = cabin_image::credentials::Credentials::at(paths.credentials());
                    let opts =
                        cabin_image::credentials::options_for(name, &creds, Default::default())
                            .map_err(|source| RunError::Io {
                                what: "reading saved credentials".into(),
                                source,
                            })?;
                    cabin_image::pull::pull(&store, name, &opts)
                        .await
                        .map_err(|source| RunError::Pull {
                            name: name.clone(),
                            source,
                        })?
                }
                r => r?,
            };
            let (disk, built) = image::ensure_disk(&store, &img)?;
            let c = img.config.config().clone().unwrap_or_default();
            let healthcheck = image_healthcheck(&store, &img);
            Ok(ResolvedRoot {
                disk,
                note: format!(
                    "image {} {}",
                    img.id(),
                    if built {
                        "unpacked"
                    } else {
                        "cached, no unpacking"
                    }
                ),
                defaults: ProcessDefaults {
                    entrypoint: c.entrypoint().clone().unwrap_or_default(),
                    cmd: c.cmd().clone().unwrap_or_default(),
                    env: c.env().clone().unwrap_or_default(),
                    working_dir: c.working_dir().clone().unwrap_or_default(),
                    user: c.user().clone().unwrap_or_default(),
                    healthcheck,
                },
            })
        }
    }
}

/// The image's HEALTHCHECK: Docker keeps it in its config (`config.Healthcheck`), which
/// the OCI types do not carry, so it is read from the config as stored. A check that
/// cannot be read is no check.
fn image_healthcheck(
    store: &cabin_image::store::Store,
    img: &cabin_image::image::Image,
) -> Option<crate::health::HealthCheck> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Check {
        #[serde(default)]
        test: Vec<String>,
        #[serde(default)]
        interval: i64,
        #[serde(default)]
        timeout: i64,
        #[serde(default)]
        start_period: i64,
        #[serde(default)]
        retries: i64,
    }
    let raw = store
        .read_blob(img.manifest.config().digest().as_ref(), 1 << 20)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let c: Check = serde_json::from_value(v.get("config")?.get("Healthcheck")?.clone()).ok()?;
    crate::health::HealthCheck::from_docker(
        &c.test,
        c.interval,
        c.timeout,
        c.start_period,
        c.retries,
    )
    .ok()
    .flatten()
}

/// [`merge`] of `d` with what container `cfg` asks for.
pub fn merge_spec(
    d: &ProcessDefaults,
    cfg: &crate::ContainerSpec,
) -> Result<(Vec<String>, Vec<String>, String, String), NoCommand> {
    merge(
        d,
        cfg.entrypoint.as_deref(),
        &cfg.args,
        &cfg.env,
        &cfg.cwd,
        &cfg.user,
    )
}

/// The process to run: docker's rules. `--entrypoint` replaces the image's entrypoint
/// and drops its Cmd; a command given by the user replaces the image's Cmd; `-e` adds to
/// and overrides the image's Env; `-w` and `-u` override WorkingDir and User.
pub fn merge(
    d: &ProcessDefaults,
    entrypoint: Option<&[String]>,
    cmd: &[String],
    env: &[String],
    cwd: &str,
    user: &str,
) -> Result<(Vec<String>, Vec<String>, String, String), NoCommand> {
    let (ep, default_cmd): (Vec<String>, &[String]) = match entrypoint {
        Some(e) => (e.iter().filter(|s| !s.is_empty()).cloned().collect(), &[]),
        None => (d.entrypoint.clone(), &d.cmd),
    };
    let mut args = ep;
    args.extend_from_slice(if cmd.is_empty() { default_cmd } else { cmd });
    if args.is_empty() {
        return Err(NoCommand);
    }
    // A variable given again replaces the earlier one (the image's, or an earlier
    // -e): a process reading its environment sees the first of two, not the last.
    let mut all_env: Vec<String> = Vec::new();
    for e in d.env.iter().chain(env) {
        let key = e.split('=').next().unwrap_or_default();
        all_env.retain(|x| x.split('=').next() != Some(key));
        all_env.push(e.clone());
    }
    let cwd = if cwd.is_empty() {
        d.working_dir.clone()
    } else {
        cwd.to_string()
    };
    let user = if user.is_empty() {
        d.user.clone()
    } else {
        user.to_string()
    };
    Ok((args, all_env, cwd, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn an_images_healthcheck_is_read_from_its_stored_config() {
        let t = tempfile::tempdir().unwrap();
        let store = cabin_image::store::Store::open(t.path()).unwrap();
        let stored = |healthcheck: serde_json::Value| {
            let config = serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Cmd": ["sh"], "Healthcheck": healthcheck},
                "rootfs": {"type": "layers", "diff_ids": []},
            });
            let bytes = serde_json::to_vec(&config).unwrap();
            let digest = store.put_bytes(&bytes).unwrap();
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": digest, "size": bytes.len()},
                "layers": [],
            });
            let m = store
                .put_bytes(&serde_json::to_vec(&manifest).unwrap())
                .unwrap();
            cabin_image::image::load(&store, "x", &m).unwrap()
        };
        let img = stored(serde_json::json!({
            "Test": ["CMD-SHELL", "curl -f http://localhost/"], "Interval": 5_000_000_000u64,
            "Retries": 4,
        }));
        let c = image_healthcheck(&store, &img).unwrap();
        assert_eq!(
            c.test,
            crate::health::HealthTest::Shell("curl -f http://localhost/".into())
        );
        assert_eq!((c.interval.as_secs(), c.retries), (5, 4));
        assert_eq!(
            image_healthcheck(&store, &stored(serde_json::json!(null))),
            None
        );
        assert_eq!(
            image_healthcheck(&store, &stored(serde_json::json!({"Test": ["BOGUS"]}))),
            None
        );
    }

    fn image() -> ProcessDefaults {
        ProcessDefaults {
            entrypoint: s(&["/entry"]),
            cmd: s(&["--serve"]),
            env: s(&["PATH=/bin", "MODE=prod"]),
            working_dir: "/app".into(),
            user: "app".into(),
            healthcheck: None,
        }
    }

    #[test]
    fn image_defaults_apply_when_the_user_says_nothing() {
        let (args, env, cwd, user) = merge(&image(), None, &[], &[], "", "").unwrap();
        assert_eq!(args, s(&["/entry", "--serve"]));
        assert_eq!(env, s(&["PATH=/bin", "MODE=prod"]));
        assert_eq!((cwd.as_str(), user.as_str()), ("/app", "app"));
    }

    #[test]
    fn user_command_replaces_cmd_and_keeps_entrypoint() {
        let (args, ..) = merge(&image(), None, &s(&["--debug"]), &[], "", "").unwrap();
        assert_eq!(args, s(&["/entry", "--debug"]));
    }

    #[test]
    fn entrypoint_override_drops_the_image_cmd() {
        let (args, ..) = merge(&image(), Some(&s(&["/bin/sh"])), &[], &[], "", "").unwrap();
        assert_eq!(args, s(&["/bin/sh"]));
        let (args, ..) = merge(&image(), Some(&s(&[""])), &s(&["ls"]), &[], "", "").unwrap();
        assert_eq!(args, s(&["ls"]), "an empty entrypoint clears it");
    }

    #[test]
    fn options_override_env_cwd_user() {
        let (_, env, cwd, user) =
            merge(&image(), None, &[], &s(&["MODE=dev"]), "/tmp", "0:0").unwrap();
        assert_eq!(env, s(&["PATH=/bin", "MODE=dev"]), "replaced, not added");
        assert_eq!((cwd.as_str(), user.as_str()), ("/tmp", "0:0"));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        assert!(merge(&ProcessDefaults::default(), None, &[], &[], "", "").is_err());
    }
}
