//! An answer as the calls hand it back: its body, and what its headers said (the
//! API version's deprecation, Amperity's clock).

use reqwest::header::HeaderMap;

/// An answer with what its headers announced.
#[derive(Clone, Debug)]
pub struct Reply<T> {
    pub body: T,
    pub deprecation: Option<DeprecationNotice>,
    /// The HTTP status it came with (a list's: its last page's).
    pub status: u16,
    /// Amperity's clock when it answered (its `Date` header), when it sent one:
    /// windows over Amperity's timestamps are drawn in its clock, not ours.
    pub date: Option<jiff::Timestamp>,
}

/// The `Date` header (an HTTP-date, one-second resolution), if readable.
pub(crate) fn date_header(headers: &HeaderMap) -> Option<jiff::Timestamp> {
    let value = headers.get("date")?.to_str().ok()?;
    Some(jiff::fmt::rfc2822::parse(value.trim()).ok()?.timestamp())
}

/// `Deprecation` / `Sunset` headers: the API version is on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecationNotice {
    pub deprecation: Option<String>,
    pub sunset: Option<String>,
}

impl DeprecationNotice {
    pub(super) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let notice = DeprecationNotice {
            deprecation: text("deprecation"),
            sunset: text("sunset"),
        };
        (notice.deprecation.is_some() || notice.sunset.is_some()).then_some(notice)
    }
}
