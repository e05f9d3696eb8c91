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
                },
            })
        }
    }
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
    let mut all_env = d.env.clone();
    all_env.extend(env.iter().cloned());
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

    fn image() -> ProcessDefaults {
        ProcessDefaults {
            entrypoint: s(&["/entry"]),
            cmd: s(&["--serve"]),
            env: s(&["PATH=/bin", "MODE=prod"]),
            working_dir: "/app".into(),
            user: "app".into(),
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
        assert_eq!(env.last().unwrap(), "MODE=dev");
        assert_eq!((cwd.as_str(), user.as_str()), ("/tmp", "0:0"));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        assert!(merge(&ProcessDefaults::default(), None, &[], &[], "", "").is_err());
    }
}
