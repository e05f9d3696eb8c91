//! How starting or running a container's VM fails ([`RunError`], with docker's exit
//! codes), and where what the user should hear on the way goes ([`Notify`]).

use cabin_vmm::console::ConsoleExcerpt;

use cabin_image::rootfs;

use crate::assets;

/// Neither the user nor the image says what to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no command given, and the image names none (no Entrypoint or Cmd)")]
pub struct NoCommand;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run cannot be set up as asked (and what to do about it).
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] crate::volumes::MountSpecError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error(transparent)]
    Publish(#[from] cabin_net::ports::PublishError),
    #[error(transparent)]
    Bridge(#[from] cabin_net::bridge::BridgeError),
    #[error(transparent)]
    Network(#[from] cabin_net::networks::NetworkError),
    #[error(transparent)]
    NoCommand(#[from] NoCommand),
    #[error("no such image: {name} (not here, and pulling it failed: {source})")]
    Pull {
        name: String,
        source: cabin_image::image::ImageError,
    },
    #[error(transparent)]
    Assets(#[from] assets::AssetError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Image(#[from] cabin_image::image::ImageError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotExecutable(String),
    #[error("{message}{console}")]
    Vm {
        message: String,
        console: ConsoleExcerpt,
    },
    /// The VM did not come up in time: it may have been only slow (a loaded host).
    #[error("{message}{console}")]
    VmTimeout {
        message: String,
        console: ConsoleExcerpt,
    },
    #[error("{0}")]
    Agent(String),
    #[error("{0}")]
    Deadline(String),
}

/// Where what a user should hear on the way goes (the CLI prints it, a supervisor
/// writes it to the container's log).
pub type Notify<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

impl RunError {
    /// The exit status `cabin run` reports for this error, as docker does.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::NotFound(_) => cabin_proto::EXIT_NOT_FOUND,
            RunError::NotExecutable(_) => cabin_proto::EXIT_NOT_EXECUTABLE,
            _ => 125,
        }
    }
}

/// What a failed agent call means, with docker's exit codes for a process that could
/// not start (see [`RunError::exit_code`]).
impl From<tonic::Status> for RunError {
    fn from(e: tonic::Status) -> RunError {
        match e.code() {
            tonic::Code::DeadlineExceeded => RunError::Deadline(e.message().to_string()),
            tonic::Code::NotFound => RunError::NotFound(e.message().to_string()),
            tonic::Code::PermissionDenied => RunError::NotExecutable(e.message().to_string()),
            _ => RunError::Agent(e.message().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_docker_exit_codes() {
        assert_eq!(RunError::NotFound("x".into()).exit_code(), 127);
        assert_eq!(RunError::NotExecutable("x".into()).exit_code(), 126);
        assert_eq!(RunError::Setup("x".into()).exit_code(), 125);
    }

    #[test]
    fn vm_errors_carry_the_console_tail() {
        let e = RunError::Vm {
            message: "boom".into(),
            console: ConsoleExcerpt::of("a\nKernel panic - not syncing: x\nCall Trace:\n"),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("boom\nthe guest kernel panicked: Kernel panic - not syncing: x\nlast lines of the guest console:\n  a\n"),
            "{s}"
        );
    }
}
