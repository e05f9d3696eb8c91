//! Both sides of a VNC (RFB 3.8) handshake, up to the client's `ClientInit`. The client
//! side ([`login`]) logs in to QEMU's VNC server with the VM's password: the web console
//! does it on the browser's behalf, so the browser never holds the password. The server
//! side ([`ServerHandshake`], fed bytes as they arrive, whatever carries them) greets a
//! browser: with no authentication (the console's own session is the check) or with
//! the VM's password (the Lumier viewer). After either, the rest of the protocol is
//! relayed untouched.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version both sides speak.
pub const VERSION: &[u8; 12] = b"RFB 003.008\n";

/// RFB security types.
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC: u8 = 2;

/// RFB 3.7 and 3.8 share the handshake this module speaks (3.7 without a reason on
/// failure, which clients of it do not read); 3.3 does not.
fn speaks_38(version: &[u8]) -> bool {
    version == b"RFB 003.008\n" || version == b"RFB 003.007\n"
}

/// The longest failure reason read from a server.
const REASON_LIMIT: u32 = 4096;

/// Why a VNC login failed.
#[derive(Debug, thiserror::Error)]
pub enum VncError {
    #[error("the VNC server speaks {0:?}, not RFB 3.7 or 3.8")]
    Version(String),
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    #[error("the VNC server offers neither no authentication nor a password (types {0:?})")]
    NoSecurity(Vec<u8>),
    #[error("the VNC server refused the password: {0}")]
    Password(String),
    #[error("talking to the VNC server: {0}")]
    Io(#[from] io::Error),
}

/// How long a VNC server has to let a client in.
const LOGIN_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// Logs in to the VNC server on `stream` with `password` (QEMU's VNC authentication
/// uses its first 8 bytes).
pub async fn login<S>(stream: &mut S, password: &str) -> Result<(), VncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(LOGIN_TIME, login_now(stream, password))
        .await
        .map_err(|_| VncError::Io(io::Error::new(io::ErrorKind::TimedOut, "no answer in 20 s")))?
}

async fn login_now<S>(stream: &mut S, password: &str) -> Result<(), VncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).await?;
    if !speaks_38(&version) {
        return Err(VncError::Version(
            String::from_utf8_lossy(&version).trim_end().to_string(),
        ));
    }
    stream.write_all(VERSION).await?;
    let count = stream.read_u8().await?;
    if count == 0 {
        return Err(VncError::Refused(reason(stream).await?));
    }
    let mut types = vec![0u8; count as usize];
    stream.read_exact(&mut types).await?;
    if types.contains(&SECURITY_VNC) {
        stream.write_all(&[SECURITY_VNC]).await?;
        let mut challenge = [0u8; 16];
        stream.read_exact(&mut challenge).await?;
        stream.write_all(&answer(password, &challenge)).await?;
    } else if types.contains(&SECURITY_NONE) {
        stream.write_all(&[SECURITY_NONE]).await?;
    } else {
        return Err(VncError::NoSecurity(types));
    }
    match stream.read_u32().await? {
        0 => Ok(()),
        _ => Err(VncError::Password(reason(stream).await?)),
    }
}

/// A server's reason string (length-prefixed), bounded.
async fn reason<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, VncError> {
    let len = stream.read_u32().await?;
    if len > REASON_LIMIT {
        return Ok(format!("(a reason of {len} bytes, not read)"));
    }
    let mut text = vec![0u8; len as usize];
    stream.read_exact(&mut text).await?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// VNC authentication's answer: the challenge encrypted with DES, keyed by the
/// password's first 8 bytes with each byte's bits reversed (the protocol's quirk).
pub fn answer(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    use des::cipher::{BlockEncrypt, KeyInit};
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.bytes()) {
        *k = b.reverse_bits();
    }
    let cipher = des::Des::new(&key.into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(block.into());
    }
    out
}

