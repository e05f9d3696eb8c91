//! The client side of a VNC (RFB 3.8) handshake with QEMU's VNC server: version,
//! security type and VNC authentication with the VM's password. The web console logs in
//! here on the browser's behalf, so the browser never holds the password; after
//! [`login`] the stream stands just before the client's `ClientInit`, and the rest of
//! the protocol is relayed untouched.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version both sides speak.
pub const VERSION: &[u8; 12] = b"RFB 003.008\n";

/// RFB security types.
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC: u8 = 2;

/// The longest failure reason read from a server.
const REASON_LIMIT: u32 = 4096;

/// Why a VNC login failed.
#[derive(Debug, thiserror::Error)]
pub enum VncError {
    #[error("the VNC server speaks {0:?}, not RFB 3.8")]
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

/// Logs in to the VNC server on `stream` with `password` (QEMU's VNC authentication
/// uses its first 8 bytes).
pub async fn login<S>(stream: &mut S, password: &str) -> Result<(), VncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut version = [0u8; 12];
    stream.read_exact(&mut version).await?;
    if &version[..4] != b"RFB " {
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
        stream.write_all(&response(password, &challenge)).await?;
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
fn response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_the_challenge_encrypted_with_the_bit_reversed_password() {
        // The end-to-end check against QEMU itself is the console's integration test;
        // here, the rules around the cipher.
        let c = [0u8; 16];
        let a = response("", &c);
        let b = response("\0\0\0\0\0\0\0\0", &c);
        assert_eq!(a, b, "a short password is padded with zeros");
        assert_eq!(a[..8], a[8..], "each block alone");
        assert_ne!(response("abcdefgh", &c), response("abcdefgi", &c));
        assert_eq!(
            response("abcdefgh", &c),
            response("abcdefghXYZ", &c),
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
            let mut answer = [0u8; 16];
            server.read_exact(&mut answer).await.unwrap();
            let good = answer == response("secret12", &challenge);
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
}
