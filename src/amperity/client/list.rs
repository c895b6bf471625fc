//! Listing runs: the list's filters, and following `next_token` page by page
//! within bounds.

use reqwest::Method;

use crate::amperity::auth::Credentials;
use crate::amperity::budget::Turn;
use crate::amperity::error::ClientError;
use crate::amperity::wire::{Workflow, WorkflowList};

use super::*;

/// Filters of `GET /workflow/runs`; times are ISO 8601 (a bare date is allowed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub ended_from: Option<String>,
    pub ended_to: Option<String>,
    pub state: Option<String>,
    pub workflow_type: Option<String>,
    pub limit: Option<u32>,
    pub with_total: bool,
}

impl ListQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let fields = [
            ("created_from", &self.created_from),
            ("created_to", &self.created_to),
            ("ended_from", &self.ended_from),
            ("ended_to", &self.ended_to),
            ("state", &self.state),
            ("type", &self.workflow_type),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if self.with_total {
            pairs.push(("with_total", "true".into()));
        }
        pairs
    }
}

/// A list must end: more pages than this means the API keeps handing out tokens.
const MAX_PAGES: usize = 1000;

/// The smallest page a list falls back to.
pub const MIN_PAGE: u32 = 10;
/// Pages when the query names no `limit` (the API's documented default).
const DEFAULT_PAGE: u32 = 100;

/// The page to ask for after a page of `limit` could not be had: a quarter, at
/// least [`MIN_PAGE`]; None when it is already that small.
pub fn smaller_page(limit: u32) -> Option<u32> {
    (limit > MIN_PAGE).then(|| (limit / 4).max(MIN_PAGE))
}

/// Whether a page that failed with `error` may come through smaller: its body
/// was over the size limit, or the API refused the request while a `limit` was
/// named (a limit above what the API takes).
fn page_too_big(error: &ClientError, limit_named: bool) -> bool {
    match error {
        ClientError::BodyTooLarge { .. } => true,
        ClientError::Rejected { status, .. } => limit_named && matches!(status, 400 | 413 | 422),
        _ => false,
    }
}

impl AmperityClient {
    /// `GET /workflow/runs`, following `next_token` to the last page. The first page
    /// goes in `turn`; later ones take urgent turns as they come.
    pub async fn list(
        &self,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        self.list_as("list", target, credentials, query, turn).await
    }

    /// [`AmperityClient::list`], its requests counted in metrics as the call
    /// `endpoint` names (the change feed's as `feed`).
    pub async fn list_as(
        &self,
        endpoint: &'static str,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut query = query.clone();
        self.list_paged(endpoint, target, credentials, &mut query, turn)
            .await
    }

    /// [`AmperityClient::list_as`], falling back to smaller pages: a page whose
    /// answer is over the body limit, or a `limit` the API refuses, is asked for
    /// again (the same page) with a quarter of the limit, down to [`MIN_PAGE`].
    /// `query.limit` is left at the limit that worked, for the next list to start
    /// from.
    pub async fn list_paged(
        &self,
        endpoint: &'static str,
        target: &Target,
        credentials: &Credentials,
        query: &mut ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut runs = Vec::new();
        let mut deprecation = None;
        let mut next: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut turn = turn;
        let call_limit = self
            .inner
            .config
            .max_body_bytes
            .saturating_mul(CALL_BYTES_PER_BODY_LIMIT);
        let mut call_bytes: u64 = 0;
        for _ in 0..MAX_PAGES {
            let mut url = target.url(&["workflow", "runs"]);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in query.pairs() {
                    q.append_pair(k, &v);
                }
                if let Some(token) = &next {
                    q.append_pair("next_token", token);
                }
            }
            let sent: Result<(Reply<WorkflowList>, u64), ClientError> = self
                .send(
                    target,
                    credentials,
                    endpoint,
                    Method::GET,
                    url,
                    None,
                    Repeat::Safe,
                    turn.take(),
                )
                .await;
            let page = match sent {
                Ok((page, bytes)) => {
                    call_bytes = call_bytes.saturating_add(bytes);
                    if call_bytes > call_limit {
                        return Err(ClientError::TooMuch {
                            what: "bytes over the pages of one list",
                            limit: call_limit,
                            hint: "narrow the list (a shorter time range, a state or a type), or raise AMPERITY_MAX_BODY_BYTES, a quarter of the bound",
                        });
                    }
                    page
                }
                Err(e) => {
                    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
                    match smaller_page(limit).filter(|_| page_too_big(&e, query.limit.is_some())) {
                        Some(smaller) => {
                            tracing::warn!(tenant = %target.tenant, limit, smaller, error = %e, "a page of the list could not be had; asking for smaller pages");
                            query.limit = Some(smaller);
                            continue;
                        }
                        None => return Err(e),
                    }
                }
            };
            deprecation = deprecation.or(page.deprecation);
            for w in &page.body.data {
                checked_id(&w.id, page.status)?;
            }
            runs.extend(page.body.data.into_iter().map(|mut w| {
                w.make_printable();
                w
            }));
            if runs.len() > MAX_LIST_RUNS {
                return Err(ClientError::TooMuch {
                    what: "runs over the pages of one list",
                    limit: MAX_LIST_RUNS as u64,
                    hint: "narrow the list (a shorter time range, a state or a type)",
                });
            }
            match page.body.next_token.filter(|t| !t.is_empty()) {
                // A token handed out twice would loop for ever.
                Some(token) if token.len() <= 4096 && seen_tokens.insert(token.clone()) => {
                    next = Some(token)
                }
                _ => {
                    return Ok(Reply {
                        body: runs,
                        deprecation,
                        status: page.status,
                        date: page.date,
                    });
                }
            }
        }
        Err(ClientError::Decode {
            status: 200,
            expected: "a last page",
            excerpt: format!("more than {MAX_PAGES} pages"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_fall_back_by_quarters_to_the_smallest() {
        let mut limit = 1000;
        let mut seen = vec![limit];
        while let Some(smaller) = smaller_page(limit) {
            limit = smaller;
            seen.push(limit);
        }
        assert_eq!(seen, [1000, 250, 62, 15, 10]);
        assert_eq!(smaller_page(0), None);
        assert_eq!(smaller_page(u32::MAX), Some(u32::MAX / 4));
        let refused = ClientError::Rejected {
            status: 400,
            message: "limit".into(),
        };
        assert!(page_too_big(&refused, true));
        assert!(
            !page_too_big(&refused, false),
            "no limit named: another fault"
        );
        assert!(page_too_big(&ClientError::BodyTooLarge { limit: 1 }, false));
        assert!(!page_too_big(
            &ClientError::Rejected {
                status: 404,
                message: String::new()
            },
            true
        ));
    }

    #[test]
    fn list_query_names_every_filter() {
        let q = ListQuery {
            created_from: Some("2025-04-18".into()),
            created_to: Some("2025-04-19".into()),
            ended_from: Some("a".into()),
            ended_to: Some("b".into()),
            state: Some("succeeded".into()),
            workflow_type: Some("courier.group/run".into()),
            limit: Some(10),
            with_total: true,
        };
        let names: Vec<&str> = q.pairs().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "created_from",
                "created_to",
                "ended_from",
                "ended_to",
                "state",
                "type",
                "limit",
                "with_total"
            ]
        );
    }
}
