//! The endpoint allow-list: the only base URLs the operator sends credentials to.
//!
//! A resource author chooses `spec.endpoint`, and a Secret may name a token URL; both
//! are untrusted. An entry is `scheme://host[:port][/path]`: a leading `*.` in the
//! host matches any subdomain (not the domain itself), no port means the scheme's
//! default port, `:*` any port, and the path is a prefix matched segment by segment.
//! URLs are compared after the `url` crate has normalised them (lower-case host,
//! punycode for international names, `..` resolved), and a URL carrying user info
//! (`https://x.amperity.com@evil.test/`) never matches. Neither does a URL whose path
//! a gateway could read as another path: a segment that decodes to a separator
//! (`%2F`, `%5C`), carries path parameters (`..;`, `;jsessionid`), an escaped `%`
//! (decoded twice, anything) or is a dot segment once decoded.

use url::{Host, Url};

/// The allow-list of the operator (`--allowed-endpoints`), default `https://*.amperity.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// As written, for messages.
    text: String,
    scheme: String,
    host: HostPattern,
    /// None: any port.
    port: Option<u16>,
    /// Path segments the URL's path must start with.
    path: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.suffix`: any host that ends with `.suffix`.
    Subdomains(String),
}

/// The flag that sets the allow-list, named in every refusal.
pub const FLAG: &str = "--allowed-endpoints (AMPERITY_ALLOWED_ENDPOINTS)";

impl AllowList {
    /// Parses the entries; the error names the entry and what is wrong with it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, String> {
        let mut parsed = Vec::new();
        for raw in entries {
            let raw = raw.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            parsed.push(Entry::parse(raw)?);
        }
        if parsed.is_empty() {
            return Err(format!("{FLAG} is empty: name at least one base URL"));
        }
        Ok(AllowList { entries: parsed })
    }

    /// This list plus one more entry (e.g. `local --simulator`'s own simulator).
    pub fn with(mut self, entry: &str) -> Result<AllowList, String> {
        self.entries.push(Entry::parse(entry)?);
        Ok(self)
    }

    pub fn allows(&self, url: &Url) -> bool {
        ambiguous_path(url).is_none() && self.entries.iter().any(|e| e.matches(url))
    }

    /// Ok when `url` is allowed; otherwise the message a person reads.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if let Some(why) = ambiguous_path(url) {
            return Err(format!(
                "{} is refused: its path {why}, which a gateway may read as another path; write the endpoint's path plainly",
                crate::bounded::cut(shown(url).as_str(), 300),
            ));
        }
        if self.allows(url) {
            return Ok(());
        }
        let listed: Vec<&str> = self.entries.iter().map(|e| e.text.as_str()).collect();
        Err(format!(
            "{} is not on the operator's endpoint allow-list ({FLAG}: {}); use an allowed endpoint, or ask the operator's administrators to allow it",
            crate::bounded::cut(shown(url).as_str(), 300),
            listed.join(", ")
        ))
    }
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList::parse(&["https://*.amperity.com"]).expect("the default entry parses")
    }
}

/// A URL as it may be shown anywhere (a status, an Event, a log, an error): without
/// user info, query or fragment, which may carry a password or an API key (a token
/// URL comes from a Secret that readers of the status may not read).
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    if u.username() != "" || u.password().is_some() {
        // Never fails for http(s) URLs with a host; if it did, show less.
        if u.set_username("").is_err() || u.set_password(None).is_err() {
            return format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"));
        }
    }
    u.to_string()
}

/// `%XX` escapes decoded once (a `%` not followed by two hex digits is kept).
fn percent_decoded(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Why a URL's path is ambiguous, if it is: a segment that, percent-decoded, holds a
/// separator (`/`, `\`), a `;` (path parameters: `..;` is `..` to some servers), a
/// `%` (a second decoding could make anything of it), or is `.` or `..`.
fn ambiguous_path(url: &Url) -> Option<&'static str> {
    for raw in url.path_segments().into_iter().flatten() {
        let decoded = percent_decoded(raw);
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\')) {
            return Some("has an encoded path separator (%2F or %5C)");
        }
        if decoded.contains(&b';') {
            return Some("has path parameters (;), as in ..;");
        }
        if decoded.contains(&b'%') {
            return Some("has an encoded % (%25)");
        }
        if decoded == b"." || decoded == b".." {
            return Some("has an encoded dot segment (%2e)");
        }
    }
    None
}

impl Entry {
    fn parse(raw: &str) -> Result<Entry, String> {
        let bad = |why: &str| format!("{FLAG}: entry {raw:?} {why}");
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("is not scheme://host[:port][/path]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(bad("must start with https:// or http://"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("must not carry user info"));
        }
        let (host_text, any_port) = match authority.strip_suffix(":*") {
            Some(h) => (h, true),
            None => (authority, false),
        };
        let (wildcard, host_text) = match host_text.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, host_text),
        };
        if host_text.contains('*') {
            return Err(bad("may use * only as a leading *. of the host"));
        }
        // Let the url crate normalise the host and path exactly as it does for the
        // URLs checked against the entry.
        let probe = Url::parse(&format!("{scheme}://{host_text}{path}"))
            .map_err(|e| bad(&format!("is not a URL ({e})")))?;
        if probe.query().is_some() || probe.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let host = match probe.host() {
            Some(Host::Domain(d)) => normal_domain(d),
            Some(Host::Ipv4(ip)) if !wildcard => ip.to_string(),
            Some(Host::Ipv6(ip)) if !wildcard => format!("[{ip}]"),
            Some(_) => return Err(bad("uses *. with an IP address")),
            None => return Err(bad("has no host")),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = if any_port {
            None
        } else {
            Some(
                probe
                    .port_or_known_default()
                    .ok_or_else(|| bad("has no port"))?,
            )
        };
        Ok(Entry {
            text: raw.to_string(),
            scheme,
            host: if wildcard {
                HostPattern::Subdomains(host)
            } else {
                HostPattern::Exact(host)
            },
            port,
            path: segments(&probe),
        })
    }

    fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let host = match url.host() {
            Some(Host::Domain(d)) => normal_domain(d),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return false,
        };
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == *h,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.ends_with('.')),
        };
        let port_ok = match self.port {
            None => true,
            Some(p) => url.port_or_known_default() == Some(p),
        };
        host_ok && port_ok && segments(url).starts_with(&self.path)
    }
}

/// A domain as compared: lower case (the url crate already made it so) without one
/// trailing dot (`x.amperity.com.` is the same host as `x.amperity.com`).
fn normal_domain(d: &str) -> String {
    d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase()
}

/// The non-empty path segments (`/api/` and `/api` are the same base).
fn segments(url: &Url) -> Vec<String> {
    url.path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn allowed(l: &AllowList, url: &str) -> bool {
        l.allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn the_default_allows_amperity_subdomains_over_https_only() {
        let l = AllowList::default();
        for ok in [
            "https://socktown.amperity.com/api",
            "https://app.amperity.com/api/workflow/runs",
            "https://app-aws-apse2.amperity.com/api",
            "https://a.b.amperity.com/",
            "https://APP.Amperity.COM/api",
            "https://app.amperity.com:443/api",
            "https://app.amperity.com./api",
            "https://socktown.amperity.com/api/v0/oauth2/token",
        ] {
            assert!(allowed(&l, ok), "{ok}");
        }
        for refused in [
            "http://app.amperity.com/api",
            "https://amperity.com/api",
            "https://evilamperity.com/api",
            "https://amperity.com.evil.test/api",
            "https://app.amperity.com.evil.test/api",
            "https://app.amperity.com:8443/api",
            "https://x.amperity.com@evil.test/",
            "https://user:pw@app.amperity.com/api",
            "https://evil.test/app.amperity.com",
            "https://evil.test/?h=x.amperity.com",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/api",
            "ftp://app.amperity.com/api",
        ] {
            assert!(!allowed(&l, refused), "{refused}");
        }
    }

    #[test]
    fn ports_paths_and_schemes() {
        let l = list(&[
            "http://127.0.0.1:8470/api",
            "https://sim.internal:*",
            "https://gw.example.com/amperity/api",
            "http://[::1]:9000",
        ]);
        assert!(allowed(&l, "http://127.0.0.1:8470/api"));
        assert!(allowed(&l, "http://127.0.0.1:8470/api/workflow/runs/wf-1"));
        assert!(!allowed(&l, "http://127.0.0.1:8471/api"), "another port");
        assert!(
            !allowed(&l, "http://127.0.0.1:8470/apix"),
            "a longer segment"
        );
        assert!(!allowed(&l, "http://127.0.0.1:8470/"), "above the path");
        assert!(!allowed(&l, "https://127.0.0.1:8470/api"), "another scheme");
        assert!(allowed(&l, "https://sim.internal:1234/anything"));
        assert!(allowed(&l, "https://sim.internal/anything"));
        assert!(!allowed(&l, "http://sim.internal:1234/"));
        assert!(allowed(
            &l,
            "https://gw.example.com:443/amperity/api/workflow/runs"
        ));
        assert!(
            !allowed(&l, "https://gw.example.com/amperity/api/../../admin"),
            "dot segments are resolved before matching"
        );
        assert!(!allowed(&l, "https://gw.example.com/amperity/apis"));
        assert!(allowed(&l, "http://[::1]:9000/api"));
        assert!(!allowed(&l, "http://[::2]:9000/api"));
        // Entries without a port mean the default port only.
        let l = list(&["https://app.amperity.com"]);
        assert!(allowed(&l, "https://app.amperity.com/api"));
        assert!(!allowed(&l, "https://app.amperity.com:444/api"));
        assert!(
            !allowed(&l, "https://x.app.amperity.com/api"),
            "no wildcard, no subdomain"
        );
    }

    #[test]
    fn encoded_separators_and_dot_segments_never_pass_a_path_prefix() {
        let l = list(&["https://gw.example/amperity/api"]);
        assert!(allowed(
            &l,
            "https://gw.example/amperity/api/workflow/runs/wf-1"
        ));
        for refused in [
            "https://gw.example/amperity/api/..%2F..%2Fadmin",
            "https://gw.example/amperity/api/..%2f..%2fadmin",
            "https://gw.example/amperity/api/..%5C..%5Cadmin",
            "https://gw.example/amperity/api/..;/..;/admin",
            "https://gw.example/amperity/api/%2e%2e;/admin",
            "https://gw.example/amperity/api;x=1/workflow",
            "https://gw.example/amperity/api/%252e%252e%252fadmin",
            "https://gw.example/amperity/api/%2e%2e/%2e%2e/admin",
        ] {
            assert!(!allowed(&l, refused), "{refused}");
            let err = l.check(&Url::parse(refused).unwrap()).unwrap_err();
            // (`%2e%2e` is resolved like `..` by the url crate, then off the prefix.)
            assert!(
                err.contains("its path") || err.contains("https://gw.example/admin is not on"),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn a_refused_url_is_shown_without_user_info_or_query() {
        let l = AllowList::default();
        for url in [
            "https://svc:PASSWORD@auth.example/token",
            "https://svc:PASSWORD@auth.example/token?api_key=KEY",
            "https://auth.example/token?api_key=KEY#KEY",
            "https://PASSWORD@auth.example/a%2Fb?api_key=KEY",
        ] {
            let err = l.check(&Url::parse(url).unwrap()).unwrap_err();
            assert!(
                !err.contains("PASSWORD") && !err.contains("KEY") && !err.contains("svc"),
                "{err}"
            );
            assert!(err.contains("https://auth.example/"), "{err}");
        }
    }

    #[test]
    fn international_names_compare_in_punycode() {
        let l = list(&["https://*.bücher.example"]);
        assert!(allowed(&l, "https://api.xn--bcher-kva.example/api"));
        assert!(allowed(&l, "https://api.bücher.example/api"));
        assert!(!allowed(&l, "https://api.bucher.example/api"));
        // A look-alike in another script is another host.
        let l = AllowList::default();
        assert!(!allowed(&l, "https://app.аmperity.com/api"), "Cyrillic a");
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for (entry, why) in [
            ("amperity.com", "scheme"),
            ("ftp://x.amperity.com", "https://"),
            ("https://user@x.amperity.com", "user info"),
            ("https://*amperity.com", "*"),
            ("https://x.*.amperity.com", "*"),
            ("https://*.127.0.0.1", "IP"),
            ("https://", "host"),
            ("https://x.amperity.com/api?x=1", "query"),
        ] {
            let err = AllowList::parse(&[entry]).unwrap_err();
            assert!(err.contains(why) && err.contains(entry), "{entry}: {err}");
        }
        assert!(AllowList::parse::<&str>(&[]).unwrap_err().contains("empty"));
        assert!(AllowList::parse(&[" ", ""]).is_err());
    }

    #[test]
    fn a_refusal_names_the_endpoint_and_the_flag() {
        let err = AllowList::default()
            .check(&Url::parse("https://evil.test/api?x=1").unwrap())
            .unwrap_err();
        assert!(err.contains("https://evil.test/api"), "{err}");
        assert!(!err.contains("x=1"), "{err}");
        assert!(err.contains("AMPERITY_ALLOWED_ENDPOINTS"), "{err}");
        assert!(err.contains("https://*.amperity.com"), "{err}");
    }
}
