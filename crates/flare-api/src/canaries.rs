//! `/v1/canaries`, and the loop that moves them: Fission's canary, with
//! Flare's own metrics.
//!
//! While a canary runs, its function's unpinned traffic (`/fn/name` and
//! triggers that serve the latest version) goes to `to` by the canary's
//! weight and to `from` otherwise. Every interval the loop reads how many
//! of `to`'s requests failed (5xx, timeouts) and steps: over the
//! threshold, the function serves `from` and the canary has failed;
//! otherwise the weight grows by the step, and at 100 the function serves
//! `to` and the canary has succeeded. An interval without requests to
//! `to` changes nothing. Either end leaves the function serving the
//! winner, so a finished canary no longer routes anything.
//!
//! Every node runs the loop; the time an interval ended is stored with
//! the canary and every write is checked against the generation read, so
//! one node judges each interval, from the requests it served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{CanarySpec, CanaryState, CanaryStatus, Error, ErrorCode, Resource, Result};
use http::StatusCode;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

type Canary = Resource<CanarySpec>;

fn decode(body: &[u8], scope: &Scope) -> Result<Canary> {
    let mut canary: Canary = crud::decode(body, scope)?;
    canary.validate()?;
    // The status is Flare's: a new canary starts at its first step.
    canary.spec.status = CanaryStatus {
        weight: canary.spec.step,
        judged_at: now_secs(),
        message: Some("started".into()),
        ..CanaryStatus::default()
    };
    Ok(canary)
}

fn check(api: &Api, canary: &Canary) -> Result<()> {
    let (namespace, spec) = (&canary.metadata.namespace, &canary.spec);
    crate::aliases::requires_version(api, namespace, &spec.function, spec.from)?;
    crate::aliases::requires_version(api, namespace, &spec.function, spec.to)?;
    let running = crud::all::<CanarySpec>(&*api.store)?.into_iter().find(|c| {
        &c.metadata.namespace == namespace
            && c.spec.function == spec.function
            && c.spec.status.state == CanaryState::Running
    });
    match running {
        Some(other) => Err(Error::conflict(format!(
            "canary \"{}\" already runs on function \"{}\"; delete it first",
            other.metadata.name, spec.function
        ))),
        None => Ok(()),
    }
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<Canary>>> {
    Ok(Json(crud::all_in(&*api.store, &scope)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Canary>> {
    Ok(Json(crud::get(&api, &scope, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Canary>)> {
    let canary = decode(&body, &scope)?;
    let created = crud::create(&api, canary, check).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Stops a canary: the function's unpinned traffic goes back to the
/// version the function serves.
pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Canary>> {
    Ok(Json(crud::delete(&api, &scope, &name, |_| Ok(())).await?))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What this node had counted of a canary's new version when its
/// current interval began.
struct Baseline {
    since: Instant,
    requests: u64,
    failures: u64,
}

/// Judges running canaries until the process ends.
pub async fn run(api: Arc<Api>) {
    let mut baselines: HashMap<String, Baseline> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let canaries = match crud::all::<CanarySpec>(&*api.store) {
            Ok(all) => all,
            Err(e) => {
                tracing::debug!("cannot list canaries: {e}");
                continue;
            }
        };
        let running: Vec<Canary> = canaries
            .into_iter()
            .filter(|c| c.spec.status.state == CanaryState::Running)
            .collect();
        baselines.retain(|uid, _| running.iter().any(|c| &c.metadata.uid == uid));
        for canary in running {
            let to = flare_model::qualified(
                &format!("{}@{}", canary.spec.function, canary.spec.to),
                &canary.metadata.namespace,
            );
            let (requests, failures) = api.executor.outcomes(&to);
            let baseline = baselines
                .entry(canary.metadata.uid.clone())
                .or_insert(Baseline {
                    since: Instant::now(),
                    requests,
                    failures,
                });
            let interval = canary.spec.interval;
            let due = now_secs() >= canary.spec.status.judged_at + interval.as_secs();
            if baseline.since.elapsed() < interval || !due {
                continue;
            }
            let counted = (requests - baseline.requests, failures - baseline.failures);
            *baseline = Baseline {
                since: Instant::now(),
                requests,
                failures,
            };
            if let Err(e) = judge(&api, canary, counted).await {
                tracing::debug!("a canary step was not written: {e}");
            }
        }
    }
}

/// One interval of `canary`, in which its new version answered
/// `requests` of which `failures` failed.
async fn judge(api: &Api, mut canary: Canary, (requests, failures): (u64, u64)) -> Result<()> {
    let spec = &canary.spec;
    let mut status = CanaryStatus {
        requests,
        judged_at: now_secs(),
        ..spec.status.clone()
    };
    let namespace = canary.metadata.namespace.clone();
    if requests == 0 {
        status.failure_rate = None;
        status.message = Some(format!(
            "no requests to version {} in the last interval: no step",
            spec.to
        ));
    } else {
        let rate = failures as f64 * 100.0 / requests as f64;
        status.failure_rate = Some(rate);
        let (winner, state) = if rate > f64::from(spec.failure_threshold) {
            status.weight = 0;
            (Some(spec.from), CanaryState::Failed)
        } else {
            status.weight = (status.weight + spec.step).min(100);
            match status.weight {
                100 => (Some(spec.to), CanaryState::Succeeded),
                _ => (None, CanaryState::Running),
            }
        };
        status.message = Some(format!(
            "{failures} of {requests} requests to version {} failed ({rate:.1}%, threshold {}%)",
            spec.to, spec.failure_threshold
        ));
        if let Some(version) = winner {
            let served = crate::versions::serve(api, &namespace, &spec.function, version).await;
            status.state = state;
            status.message = Some(match served {
                Ok(_) => format!(
                    "{}; the function serves version {version}",
                    status.message.unwrap_or_default()
                ),
                Err(e) => format!(
                    "{}; the function could not be moved to version {version}: {}",
                    status.message.unwrap_or_default(),
                    e.message
                ),
            });
        }
    }
    canary.spec.status = status;
    let doc = canary.to_document()?;
    match api.write(move |store| store.update(doc)).await {
        Ok(written) => {
            api.settle(written.revision).await;
            Ok(())
        }
        // Another node judged it first, or it was deleted.
        Err(e) if matches!(e.code, ErrorCode::Conflict | ErrorCode::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
