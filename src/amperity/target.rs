//! Where a call goes (the base URL on the allow-list, the tenant, the API version)
//! and whom a credential acts as.

use url::Url;

use crate::amperity::allow::AllowList;
use crate::amperity::error::ClientError;
use crate::amperity::wire::Workflow;

/// Where requests go: base URL, tenant, API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub base_url: Url,
    pub tenant: String,
    pub api_version: String,
}

impl Target {
    /// `endpoint` overrides `default_template` (where `{tenant}` is replaced). The
    /// URL must be on the allow-list.
    pub fn new(
        endpoint: Option<&str>,
        default_template: &str,
        tenant: &str,
        api_version: &str,
        allow: &AllowList,
    ) -> Result<Target, ClientError> {
        let raw = match endpoint {
            Some(e) => e.to_string(),
            None => default_template.replace("{tenant}", tenant),
        };
        let shown = crate::bounded::cut(&raw, 300);
        let mut url = Url::parse(&raw)
            .map_err(|e| ClientError::InvalidEndpoint(format!("{shown:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(ClientError::InvalidEndpoint(format!(
                "{shown:?} is not an http(s) URL with a host"
            )));
        }
        allow.check(&url).map_err(ClientError::EndpointNotAllowed)?;
        // Join relative paths under the base path, not beside it.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Target {
            base_url: url,
            tenant: tenant.to_string(),
            api_version: api_version.to_string(),
        })
    }

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            // Each segment is percent-encoded: ids are opaque strings.
            path.extend(segments);
        }
        url
    }

    /// Which budget requests to this target take turns in: one per tenant,
    /// however its endpoint is spelled. The tenant is compared without case; the
    /// path (`…/api` or `…/api/`) does not count, nor a default port (the URL
    /// parser drops it, and lowercases the host); every documented Amperity host
    /// (`*.amperity.com`) serves the same tenants, so they share one budget, while
    /// any other host (a simulator, a proxy) is its own place.
    pub fn budget_key(&self) -> String {
        let tenant = self.tenant.trim().to_lowercase();
        let host = self.base_url.host_str().unwrap_or_default();
        let host = host.trim_end_matches('.');
        if host == "amperity.com" || host.ends_with(".amperity.com") {
            return format!("{tenant}|amperity.com");
        }
        let port = self.base_url.port_or_known_default().unwrap_or_default();
        format!("{tenant}|{}://{host}:{port}", self.base_url.scheme())
    }
}

