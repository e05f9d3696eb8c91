//! The console's terminal protocol on a websocket, in binary messages whose first byte
//! says what follows (as ttyd frames it): from the browser `0` input bytes and `1` a
//! window size as JSON `{"cols":N,"rows":M}`; to the browser `0` output bytes and `2` a
//! status line (how the process ended, why the terminal closed).

use axum::body::Bytes;
use axum::extract::ws::Message;
use serde::Deserialize;

/// The largest message a browser may send to a terminal or the screen.
pub(crate) const MESSAGE_LIMIT: usize = 256 << 10;

/// What a browser sent to a terminal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FromBrowser {
    Input(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    /// The browser closed the socket (or it broke).
    Closed,
    /// Anything else: ignored.
    Other,
}

#[derive(Deserialize)]
struct Size {
    cols: u16,
    rows: u16,
}

pub(crate) fn parse(msg: Option<Result<Message, axum::Error>>) -> FromBrowser {
    let data = match msg {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return FromBrowser::Closed,
        Some(Ok(Message::Binary(b))) => b,
        Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_str().as_bytes()),
        Some(Ok(_)) => return FromBrowser::Other,
    };
    match data.split_first() {
        Some((b'0', rest)) => FromBrowser::Input(rest.to_vec()),
        Some((b'1', rest)) => match serde_json::from_slice::<Size>(rest) {
            Ok(s) if s.rows > 0 && s.cols > 0 => FromBrowser::Resize {
                rows: s.rows.min(1000),
                cols: s.cols.min(1000),
            },
            _ => FromBrowser::Other,
        },
        _ => FromBrowser::Other,
    }
}

pub(crate) fn output(data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(b'0');
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

pub(crate) fn status(text: &str) -> Message {
    let mut m = Vec::with_capacity(text.len() + 1);
    m.push(b'2');
    m.extend_from_slice(text.as_bytes());
    Message::Binary(m.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(b: &[u8]) -> Option<Result<Message, axum::Error>> {
        Some(Ok(Message::Binary(Bytes::copy_from_slice(b))))
    }

    #[test]
    fn browser_messages_are_input_sizes_or_ignored() {
        assert_eq!(parse(bin(b"0ls\r")), FromBrowser::Input(b"ls\r".to_vec()));
        assert_eq!(
            parse(bin(br#"1{"cols":120,"rows":40}"#)),
            FromBrowser::Resize {
                rows: 40,
                cols: 120
            }
        );
        assert_eq!(parse(bin(br#"1{"cols":0,"rows":40}"#)), FromBrowser::Other);
        assert_eq!(parse(bin(b"1not json")), FromBrowser::Other);
        assert_eq!(parse(bin(b"")), FromBrowser::Other);
        assert_eq!(parse(None), FromBrowser::Closed);
        assert_eq!(output(b"hi"), Message::Binary(Bytes::from_static(b"0hi")));
    }
}
