//! `GET /events`: what happens to containers (created, started, died, destroyed, as
//! the store's events journal tells it, whoever made it happen: this API, the CLI, a
//! restart policy) and to images (pulled, tagged, removed, as this server does
//! it), in Docker's event shape, streamed; the recent ones are kept for `since`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use cabin_base::time::now_unix_nanos;
use cabin_containers::events::{Action, Event};
use cabin_containers::{ContainerError, Containers};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::request::{filters, labels_match, Query};

/// Events kept for clients that ask for the past (`since`).
const KEPT: usize = 1024;
/// How often the store is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// One event as Docker writes it, with its order and time.
#[derive(Debug, Clone)]
struct Published {
    seq: u64,
    time_nanos: u64,
    value: Value,
}

/// The events of this server: live to the clients following them, the recent ones kept.
pub struct Events {
    live: broadcast::Sender<Published>,
    kept: Mutex<(VecDeque<Published>, u64)>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            live: broadcast::channel(KEPT).0,
            kept: Mutex::new((VecDeque::new(), 0)),
        }
    }
}

impl Events {
    fn publish(&self, time_nanos: u64, mut value: Value) {
        value["time"] = json!(time_nanos / 1_000_000_000);
        value["timeNano"] = json!(time_nanos);
        value["scope"] = json!("local");
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.1 += 1;
        let p = Published {
            seq: kept.1,
            time_nanos,
            value,
        };
        if kept.0.len() == KEPT {
            kept.0.pop_front();
        }
        kept.0.push_back(p.clone());
        let _ = self.live.send(p);
    }

    /// An image event (`pull`, `tag`, `untag`, `delete`) of image `name`.
    pub fn image(&self, action: &str, name: &str) {
        self.publish(
            now_unix_nanos(),
            json!({
                "status": action, "id": name, "Type": "image", "Action": action,
                "Actor": {"ID": name, "Attributes": {"name": name}},
            }),
        );
    }

    fn container(&self, e: &Event) {
        let mut attributes = Map::new();
        for (k, v) in &e.labels {
            attributes.insert(k.clone(), json!(v));
        }
        attributes.insert("image".into(), json!(e.image));
        attributes.insert("name".into(), json!(e.name));
        match e.action {
            Action::Die(code) => {
                attributes.insert("exitCode".into(), json!(code.to_string()));
            }
            Action::Kill(signal) => {
                attributes.insert("signal".into(), json!(signal.to_string()));
            }
            _ => {}
        }
        let action = e.action.as_str();
        self.publish(
            e.time_nanos,
            json!({
                "status": action, "id": e.id, "from": e.image, "Type": "container",
                "Action": action, "Actor": {"ID": e.id, "Attributes": attributes},
            }),
        );
    }
}

/// Follows the containers' events journal for the server's lifetime, publishing what
/// happens. Opened before the server answers: nothing done through it is missed.
pub fn watch(containers: &Containers, events: Arc<Events>) -> Result<(), ContainerError> {
    let mut watcher = containers.events()?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            // A read that failed is tried again at the next look, from where it was.
            if let Ok(changes) = watcher.changes() {
                for e in &changes {
                    events.container(e);
                }
            }
        }
    });
    Ok(())
}

/// Whether `v` passes Docker's event filters.
fn wanted(v: &Value, f: &std::collections::BTreeMap<String, Vec<String>>) -> bool {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    let attr = |k: &str| v["Actor"]["Attributes"][k].as_str().unwrap_or("");
    f.iter().all(|(key, values)| {
        if key == "label" {
            return labels_match(values, |k| v["Actor"]["Attributes"][k].as_str());
        }
        values.iter().any(|want| match key.as_str() {
            "type" => s("Type") == want,
            // Docker's loose match: `health_status` is every `health_status: ...`.
            "event" => s("Action") == want || s("Action").split(':').next() == Some(want.as_str()),
            "container" => {
                s("Type") == "container"
                    && (s("id").starts_with(want.as_str()) || attr("name") == want)
            }
            "image" => attr("image") == want || (s("Type") == "image" && s("id") == want),
            _ => true,
        })
    })
}

/// `GET /events[?since=&until=&filters=]`: the kept events from `since`, then the live
/// ones, until `until` (forever without it).
pub async fn stream(events: &Events, q: &Query) -> Result<Response, ApiError> {
    let f = filters(q)?;
    for key in f.keys() {
        if !["type", "event", "container", "image", "label"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid filter {key:?} (cabin filters events on type, event, container, image and label)"
            )));
        }
    }
    let since = q.instant("since")?;
    let until = q.instant("until")?;
    // Subscribed before the kept ones are read: nothing falls between the two.
    let mut live = events.live.subscribe();
    let past: Vec<Published> = match since {
        None => Vec::new(),
        Some(t) => {
            let kept = events.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.0
                .iter()
                .filter(|p| p.time_nanos >= t)
                .cloned()
                .collect()
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let line = |p: &Published| Ok(Bytes::from(format!("{}\n", p.value)));
    tokio::spawn(async move {
        let mut last = 0;
        for p in &past {
            if until.is_some_and(|u| p.time_nanos > u) {
                return;
            }
            last = p.seq;
            if wanted(&p.value, &f) && tx.send(line(p)).await.is_err() {
                return;
            }
        }
        let deadline = async {
            match until {
                Some(u) => {
                    let left = u.saturating_sub(now_unix_nanos());
                    tokio::time::sleep(Duration::from_nanos(left)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                got = live.recv() => match got {
                    Ok(p) if p.seq > last => {
                        last = p.seq;
                        if wanted(&p.value, &f) && tx.send(line(&p)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_pick_events_by_type_action_container_and_label() {
        let e = Events::default();
        e.container(&Event {
            action: Action::Die(3),
            time_nanos: 5_000_000_000,
            id: "abcdef".into(),
            name: "web".into(),
            image: "local/bb".into(),
            labels: vec![("tier".into(), "front".into())],
        });
        let v = e.kept.lock().unwrap().0[0].value.clone();
        assert_eq!(v["Action"], "die");
        assert_eq!(v["Actor"]["Attributes"]["exitCode"], "3");
        assert_eq!(v["time"], 5);
        let f = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect()
        };
        assert!(wanted(&v, &f(&[("type", "container"), ("event", "die")])));
        assert!(wanted(&v, &f(&[("container", "web")])));
        assert!(wanted(&v, &f(&[("container", "abc")])));
        assert!(wanted(&v, &f(&[("label", "tier=front")])));
        assert!(wanted(&v, &f(&[("image", "local/bb")])));
        assert!(!wanted(&v, &f(&[("event", "start")])));
        assert!(!wanted(&v, &f(&[("type", "image")])));
        assert!(!wanted(&v, &f(&[("label", "tier=back")])));
    }

    #[test]
    fn the_kept_events_are_bounded() {
        let e = Events::default();
        for i in 0..(KEPT + 10) {
            e.image("pull", &format!("i{i}"));
        }
        let kept = e.kept.lock().unwrap();
        assert_eq!(kept.0.len(), KEPT);
        assert_eq!(kept.0[0].value["id"], "i10");
    }
}
