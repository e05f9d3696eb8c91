//! The options that describe a container's process, shared by `cabin run` and
//! `cabin exec`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ProcessArgs {
    /// Keep stdin open and connect it to the process.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE; with run, KEY passes the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container (created by run if missing).
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: name, uid, name:group or uid:gid, from the image's /etc/passwd.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
}
