//! The server's state (what it read at start-up, its log, the starts and pulls it is
//! seeing through) and a request as a handler sees it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cabin_base::sync::Locked;
use cabin_base::Host;
use cabin_image::registry::Progress;
use cabin_machines::settings::Settings;
use cabin_vmm::AccelRequest;

use crate::log::Log;
use crate::wire::ApiError;

pub struct App {
    /// What the server read of its environment at start-up.
    pub host: Host,
    /// The accelerator VMs started through the API ask for.
    pub accel: AccelRequest,
    pub log: std::sync::Arc<Log>,
    /// Serialises this server's read-change-write of the settings file.
    settings_lock: Mutex<()>,
    /// Pulls started with `POST /lume/pull/start`, by VM name.
    pub pulls: Pulls,
}

impl App {
    pub fn new(host: Host, accel: AccelRequest) -> App {
        App {
            host,
            accel,
            log: Default::default(),
            settings_lock: Mutex::new(()),
            pulls: Default::default(),
        }
    }

    pub(crate) fn settings(&self) -> Result<Settings, ApiError> {
        Ok(Settings::load(&self.host.paths)?)
    }

    /// Loads the settings, applies `change` and saves them.
    pub(crate) fn change_settings(
        &self,
        change: impl FnOnce(&mut Settings) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let _guard = self.settings_lock.locked();
        let mut s = self.settings()?;
        change(&mut s)?;
        Ok(s.save(&self.host.paths)?)
    }
}

/// A request as a handler sees it.
pub struct Request<'a> {
    pub param: Option<String>,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

impl Request<'_> {
    pub(crate) fn name(&self) -> &str {
        self.param.as_deref().unwrap_or_default()
    }

    pub(crate) fn query(&self, key: &str) -> Option<String> {
        let q = self.query?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// Byte counts of one transfer.
#[derive(Default)]
pub struct Counter {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress for Counter {
    fn start(&self, _: &str, total: u64, done: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }
    fn advance(&self, _: &str, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn finish(&self, _: &str) {
        self.done
            .store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Counter {
    /// 0 to 100, from compressed bytes (as Lume computes it).
    pub fn percent(&self) -> f64 {
        let (t, d) = (
            self.total.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        );
        if t == 0 {
            0.0
        } else {
            (d as f64 * 100.0 / t as f64).min(100.0)
        }
    }
}

/// A pull this server started in the background.
pub enum PullState {
    Running(Arc<Counter>),
    Failed(String),
}

pub type Pulls = Arc<Mutex<HashMap<String, PullState>>>;
