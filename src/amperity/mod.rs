//! The Amperity REST client and its wire types. Knows nothing of Kubernetes.

pub mod wire;
