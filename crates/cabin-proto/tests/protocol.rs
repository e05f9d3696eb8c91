//! The protocol over a real byte stream (a unix socket pair, as QEMU's virtio-serial
//! port gives the host): multiplexed calls, streaming, bounded messages.

use std::pin::Pin;

use cabin_proto::v1::agent_client::AgentClient;
use cabin_proto::v1::agent_server::{Agent, AgentServer};
use cabin_proto::v1::*;
use hyper_util::rt::TokioIo;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

struct Echo;

type Out = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;

fn unused<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl Agent for Echo {
    async fn hello(&self, r: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            protocol_version: r.into_inner().protocol_version,
            ..Default::default()
        }))
    }
    async fn set_time(&self, _: Request<SetTimeRequest>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn mount(&self, _: Request<MountRequest>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn create_container(
        &self,
        _: Request<CreateContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn start_process(
        &self,
        _: Request<StartProcessRequest>,
    ) -> Result<Response<StartProcessResponse>, Status> {
        unused()
    }
    type ReadOutputStream = Out;
    async fn read_output(&self, r: Request<ProcessRef>) -> Result<Response<Out>, Status> {
        // Streams the process id back three times.
        let id = r.into_inner().process_id.into_bytes();
        let chunks = (0..3).map(move |_| {
            Ok(OutputChunk {
                stream: 0,
                data: id.clone(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
    async fn write_input(
        &self,
        r: Request<Streaming<InputChunk>>,
    ) -> Result<Response<Empty>, Status> {
        let mut s = r.into_inner();
        while let Some(c) = s.next().await {
            c?;
        }
        Ok(Response::new(Empty {}))
    }
    async fn signal(&self, _: Request<SignalRequest>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn resize_tty(&self, _: Request<ResizeTtyRequest>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn wait(&self, _: Request<ProcessRef>) -> Result<Response<ExitStatus>, Status> {
        // Never answers: stands for a process that runs on.
        std::future::pending().await
    }
    async fn sync(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn stats(&self, _: Request<ContainerRef>) -> Result<Response<ContainerStats>, Status> {
        unused()
    }
    async fn processes(&self, _: Request<ContainerRef>) -> Result<Response<ProcessList>, Status> {
        unused()
    }
    async fn set_hosts(&self, _: Request<SetHostsRequest>) -> Result<Response<Empty>, Status> {
        unused()
    }
    type CopyOutStream = Pin<Box<dyn Stream<Item = Result<CopyChunk, Status>> + Send>>;
    async fn copy_out(
        &self,
        _: Request<CopyOutRequest>,
    ) -> Result<Response<Self::CopyOutStream>, Status> {
        unused()
    }
    async fn copy_in(&self, _: Request<Streaming<CopyInChunk>>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn remove_container(&self, _: Request<ContainerRef>) -> Result<Response<Empty>, Status> {
        unused()
    }
    async fn update_resources(
        &self,
        _: Request<UpdateResourcesRequest>,
    ) -> Result<Response<Empty>, Status> {
        unused()
    }
}

async fn connected() -> AgentClient<tonic::transport::Channel> {
    let (host, guest) = tokio::net::UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let incoming = tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok::<_, std::io::Error>(guest)),
            tokio_stream::pending(),
        );
        tonic::transport::Server::builder()
            .add_service(
                AgentServer::new(Echo).max_decoding_message_size(cabin_proto::MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let mut host = Some(host);
    let channel = tonic::transport::Endpoint::from_static("http://agent")
        .connect_with_connector(tower::service_fn(move |_| {
            let h = host.take();
            async move {
                h.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .unwrap();
    AgentClient::new(channel).max_encoding_message_size(4 * cabin_proto::MAX_MESSAGE_BYTES)
}

#[tokio::test]
async fn calls_are_multiplexed_over_one_stream() {
    let client = connected().await;
    // A call that never ends does not block the others on the same connection.
    let mut c1 = client.clone();
    let pending = tokio::spawn(async move { c1.wait(ProcessRef::default()).await });
    let mut c2 = client.clone();
    let hello = c2
        .hello(HelloRequest {
            protocol_version: 7,
            host_time_unix_nanos: 0,
            entropy: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hello.protocol_version, 7);
    let mut out = c2
        .read_output(ProcessRef {
            container_id: "c".into(),
            process_id: "p1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(c) = out.next().await {
        got.extend(c.unwrap().data);
    }
    assert_eq!(got, b"p1p1p1");
    assert!(!pending.is_finished());
    pending.abort();
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let mut client = connected().await;
    let big = InputChunk {
        process: None,
        data: vec![0u8; cabin_proto::MAX_MESSAGE_BYTES + 1],
    };
    let err = client
        .write_input(tokio_stream::iter(vec![big]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    // The connection survives a refused message.
    let small = InputChunk {
        process: None,
        data: vec![1u8; cabin_proto::CHUNK_BYTES],
    };
    client
        .write_input(tokio_stream::iter(vec![small]))
        .await
        .unwrap();
}
