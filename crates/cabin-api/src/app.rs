//! The server's state (what it read at start-up, its log, the transfers it is seeing
//! through) and a request as a handler sees it.

use std::sync::{Arc, Mutex};

use cabin_base::sync::Locked;
use cabin_base::Host;
use cabin_machines::activity::Transfers;
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
    /// Pulls and pushes under way, by VM name (shared with the other front ends of
    /// the server).
    pub transfers: Arc<Transfers>,
}

impl App {
    pub fn new(host: Host, accel: AccelRequest, transfers: Arc<Transfers>) -> App {
        App {
            host,
            accel,
            log: Default::default(),
            settings_lock: Mutex::new(()),
            transfers,
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
