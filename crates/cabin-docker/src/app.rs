//! What every handler shares: the containers, the host's facts, the execs.

use cabin_base::Host;
use cabin_containers::{AccelRequest, Containers};

use crate::{events, execs};

/// What every handler shares.
pub struct App {
    pub containers: Containers,
    pub host: Host,
    pub accel: AccelRequest,
    pub execs: execs::Execs,
    pub events: std::sync::Arc<events::Events>,
}
