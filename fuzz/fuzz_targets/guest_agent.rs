//! What the host reads from a guest and from a container's supervisor: each agent
//! reply a guest can send (decoded as the host's gRPC client decodes it, then turned
//! into what cabin reports: exit codes, `top`'s processes, `stats`), and the
//! supervisor's control stream (frames and reply lines) read to its end. The first
//! byte picks the message type; the rest is its bytes.
#![no_main]

use cabin_containers::control::{self, Incoming, Process, Stats};
use cabin_containers::process::exit_code;
use cabin_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 9 {
        0 => {
            if let Ok(s) = v1::ExitStatus::decode(bytes) {
                let _ = exit_code(&s);
            }
        }
        1 => {
            if let Ok(list) = v1::ProcessList::decode(bytes) {
                for p in Process::from_guest(list, u64::MAX / 2) {
                    let _ = serde_json::to_string(&p);
                }
            }
        }
        2 => {
            if let Ok(st) = v1::ContainerStats::decode(bytes) {
                let _ = Stats::from(st);
            }
        }
        3 => {
            let _ = v1::HelloResponse::decode(bytes);
        }
        4 => {
            let _ = v1::StartProcessResponse::decode(bytes);
        }
        5 => {
            let _ = v1::OutputChunk::decode(bytes);
        }
        6 => {
            let _ = v1::CopyChunk::decode(bytes);
        }
        _ => {
            // The supervisor's stream, frame after frame, until it ends or is refused.
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut r = bytes;
                while let Ok(Incoming::Frame(_)) = control::read_frame(&mut r).await {}
            });
        }
    }
});
