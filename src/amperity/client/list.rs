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

    /// [`AmperityClient::list`], its requests counted in metrics as `endpoint`
    /// (the change feed's as `feed`).
    pub async fn list_as(
        &self,
        endpoint: &'static str,
        target: &Target,
        credentials: &Credentials,
        query: &ListQuery,
        turn: Option<Turn>,
    ) -> Result<Reply<Vec<Workflow>>, ClientError> {
        let mut runs = Vec::new();
        let mut deprecation = None;
        let mut next: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut turn = turn;
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
            let page: Reply<WorkflowList> = self
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
                .await?;
            deprecation = deprecation.or(page.deprecation);
            for w in &page.body.data {
                checked_id(&w.id, page.status)?;
            }
            runs.extend(page.body.data);
            if runs.len() > MAX_LIST_RUNS {
                return Err(ClientError::Decode {
                    status: page.status,
                    expected: "a last page",
                    excerpt: format!("more than {MAX_LIST_RUNS} runs"),
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
