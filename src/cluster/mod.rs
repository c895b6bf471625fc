//! What both controllers share on the Kubernetes side: the operator's wiring (both
//! controllers, metrics, leader election), the Lease, finalizers, Events, and the backoff and panic catching
//! of failed reconciles.

pub mod events;
pub mod finalizer;
pub mod leader;
pub mod operator;
pub mod retry;

/// The field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "amperity-operator";
