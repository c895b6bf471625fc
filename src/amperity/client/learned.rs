//! What the client learned from Amperity's answers and keeps for later calls: who
//! each credential starts runs as, and the workflow name each config id's runs
//! carry (both bounded).

use std::hash::{DefaultHasher, Hash, Hasher};

use super::{AmperityClient, MAX_ID_BYTES};
use crate::amperity::auth::Credentials;
use crate::amperity::{Principal, Target};

impl AmperityClient {
    /// What `credentials` were seen to start runs as at `target`, if known.
    pub fn learned_principal(
        &self,
        target: &Target,
        credentials: &Credentials,
    ) -> Option<Principal> {
        self.inner
            .principals
            .lock()
            .unwrap()
            .get(&principal_key(target, credentials))
            .cloned()
    }

    /// The workflow name runs of `config_id` at `target` were seen to carry.
    pub fn learned_name(&self, target: &Target, config_id: &str) -> Option<String> {
        self.inner
            .names
            .lock()
            .unwrap()
            .get(&(target.budget_key(), config_id.to_string()))
            .cloned()
    }

    /// Records the workflow name of `config_id`'s runs (from a run it started).
    pub fn learn_name(&self, target: &Target, config_id: &str, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut known = self.inner.names.lock().unwrap();
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(
            (
                target.budget_key(),
                crate::bounded::cut(config_id, MAX_ID_BYTES),
            ),
            crate::bounded::cut(name, 512),
        );
    }

    /// Records who `credentials` start runs as (from a run they started).
    pub fn learn_principal(&self, target: &Target, credentials: &Credentials, p: Principal) {
        let p = Principal {
            id: crate::bounded::cut_opt(p.id.as_deref(), MAX_ID_BYTES),
            name: crate::bounded::cut_opt(p.name.as_deref(), MAX_ID_BYTES),
        };
        let mut known = self.inner.principals.lock().unwrap();
        // Bounded like every other per-credential table: credentials come and go
        // with Secrets, and a forgotten principal is only learned again.
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(principal_key(target, credentials), p);
    }
}

fn principal_key(target: &Target, credentials: &Credentials) -> u64 {
    let mut h = DefaultHasher::new();
    target.budget_key().hash(&mut h);
    credentials.fingerprint().hash(&mut h);
    h.finish()
}
