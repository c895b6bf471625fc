//! Finalizers, added and dropped with server-side apply under their own field
//! manager (for runs and schedules alike).

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;

/// A separate manager for finalizers, so that applying status never touches them.
pub const FINALIZER_MANAGER: &str = "amperity-operator-finalizer";

/// Adds or drops `finalizer` with server-side apply under its own field manager,
/// which leaves other finalizers alone. The answer is the resource as it now stands.
pub async fn apply_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    present: bool,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let finalizers: Vec<&str> = if present { vec![finalizer] } else { vec![] };
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        name,
        &PatchParams::apply(FINALIZER_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
}