/// A password for a VM's VNC server: QEMU uses only 8 characters, so all 8 are random
/// (62 symbols each, about 47 bits), and none needs escaping in a URL or a shell.
pub fn password() -> io::Result<String> {
    const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(8);
    while out.len() < 8 {
        // Rejection sampling: 248 = 4 * 62, so every symbol is equally likely.
        for b in cabin_base::random::bytes::<16>()? {
            if b < 248 && out.len() < 8 {
                out.push(SYMBOLS[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// What the server side asks of a client.
#[derive(Debug, Clone)]
pub enum Offer {
    /// No authentication.
    Open,
    /// VNC authentication with this password.
    Password(String),
}

/// Where a [`ServerHandshake`] stands after some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes (maybe none) and wait for more.
    Continue(Vec<u8>),
    /// Send these bytes; the handshake is over, and `rest` (what the client sent past
    /// it: the start of its `ClientInit`) belongs to the relay.
    Done { send: Vec<u8>, rest: Vec<u8> },
    /// Send these bytes (the refusal) and close: why.
    Refused { send: Vec<u8>, why: String },
}

#[derive(Debug)]
enum Stage {
    Version,
    Choice,
    Answer([u8; 16]),
    Over,
}

/// The server's side of the handshake, without I/O: [`ServerHandshake::greeting`] is
/// sent first, then every received byte goes through [`ServerHandshake::feed`].
#[derive(Debug)]
pub struct ServerHandshake {
    offer: Offer,
    stage: Stage,
    buf: Vec<u8>,
}

fn security_result(ok: bool, why: &str) -> Vec<u8> {
    let mut out = if ok {
        vec![0, 0, 0, 0]
    } else {
        vec![0, 0, 0, 1]
    };
    if !ok {
        out.extend_from_slice(&(why.len() as u32).to_be_bytes());
        out.extend_from_slice(why.as_bytes());
    }
    out
}

impl ServerHandshake {
    pub fn new(offer: Offer) -> ServerHandshake {
        ServerHandshake {
            offer,
            stage: Stage::Version,
            buf: Vec::new(),
        }
    }

    /// The server speaks first: its version.
    pub fn greeting(&self) -> Vec<u8> {
        VERSION.to_vec()
    }

    pub fn feed(&mut self, data: &[u8]) -> Step {
        self.buf.extend_from_slice(data);
        let mut send = Vec::new();
        loop {
            let need = match self.stage {
                Stage::Version => 12,
                Stage::Choice => 1,
                Stage::Answer(_) => 16,
                Stage::Over => return Step::Continue(send),
            };
            if self.buf.len() < need {
                return Step::Continue(send);
            }
            let rest = self.buf.split_off(need);
            let got = std::mem::replace(&mut self.buf, rest);
            match std::mem::replace(&mut self.stage, Stage::Over) {
                Stage::Version => {
                    if !speaks_38(&got) {
                        return Step::Refused {
                            send,
                            why: "the client does not speak RFB 3.7 or 3.8".into(),
                        };
                    }
                    let kind = match self.offer {
                        Offer::Open => SECURITY_NONE,
                        Offer::Password(_) => SECURITY_VNC,
                    };
                    send.extend_from_slice(&[1, kind]);
                    self.stage = Stage::Choice;
                }
                Stage::Choice => match (&self.offer, got[0]) {
                    (Offer::Open, SECURITY_NONE) => {
                        send.extend(security_result(true, ""));
                        return Step::Done {
                            send,
                            rest: std::mem::take(&mut self.buf),
                        };
                    }
                    (Offer::Password(_), SECURITY_VNC) => {
                        let challenge = match cabin_base::random::bytes::<16>() {
                            Ok(c) => c,
                            Err(e) => {
                                return Step::Refused {
                                    send,
                                    why: format!("no random challenge: {e}"),
                                }
                            }
                        };
                        send.extend_from_slice(&challenge);
                        self.stage = Stage::Answer(challenge);
                    }
                    (_, other) => {
                        send.extend(security_result(false, "Unsupported security type"));
                        return Step::Refused {
                            send,
                            why: format!("the client chose security type {other}"),
                        };
                    }
                },
                Stage::Answer(challenge) => {
                    let Offer::Password(password) = &self.offer else {
                        unreachable!("only a password offer asks for an answer");
                    };
                    let mut answer_got = [0u8; 16];
                    answer_got.copy_from_slice(&got);
                    // Compared in time that does not depend on where they differ.
                    let expected = answer(password, &challenge);
                    let same = expected
                        .iter()
                        .zip(answer_got.iter())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0;
                    if !same {
                        send.extend(security_result(false, "Authentication failed"));
                        return Step::Refused {
                            send,
                            why: "a wrong VNC password".into(),
                        };
                    }
                    send.extend(security_result(true, ""));
                    return Step::Done {
                        send,
                        rest: std::mem::take(&mut self.buf),
                    };
                }
                Stage::Over => unreachable!(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_the_challenge_encrypted_with_the_bit_reversed_password() {
        // The end-to-end check against QEMU itself is the console's integration test;
        // here, the rules around the cipher.
        let c = [0u8; 16];
        let a = answer("", &c);
        let b = answer("\0\0\0\0\0\0\0\0", &c);
        assert_eq!(a, b, "a short password is padded with zeros");
        assert_eq!(a[..8], a[8..], "each block alone");
        assert_ne!(answer("abcdefgh", &c), answer("abcdefgi", &c));
        assert_eq!(
            answer("abcdefgh", &c),
            answer("abcdefghXYZ", &c),
            "only the first 8 bytes count"
        );
    }

    #[test]
    fn passwords_are_8_letters_or_digits_and_differ() {
        let a = password().unwrap();
        let b = password().unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn a_login_answers_the_challenge_and_reads_the_refusal() {
        for (password, accepted) in [("wrong", false), ("secret12", true)] {
            one_login(password, accepted).await;
        }
    }

    async fn one_login(password: &str, accepted: bool) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let serve = tokio::spawn(async move {
            server.write_all(VERSION).await.unwrap();
            let mut v = [0u8; 12];
            server.read_exact(&mut v).await.unwrap();
            assert_eq!(&v, VERSION);
            server.write_all(&[1, SECURITY_VNC]).await.unwrap();
            assert_eq!(server.read_u8().await.unwrap(), SECURITY_VNC);
            let challenge = [7u8; 16];
            server.write_all(&challenge).await.unwrap();
            let mut got = [0u8; 16];
            server.read_exact(&mut got).await.unwrap();
            let good = got == answer("secret12", &challenge);
            if good {
                server.write_u32(0).await.unwrap();
            } else {
                server.write_u32(1).await.unwrap();
                server.write_u32(14).await.unwrap();
                server.write_all(b"Authentication").await.unwrap();
            }
        });
        let done = login(&mut client, password).await;
        match (done, accepted) {
            (Ok(()), true) => {}
            (Err(e), false) => assert!(
                e.to_string()
                    .contains("refused the password: Authentication"),
                "{e}"
            ),
            (done, _) => panic!("{password}: {done:?}"),
        }
        serve.await.unwrap();
    }

    /// A client's bytes for the handshake with `password` (None: no authentication),
    /// fed in pieces of `chunk` bytes.
    fn client_run(offer: Offer, password: Option<&str>, chunk: usize) -> (Vec<u8>, Step) {
        let mut h = ServerHandshake::new(offer);
        let mut from_server = h.greeting();
        let mut to_server = VERSION.to_vec();
        to_server.push(if password.is_some() {
            SECURITY_VNC
        } else {
            SECURITY_NONE
        });
        let mut fed = 0;
        // Feed the version and choice; the answer needs the challenge first.
        while fed < to_server.len() {
            let end = (fed + chunk).min(to_server.len());
            let last = h.feed(&to_server[fed..end]);
            fed = end;
            match &last {
                Step::Continue(b) => from_server.extend_from_slice(b),
                Step::Done { send, .. } | Step::Refused { send, .. } => {
                    from_server.extend_from_slice(send);
                    return (from_server, last);
                }
            }
        }
        let challenge: [u8; 16] = from_server[from_server.len() - 16..].try_into().unwrap();
        let mut reply = answer(password.unwrap(), &challenge).to_vec();
        reply.push(1); // the start of ClientInit
        let last = h.feed(&reply);
        if let Step::Done { send, .. } | Step::Refused { send, .. } = &last {
            from_server.extend_from_slice(send);
        }
        (from_server, last)
    }

    #[test]
    fn the_server_side_greets_checks_the_password_and_hands_over_the_rest() {
        let (sent, step) = client_run(Offer::Open, None, 5);
        assert_eq!(&sent[..12], VERSION);
        assert_eq!(&sent[12..], &[1, SECURITY_NONE, 0, 0, 0, 0]);
        assert!(matches!(step, Step::Done { .. }), "{step:?}");

        let (sent, step) = client_run(Offer::Password("Ab3dE6gH".into()), Some("Ab3dE6gH"), 1);
        assert_eq!(&sent[12..14], &[1, SECURITY_VNC]);
        match step {
            Step::Done { send, rest } => {
                assert_eq!(send, [0, 0, 0, 0]);
                assert_eq!(rest, [1], "ClientInit's first byte is the relay's");
            }
            other => panic!("{other:?}"),
        }
        let (sent, step) = client_run(Offer::Password("Ab3dE6gH".into()), Some("wrong"), 64);
        assert!(matches!(step, Step::Refused { .. }), "{step:?}");
        assert!(sent.ends_with(b"Authentication failed"));
        let mut h = ServerHandshake::new(Offer::Open);
        assert!(matches!(
            h.feed(b"GET / HTTP/1.1\r\n"),
            Step::Refused { .. }
        ));
    }
}
