//! `cabin cp`: files between the host and a running container, as docker cp copies
//! them. The work is cabin-containers' (copy.rs); this parses the two operands.

use cabin_containers::copy::{HostDest, HostSource};
use cabin_containers::{Containers, Host};
use clap::Args;

use crate::report::Failure;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// When the source is a symbolic link, copy what it points to.
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:PATH, a host path, or - for a tar archive on standard input.
    src: String,
    /// CONTAINER:PATH, a host path, or - for a tar archive on standard output.
    dest: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Operand {
    Host(String),
    Container { name: String, path: String },
}

/// docker's rule: an absolute path, or one with no ':' or starting with '.', is the
/// host's (so ./a:b is a host file); otherwise NAME:PATH. A container path is relative
/// to the container's root.
fn operand(arg: &str) -> Operand {
    match arg.split_once(':') {
        Some((name, path)) if !arg.starts_with('/') && !name.starts_with('.') => {
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            Operand::Container {
                name: name.to_string(),
                path,
            }
        }
        _ => Operand::Host(arg.to_string()),
    }
}

/// A source path ending in `/.` (or `.`) means the directory's contents; returns the
/// path without it.
fn contents_only(path: &str) -> (String, bool) {
    if path == "." || path == "/" {
        return (path.to_string(), true);
    }
    match path.strip_suffix("/.") {
        Some("") => ("/".to_string(), true),
        Some(p) => (p.to_string(), true),
        None => (path.to_string(), false),
    }
}

/// `cabin cp`.
pub async fn cp(host: &Host, args: CpArgs) -> Result<i32, Failure> {
    let (src, dest) = (operand(&args.src), operand(&args.dest));
    let containers = Containers::open(host)?;
    match (src, dest) {
        (Operand::Container { .. }, Operand::Container { .. }) => {
            Err("copying between containers is not supported".into())
        }
        (Operand::Host(_), Operand::Host(_)) => {
            Err("one of the two paths must be in a container: CONTAINER:PATH".into())
        }
        (Operand::Container { name, path }, Operand::Host(to)) => {
            let (path, contents_only) = contents_only(&path);
            let dest = if to == "-" {
                HostDest::Archive(Box::new(std::io::stdout()))
            } else {
                HostDest::Path {
                    path: to.into(),
                    contents_only,
                }
            };
            let copied = containers
                .copy_out(&name, &path, args.follow_link, dest)
                .await?;
            if copied.skipped_special > 0 {
                eprintln!(
                    "cabin: skipped {} device nodes and pipes (they are not copied to the host)",
                    copied.skipped_special
                );
            }
            Ok(0)
        }
        (Operand::Host(from), Operand::Container { name, path }) => {
            let source = if from == "-" {
                HostSource::Archive(Box::new(std::io::stdin()))
            } else {
                let (from, contents_only) = contents_only(&from);
                HostSource::Path {
                    path: from.into(),
                    contents_only,
                    follow_link: args.follow_link,
                }
            };
            containers.copy_in(&name, source, &path).await?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_split_as_docker_splits_them() {
        let c = |n: &str, p: &str| Operand::Container {
            name: n.into(),
            path: p.into(),
        };
        assert_eq!(operand("web:/etc/hosts"), c("web", "/etc/hosts"));
        assert_eq!(operand("web:etc"), c("web", "/etc"));
        assert_eq!(operand("web:"), c("web", "/"));
        assert_eq!(operand("/tmp/a:b"), Operand::Host("/tmp/a:b".into()));
        assert_eq!(operand("./a:b"), Operand::Host("./a:b".into()));
        assert_eq!(operand("file"), Operand::Host("file".into()));
        assert_eq!(operand("-"), Operand::Host("-".into()));
    }

    #[test]
    fn a_trailing_dot_means_the_contents() {
        assert_eq!(contents_only("/etc/."), ("/etc".into(), true));
        assert_eq!(contents_only("/."), ("/".into(), true));
        assert_eq!(contents_only("/"), ("/".into(), true));
        assert_eq!(contents_only("."), (".".into(), true));
        assert_eq!(contents_only("dir"), ("dir".into(), false));
        assert_eq!(contents_only("dir/"), ("dir/".into(), false));
    }
}
