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
    /// Set an environment variable (KEY=VALUE; KEY alone passes the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container (created by run if missing).
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: name, uid, name:group or uid:gid, from the image's /etc/passwd.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
}

/// Environment entries as docker takes them: KEY=VALUE as it is, KEY alone with the
/// host's value (and left out when the host has none).
pub fn resolve_env(entries: impl IntoIterator<Item = String>) -> Vec<String> {
    entries
        .into_iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e)
            } else {
                std::env::var(&e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_key_takes_the_hosts_value_or_nothing() {
        let got = resolve_env([
            "A=1".to_string(),
            "PATH".into(),
            "CABIN_TEST_SURELY_UNSET_VARIABLE".into(),
        ]);
        assert_eq!(got[0], "A=1");
        assert_eq!(got[1], format!("PATH={}", std::env::var("PATH").unwrap()));
        assert_eq!(got.len(), 2);
    }
}