/// Who a credential starts runs as, as Amperity reports it on the runs it starts:
/// the search for a run whose start answer was lost trusts only runs of this principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Principal {
    /// A principal given by a person (the Secret's `principal` key): its id, as
    /// Amperity's runs show it in `principal_id`. A display name is not enough: many
    /// keys share one ("Automated workflow").
    pub fn given(value: &str) -> Principal {
        Principal {
            id: Some(value.to_string()),
            name: None,
        }
    }

    /// From a run's fields; None when the run names no principal id (a display
    /// name alone identifies nobody).
    pub fn of(w: &Workflow) -> Option<Principal> {
        let id = w.principal_id.clone().filter(|s| !s.is_empty())?;
        Some(Principal {
            id: Some(id),
            name: w.principal_name.clone().filter(|s| !s.is_empty()),
        })
    }

    /// Whether `w` was started by this principal: the ids match. A run that names
    /// no principal id, or a principal known by name only, never matches.
    pub fn started(&self, w: &Workflow) -> bool {
        matches!((&self.id, &w.principal_id), (Some(a), Some(b)) if !a.is_empty() && a == b)
    }

    /// Whether `w` names a principal id other than this one (a run that names
    /// none may still be this principal's, unconfirmed).
    pub fn not_started(&self, w: &Workflow) -> bool {
        w.principal_id.as_deref().is_some_and(|b| !b.is_empty()) && !self.started(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>, allow: &[&str]) -> Result<Target, ClientError> {
        Target::new(
            endpoint,
            "https://{tenant}.amperity.com/api",
            "socktown",
            "2024-04-01",
            &AllowList::parse(allow).unwrap(),
        )
    }

    #[test]
    fn endpoints_must_be_on_the_allow_list() {
        let default = ["https://*.amperity.com"];
        assert_eq!(
            target(None, &default).unwrap().base_url.as_str(),
            "https://socktown.amperity.com/api/"
        );
        assert!(target(Some("https://app.amperity.com/api"), &default).is_ok());
        for refused in [
            "http://127.0.0.1:8470/api",
            "http://app.amperity.com/api",
            "https://evil.test/api",
        ] {
            let err = target(Some(refused), &default).unwrap_err();
            assert!(
                matches!(err, ClientError::EndpointNotAllowed(_)),
                "{refused}: {err}"
            );
            assert!(
                err.to_string().contains("AMPERITY_ALLOWED_ENDPOINTS"),
                "{err}"
            );
        }
        let sim = ["http://127.0.0.1:8470"];
        assert!(target(Some("http://127.0.0.1:8470/api"), &sim).is_ok());
        assert!(target(Some("http://127.0.0.1:8471/api"), &sim).is_err());
        assert!(matches!(
            target(Some("ftp://x/api"), &sim),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(matches!(
            target(Some("not a url"), &sim),
            Err(ClientError::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn principals_match_by_id_never_by_name_alone() {
        let run = |id: Option<&str>, name: Option<&str>| Workflow {
            principal_id: id.map(str::to_string),
            principal_name: name.map(str::to_string),
            ..serde_json::from_value(serde_json::json!({"id": "wf-1", "state": "running"})).unwrap()
        };
        let p = Principal::given("api-key|sim-1");
        assert!(p.started(&run(Some("api-key|sim-1"), None)));
        assert!(
            !p.started(&run(None, Some("api-key|sim-1"))),
            "a name equal to the given id is not the id"
        );
        assert!(!p.started(&run(Some("api-key|sim-2"), Some("API key 2"))));
        assert!(p.not_started(&run(Some("api-key|sim-2"), None)));
        assert!(
            !p.started(&run(None, None)) && !p.not_started(&run(None, None)),
            "a run naming no principal is no match, and not proof of another"
        );
        // Learned from a run: the same display name with another id is someone else.
        let learned =
            Principal::of(&run(Some("api-key|sim-1"), Some("Automated workflow"))).unwrap();
        let namesake = run(Some("api-key|other"), Some("Automated workflow"));
        assert!(!learned.started(&namesake) && learned.not_started(&namesake));
        assert!(Principal::of(&run(None, Some("Automated workflow"))).is_none());
        assert!(Principal::of(&run(Some(""), None)).is_none());
    }

    #[test]
    fn one_budget_per_tenant_however_the_endpoint_is_spelled() {
        let key = |endpoint: &str, tenant: &str| {
            Target::new(
                Some(endpoint),
                "https://{tenant}.amperity.com/api",
                tenant,
                "2024-04-01",
                &AllowList::parse(&["https://*.amperity.com", "http://127.0.0.1:*"]).unwrap(),
            )
            .unwrap()
            .budget_key()
        };
        let one = key("https://socktown.amperity.com/api", "socktown");
        for same in [
            key("https://socktown.amperity.com/api/", "socktown"),
            key("https://SockTown.Amperity.com/api", "socktown"),
            key("https://socktown.amperity.com:443/api", "socktown"),
            key("https://socktown.amperity.com/api", "SockTown"),
            key("https://socktown.amperity.com.", "socktown"),
            // Another documented host of the same tenant.
            key("https://app.amperity.com/api", "socktown"),
        ] {
            assert_eq!(same, one);
        }
        assert_ne!(key("https://app.amperity.com/api", "acme"), one);
        let sim = key("http://127.0.0.1:8470/api", "socktown");
        assert_ne!(sim, one);
        assert_eq!(key("http://127.0.0.1:8470/api/", "socktown"), sim);
        assert_eq!(key("http://127.0.0.1:8470/other", "socktown"), sim);
        assert_ne!(key("http://127.0.0.1:8471/api", "socktown"), sim);
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        let t = target(
            Some("https://app.amperity.com/api"),
            &["https://*.amperity.com"],
        )
        .unwrap();
        assert_eq!(
            t.url(&["workflow", "runs", "wf-1/../x y"]).as_str(),
            "https://app.amperity.com/api/workflow/runs/wf-1%2F..%2Fx%20y"
        );
    }
}
