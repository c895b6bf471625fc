//! What both controllers share on the Kubernetes side: the operator's wiring (both
//! controllers, metrics, leader election), the Lease, finalizers and Events.

pub mod events;
pub mod finalizer;
pub mod leader;
pub mod operator;

/// The field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "amperity-operator";
