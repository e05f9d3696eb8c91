//! Full VMs managed like Lume's: long-lived machines with their own disks, UEFI
//! firmware and displays, stored as Lume stores them (see `store`), in locations
//! configured as Lume's (see `settings`).

pub mod activity;
pub mod check;
pub mod details;
pub mod from_image;
pub mod kernel;
pub mod runner;
pub mod settings;
pub mod store;
pub mod suspend;
pub mod transfer;

/// Where what the user should hear on the way goes (the CLI prints it, the API logs it).
pub type Notify<'a> = &'a (dyn Fn(&str) + Send + Sync);
