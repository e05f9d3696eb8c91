//! Where cabin keeps its state: see `cabin_base::paths`.

pub use cabin_base::paths::{Host, Paths};
