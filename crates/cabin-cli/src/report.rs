//! How the CLI reports: one mapping from a failure to an exit code, the formats it
//! prints in, and the log lines of Lume's commands.
//!
//! Exit codes follow docker's CLI. Commands about a container's process (`run`,
//! `create`, `start`, `restart`, `exec`, `stats`) exit 125 when cabin fails, so that
//! cabin's failures never pass for the process's own status (and 126 or 127 when the
//! command is not executable or not found, as the shell does); every other command
//! exits 1.

use std::fmt::Display;

/// Which convention a command follows when cabin fails (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Process,
    Admin,
}

impl Family {
    fn code(self) -> i32 {
        match self {
            Family::Process => 125,
            Family::Admin => 1,
        }
    }
}

/// A command's failure: what to tell the user, and the exit code the failure itself
/// calls for, if any (a command not found: 127).
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: Option<i32>,
}

impl Failure {
    pub fn new(message: impl Display) -> Failure {
        Failure {
            message: message.to_string(),
            code: None,
        }
    }
}

impl From<cabin_containers::ContainerError> for Failure {
    fn from(e: cabin_containers::ContainerError) -> Failure {
        Failure {
            code: e.exec_code(),
            message: e.to_string(),
        }
    }
}

impl From<cabin_containers::RunError> for Failure {
    fn from(e: cabin_containers::RunError) -> Failure {
        let code = e.exit_code();
        Failure {
            message: e.to_string(),
            code: (code != 125).then_some(code),
        }
    }
}

macro_rules! plain_failures {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::new(e)
            }
        })*
    };
}

plain_failures!(
    String,
    cabin_console::ConsoleError,
    &str,
    std::io::Error,
    cabin_containers::store::StoreError,
    cabin_containers::spec::RestartPolicyError,
    cabin_containers::volumes::VolumeError,
    cabin_containers::volumes::MountSpecError,
    cabin_net::ports::PublishError,
    cabin_net::mode::NetworkModeError,
    cabin_net::networks::NetworkError,
    cabin_base::sizes::SizeError,
    cabin_base::time::DurationError,
    cabin_machines::store::VmError,
    cabin_machines::settings::SettingsError,
    cabin_image::image::ImageError,
    cabin_image::store::StoreError,
);

/// Says what failed and gives the exit code for it: the one mapping of the CLI.
pub fn exit_code(family: Family, failure: Failure) -> i32 {
    eprintln!("cabin: {}", failure.message);
    if let Some(hint) = full_disk_hint(&failure.message) {
        eprintln!("cabin: {hint}");
    }
    failure.code.unwrap_or(family.code())
}

/// What to do about a full disk, when the message does not say it already.
fn full_disk_hint(message: &str) -> Option<&'static str> {
    let full =
        message.contains("No space left on device") || message.contains("Disk quota exceeded");
    let said = ["run the same command again", "make room", "free some space"]
        .iter()
        .any(|s| message.contains(s));
    (full && !said).then_some(
        "a disk is full: make room on it and run the same command again (on the disk of cabin's data: cabin system df shows what cabin holds; image, container and volume prune remove what nothing uses)",
    )
}

/// What a command's result becomes: its own exit code, or its failure's.
pub fn finish(family: Family, result: Result<i32, Failure>) -> i32 {
    result.unwrap_or_else(|f| exit_code(family, f))
}

/// What `run -d` and `start` print for a container they started: its ID (also when it
/// already ended, as docker does), the reason when cabin or its VM ended it, and an
/// exit code of 125 or more only when the start itself failed.
pub fn started(id: &str, started: cabin_containers::containers::Started) -> Result<i32, Failure> {
    use cabin_containers::containers::Started;
    use cabin_containers::store::Status;
    println!("{id}");
    let (code, reason) = match started {
        Started::Exited(r) => match r.status {
            Status::Exited { code, reason, .. } => (code, reason),
            _ => (0, None),
        },
        Started::Removed(Some(exit)) => (exit.code, exit.reason),
        Started::Running(_) | Started::Removed(None) => (0, None),
    };
    if let Some(reason) = reason {
        eprintln!("cabin: {reason}");
    }
    Ok(if code >= 125 { code } else { 0 })
}

/// Output formats of listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Table,
    Json,
}

/// Output formats of details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextFormat {
    Text,
    Json,
}

/// Lume's log line: `[<ISO 8601>] INFO: <msg> k=v`.
pub fn log_info(msg: &str) {
    println!("[{}] INFO: {msg}", cabin_base::time::now_rfc3339());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_gets_what_to_do_once() {
        assert!(full_disk_hint("writing x: No space left on device (os error 28)").is_some());
        assert!(full_disk_hint("No space left on device: run the same command again").is_none());
        assert!(full_disk_hint("no such container: x").is_none());
    }

    #[test]
    fn failures_exit_with_their_familys_code_unless_they_have_their_own() {
        assert_eq!(exit_code(Family::Process, Failure::new("x")), 125);
        assert_eq!(exit_code(Family::Admin, Failure::new("x")), 1);
        let not_found: Failure = cabin_containers::RunError::NotFound("x".into()).into();
        assert_eq!(exit_code(Family::Process, not_found), 127);
        let setup: Failure = cabin_containers::RunError::Setup("x".into()).into();
        assert_eq!(exit_code(Family::Process, setup), 125);
    }
}
