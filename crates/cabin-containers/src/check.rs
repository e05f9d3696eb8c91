//! The containers' part of `cabin system check`: records that cannot be read, volumes
//! whose record or disk is missing, and what a killed `volume create` left. A running
//! container's files, and a container whose supervisor died (its record is reconciled
//! when it is next looked at), are not problems.

use std::fmt;
use std::path::PathBuf;

use cabin_base::Paths;

use crate::store::{Store, StoreError};
use crate::volumes::Volumes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerProblem {
    /// A container whose record cannot be read (the store's message says what to do).
    Unreadable { id: String, message: String },
    /// A volume whose record or disk is missing or unreadable.
    DamagedVolume { name: String, reason: String },
    /// Left half made by a `volume create` that is gone.
    Abandoned(PathBuf),
    /// A container directory without its record, left by a create that was killed or
    /// ran out of disk.
    HalfMade(PathBuf),
}

impl fmt::Display for ContainerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerProblem::Unreadable { message, .. } => f.write_str(message),
            ContainerProblem::DamagedVolume { name, reason } => {
                write!(f, "volume {name}: {reason}")
            }
            ContainerProblem::Abandoned(p) => write!(
                f,
                "{} was left half made by a volume create that is gone",
                p.display()
            ),
            ContainerProblem::HalfMade(p) => write!(
                f,
                "{} is a container directory without its record, left by a create that did not finish",
                p.display()
            ),
        }
    }
}

impl ContainerProblem {
    /// What `--repair` does: removes what was half made; containers and volumes are
    /// the user's, so for those it says what to do.
    pub fn repair(&self) -> Result<String, String> {
        match self {
            ContainerProblem::Abandoned(p) | ContainerProblem::HalfMade(p) => {
                Ok(format!("remove {}", p.display()))
            }
            ContainerProblem::Unreadable { id, .. } => Err(format!(
                "nothing (the container is yours): cabin rm -f {id} removes it"
            )),
            ContainerProblem::DamagedVolume { name, .. } => Err(format!(
                "nothing (the volume's data is yours): copy out what you need, then cabin volume rm {name}"
            )),
        }
    }
}

/// How many containers and volumes were looked at, and what is wrong.
pub fn check(paths: &Paths) -> Result<(usize, usize, Vec<ContainerProblem>), StoreError> {
    let store = Store::open(paths)?;
    let ids = store.ids()?;
    let mut problems = Vec::new();
    for id in &ids {
        if let Err(e @ StoreError::Unreadable { .. }) = store.load(id) {
            problems.push(ContainerProblem::Unreadable {
                id: id.clone(),
                message: e.to_string(),
            });
        }
    }
    problems.extend(
        store
            .recordless()?
            .into_iter()
            .map(ContainerProblem::HalfMade),
    );
    let (volumes, damaged, abandoned) = Volumes::open(paths).damage();
    problems.extend(
        damaged
            .into_iter()
            .map(|(name, reason)| ContainerProblem::DamagedVolume { name, reason }),
    );
    problems.extend(abandoned.into_iter().map(ContainerProblem::Abandoned));
    Ok((ids.len(), volumes, problems))
}

/// Carries out the repair of `problem`, if it has one.
pub fn repair(problem: &ContainerProblem) -> std::io::Result<()> {
    match problem {
        ContainerProblem::Abandoned(p) | ContainerProblem::HalfMade(p) => {
            match std::fs::remove_dir_all(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
