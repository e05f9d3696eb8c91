//! Lumier's automation hook: once the guest answers SSH as Lume's conventional account
//! (`lume`/`lume`, which cabin's image VMs have), the shared folder's
//! `lifecycle/on-logon.sh` runs inside the guest with the VNC password and the folder's
//! path in the guest as its arguments (and Lumier's `VNC_PASSWORD`,
//! `SHARED_FOLDER_PATH`, `VNC_DEBUG` in its environment). Its output goes to the
//! container's log. A hook that fails, or a guest that never answers SSH, is reported;
//! the VM keeps running either way.
//!
//! The guest's host key is not checked, as Lumier's `ssh -o StrictHostKeyChecking=no`
//! does not: the VM was made moments ago on the host's own network, and nothing
//! secret is sent beyond Lume's well-known password and the VM's own VNC password.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::ChannelMsg;

/// Lume's conventional account in its VMs (and in the VMs cabin makes from images).
pub const USER: &str = "lume";
pub const PASSWORD: &str = "lume";
/// Where the guest mounts the folders cabin shares with it, one directory each.
const GUEST_SHARES: &str = "/mnt/shared";
/// The hook, relative to the shared folder.
pub const HOOK: &str = "lifecycle/on-logon.sh";
/// How long a booting guest has to answer SSH and accept the login (Lumier tries 20
/// times, 5 s apart; a guest under TCG boots more slowly than a Mac).
const SSH_WAIT: Duration = Duration::from_secs(300);
/// One connection attempt: TCP, the key exchange and the login.
const ATTEMPT: Duration = Duration::from_secs(20);

/// Why the hook did not run to a successful end.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("the guest at {ip} did not accept SSH as {USER} within {secs} s (last: {last}); is an SSH server installed and enabled in the VM image?")]
    NoSsh { ip: IpAddr, secs: u64, last: String },
    #[error("the guest's SSH server refused the password of {USER}: the account's password was changed, or the image lacks Lume's account")]
    Refused,
    #[error("SSH to {ip}: {source}")]
    Ssh { ip: IpAddr, source: russh::Error },
    #[error("the hook failed with exit code {0}; the VM keeps running")]
    Failed(u32),
    #[error("the hook ended without an exit code (killed by a signal, or the connection dropped); the VM keeps running")]
    NoExit,
}

/// What the container sees of the hook before it runs: whether there is one.
pub enum Presence {
    /// No folder is shared: nothing to look for.
    NoShare,
    /// HOST_SHARED_PATH names a folder but `/shared` is not mounted in the container.
    NotMounted,
    /// The shared folder has no `lifecycle/on-logon.sh`.
    Absent,
    Present,
}

/// Looks for the hook in the container's view of the shared folder (`/shared`).
pub fn presence(shared: Option<&str>, mount: &Path) -> Presence {
    if shared.is_none() {
        Presence::NoShare
    } else if !mount.is_dir() {
        Presence::NotMounted
    } else if mount.join(HOOK).is_file() {
        Presence::Present
    } else {
        Presence::Absent
    }
}

struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// One attempt to connect and log in; `Ok(None)` when the password was refused.
async fn login(ip: IpAddr) -> Result<Option<client::Handle<AnyHostKey>>, russh::Error> {
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        preferred: russh::Preferred {
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut session = client::connect(config, (ip, 22), AnyHostKey).await?;
    let auth = session.authenticate_password(USER, PASSWORD).await?;
    Ok(auth.success().then_some(session))
}

/// Waits for the guest to accept the login, then runs the hook; its exit code 0, or
/// why not. The hook's output is written to `out` as it comes.
pub async fn run(
    ip: IpAddr,
    vnc_password: &str,
    debug: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), HookError> {
    let deadline = Instant::now() + SSH_WAIT;
    let session = loop {
        let last = match tokio::time::timeout(ATTEMPT, login(ip)).await {
            Ok(Ok(Some(session))) => break session,
            Ok(Ok(None)) => return Err(HookError::Refused),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no login within {} s", ATTEMPT.as_secs()),
        };
        if Instant::now() > deadline {
            return Err(HookError::NoSsh {
                ip,
                secs: SSH_WAIT.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let ssh = |source| HookError::Ssh { ip, source };
    let mut channel = session.channel_open_session().await.map_err(ssh)?;
    channel
        .exec(true, remote_script(vnc_password, debug))
        .await
        .map_err(ssh)?;
    let mut code = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                let _ = out.write_all(&data);
                let _ = out.flush();
            }
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            _ => {}
        }
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    match code {
        Some(0) => Ok(()),
        Some(n) => Err(HookError::Failed(n)),
        None => Err(HookError::NoExit),
    }
}

/// `'text'` for the guest's shell, whatever the text holds.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The command the guest's shell runs: it waits a little for the shared folder's mount
/// (the SSH server may answer before it), then runs the hook as Lumier does, directly
/// when it is executable and with `sh` otherwise.
fn remote_script(vnc_password: &str, debug: bool) -> String {
    let pw = quote(vnc_password);
    format!(
        r#"export VNC_PASSWORD={pw} VNC_DEBUG={debug}
i=0
while :; do
  for d in {GUEST_SHARES}/*; do
    f="$d/{HOOK}"
    [ -f "$f" ] || continue
    export SHARED_FOLDER_PATH="$d"
    echo "[VM] Running $f"
    if [ -x "$f" ]; then "$f" {pw} "$d" 2>&1; else sh "$f" {pw} "$d" 2>&1; fi
    exit $?
  done
  i=$((i + 1))
  [ $i -lt 30 ] || break
  sleep 1
done
echo "[VM] no {HOOK} under {GUEST_SHARES}: the shared folder is not mounted in the guest" >&2
exit 127
"#,
        debug = u8::from(debug)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_any_password_one_word_for_the_guest_shell() {
        assert_eq!(quote("Ab3dE6gH"), "'Ab3dE6gH'");
        assert_eq!(quote("it's $x"), r"'it'\''s $x'");
    }

    #[test]
    fn the_remote_script_passes_the_password_and_the_folder_as_arguments() {
        let s = remote_script("pw'1", false);
        assert!(s.contains(r#""$f" 'pw'\''1' "$d""#), "{s}");
        assert!(s.contains("VNC_DEBUG=0"), "{s}");
        assert!(s.contains("/mnt/shared/*"), "{s}");
    }

    #[test]
    fn the_hook_is_looked_for_only_in_a_mounted_shared_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(presence(None, dir.path()), Presence::NoShare));
        assert!(matches!(
            presence(Some("/x"), &dir.path().join("missing")),
            Presence::NotMounted
        ));
        assert!(matches!(presence(Some("/x"), dir.path()), Presence::Absent));
        std::fs::create_dir(dir.path().join("lifecycle")).unwrap();
        std::fs::write(dir.path().join(HOOK), "true\n").unwrap();
        assert!(matches!(
            presence(Some("/x"), dir.path()),
            Presence::Present
        ));
    }
}
