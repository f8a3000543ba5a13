//! `/v1/functions/{name}/logs`: query, or follow as NDJSON.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flare_model::{Error, LogEntry, Result};
use flare_store::logs::LogQuery;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

use crate::Api;
use crate::error::ApiResult;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogParams {
    /// A duration back from now (`10m`) or an RFC 3339 time.
    since: Option<String>,
    until: Option<String>,
    invocation: Option<String>,
    contains: Option<String>,
    /// stdout, stderr or system.
    stream: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// Parses `10m` (that long ago) or `2026-11-21T10:00:00Z` into
/// microseconds since the epoch.
pub(crate) fn parse_time(what: &str, value: &str) -> Result<i64> {
    let now = OffsetDateTime::now_utc();
    let at = if let Ok(ago) = humantime::parse_duration(value) {
        // Further back than a date can go: before every line there is.
        match time::Duration::try_from(ago)
            .ok()
            .and_then(|ago| now.checked_sub(ago))
        {
            Some(at) => at,
            None => return Ok(i64::MIN),
        }
    } else {
        OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
            Error::invalid(format!(
                "{what}: \"{value}\" is neither a duration (10m, 2h) nor an RFC 3339 time"
            ))
        })?
    };
    Ok(i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

impl LogParams {
    fn query(&self, function: String) -> Result<LogQuery> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(format!("limit must be 1..={MAX_LIMIT}")));
        }
        Ok(LogQuery {
            function: Some(function),
            invocation: self.invocation.clone(),
            since_us: self
                .since
                .as_deref()
                .map(|s| parse_time("since", s))
                .transpose()?,
            until_us: self
                .until
                .as_deref()
                .map(|s| parse_time("until", s))
                .transpose()?,
            contains: self.contains.clone(),
            stream: self
                .stream
                .as_deref()
                .map(|s| {
                    flare_model::LogStream::parse(s).ok_or_else(|| {
                        Error::invalid(format!(
                            "stream: \"{s}\" is not one of stdout, stderr, system"
                        ))
                    })
                })
                .transpose()?,
            after_id: None,
            limit,
        })
    }
}

pub(crate) async fn query(
    State(api): State<Arc<Api>>,
    axum::Extension(scope): axum::Extension<crate::crud::Scope>,
    Path(name): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Response> {
    // Log lines are kept under the function's qualified name.
    let query = params.query(flare_model::qualified(&name, scope.one()?))?;
    if !params.follow {
        return Ok(Json(api.logs.query(&query)?).into_response());
    }
    // Subscribe before reading the past so that no line falls between.
    let live = api.logs.follow();
    let past: VecDeque<LogEntry> = api.logs.query(&query)?.into();
    let last_id = past.back().map_or(0, |e| e.id);
    let state = Follow {
        past,
        live,
        query,
        last_id,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let entry = state.next().await?;
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), state))
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct Follow {
    past: VecDeque<LogEntry>,
    live: broadcast::Receiver<LogEntry>,
    query: LogQuery,
    last_id: i64,
}

impl Follow {
    async fn next(&mut self) -> Option<LogEntry> {
        if let Some(entry) = self.past.pop_front() {
            return Some(entry);
        }
        loop {
            match self.live.recv().await {
                Ok(entry) if entry.id > self.last_id && self.query.matches(&entry) => {
                    self.last_id = entry.id;
                    return Some(entry);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_times() {
        let now_us = OffsetDateTime::now_utc().unix_timestamp() * 1_000_000;
        let ten_min_ago = parse_time("since", "10m").unwrap();
        assert!((now_us - ten_min_ago - 600_000_000).abs() < 5_000_000);
        assert_eq!(
            parse_time("since", "2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600_000_000
        );
        let err = parse_time("since", "yesterday").unwrap_err();
        assert!(err.message.contains("since"), "{}", err.message);
    }
}
