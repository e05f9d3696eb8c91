//! The host side of the agent protocol: a gRPC client over the VM's agent socket.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cabin_proto::v1::agent_client::AgentClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Agent = AgentClient<Channel>;

/// A client for the agent behind `socket`. The connection is made on the first call, so
/// a guest still booting simply answers later.
pub fn connect(socket: PathBuf) -> Agent {
    client(channel(socket))
}

/// The connection to the agent behind `socket` (made on the first call), which
/// [`client`]s share.
pub fn channel(socket: PathBuf) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
    });
    Endpoint::from_static("http://cabin-agent").connect_with_connector_lazy(connector)
}

/// A client of the agent on `channel`.
pub fn client(channel: Channel) -> Agent {
    AgentClient::new(channel)
        .max_decoding_message_size(cabin_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(cabin_proto::MAX_MESSAGE_BYTES)
}

/// A process's stdin: bytes sent into the returned channel reach the process in order;
/// dropping the sender ends its input (end of file). The returned task finishes once
/// the guest has taken everything.
pub fn stdin_writer(
    agent: &Agent,
    process: cabin_proto::v1::ProcessRef,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<()>,
) {
    use cabin_proto::v1::InputChunk;
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    // The stream's first message names the process; the rest carry data.
    let first = tokio_stream::once(InputChunk {
        process: Some(process),
        data: Vec::new(),
    });
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(|data| InputChunk {
        process: None,
        data,
    });
    let mut a = agent.clone();
    let task = tokio::spawn(async move {
        let _ = a.write_input(first.chain(rest)).await;
    });
    (tx, task)
}

/// Runs one agent call under a deadline; a guest that stops answering is an error, not a
/// hang.
pub async fn call<T>(
    what: &str,
    deadline: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Err(status)) if std::error::Error::source(&status).is_some() => {
            // Not an answer of the guest's but the channel failing under it (garbage,
            // a frame too large, a hang-up): say so, with the transport's own reasons.
            let mut detail = status.message().to_string();
            let mut last = detail.clone();
            let mut source = std::error::Error::source(&status);
            while let Some(e) = source {
                // Layers often repeat their inner error's words: say each once.
                let text = e.to_string();
                if text != last {
                    detail = format!("{detail}: {text}");
                    last = text;
                }
                source = e.source();
            }
            Err(tonic::Status::new(
                status.code(),
                format!("the guest agent's channel failed during {what}, not in cabin's protocol ({detail})"),
            ))
        }
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the guest agent did not answer {what} within {} s",
            deadline.as_secs_f64()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_proto::v1::HelloRequest;

    #[tokio::test]
    async fn a_guest_that_accepts_but_never_answers_hits_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // Accepts the connection and holds it without a word, like a hung guest.
        let hold = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(conn);
        });
        let mut agent = connect(path);
        let start = std::time::Instant::now();
        let err = call(
            "Hello",
            Duration::from_millis(300),
            agent.hello(HelloRequest::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            err.message(),
            "the guest agent did not answer Hello within 0.3 s"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        hold.abort();
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_hang() {
        let mut agent = connect("/nonexistent/agent.sock".into());
        let err = call(
            "Hello",
            Duration::from_secs(5),
            agent.hello(HelloRequest::default()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
}
