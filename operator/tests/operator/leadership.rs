//! Two operator replicas on one Lease, each the shipped code path (`controller::lead`: client-go
//! leader election, then kube-runtime controllers on the real `ClientApi`), talking HTTP to one
//! API double that records every request each replica sends. The leader's API calls hang: the
//! other replica takes the Lease over only after every request of the first has ended and no
//! new one comes, as the double saw it.

use std::{sync::Arc, time::Duration};

use http::Method;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{sleep, Instant},
};
use zori_operator::{
    api::{
        client::ClientApi,
        fake::FakeApi,
        fake_server::{self, LoggedRequest, Outcome, RequestLog},
        ObjectKey,
    },
    backends::MemoryBackends,
    config::Platform,
    controller::{lead, RunError, Shared},
    leader::{Elector, LeaseLost, LeaseSettings},
    metrics::Metrics,
    reconcile::Context,
};

use super::common::minimal;

/// Shorter than the shipped 15 s / 10 s / 2 s, in the same proportions, so that the test takes
/// seconds; the algorithm is the same.
fn lease(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: Duration::from_secs(6),
        renew_deadline: Duration::from_secs(4),
        retry_period: Duration::from_millis(800),
        ..LeaseSettings::new("zori-system", "zori-operator", identity)
    }
}

struct Replica {
    api: FakeApi,
    task: JoinHandle<Result<(), RunError>>,
    /// Kept so that the replica is not told to stop.
    _stop: watch::Sender<bool>,
}

/// Starts one replica as `zori-operator run` does after connecting: its own client of the API
/// server (its own faults), the Lease, then the controllers for namespace `shops`.
fn start(api: &FakeApi, log: &RequestLog, identity: &str) -> Replica {
    let api = api.handle();
    let client = fake_server::logged_client(&api, log, identity);
    let client_api = ClientApi::new(client.clone(), Some(identity.to_owned()));
    let shared = Arc::new(Shared {
        ctx: Context::new(client_api.clone(), MemoryBackends::new(), Platform::local()),
        metrics: Metrics::register(&mut Registry::default()),
    });
    let elector = Elector::new(client_api, lease(identity));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        lead(&client, elector, &["shops".to_owned()], shared, stopped).await
    });
    Replica {
        api,
        task,
        _stop: stop,
    }
}

fn is_lease(request: &LoggedRequest) -> bool {
    request.path.contains("/leases/") || request.path.ends_with("/leases")
}

fn of<'a>(requests: &'a [LoggedRequest], who: &'a str) -> impl Iterator<Item = &'a LoggedRequest> {
    requests.iter().filter(move |r| r.who == who)
}

/// Waits up to `limit` for `done` over the requests so far.
async fn until(log: &RequestLog, limit: Duration, done: impl Fn(&[LoggedRequest]) -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done(&log.requests()) {
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

fn holder(api: &FakeApi) -> Option<String> {
    api.object(&ObjectKey::new(
        "coordination.k8s.io/v1",
        "Lease",
        Some("zori-system"),
        "zori-operator",
    ))
    .and_then(|l| {
        l.pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_leader_stops_all_its_requests_before_the_other_replica_takes_over() {
    let api = FakeApi::new();
    let mut project = serde_json::to_value(minimal()).expect("json");
    if let Some(meta) = project.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("uid");
        meta.remove("generation");
    }
    api.insert(project).expect("insert");
    let log = RequestLog::new();

    let a = start(&api, &log, "pod-a");
    // a leads: its controllers watch and reconcile (its applies reach the server).
    assert!(
        until(&log, Duration::from_secs(20), |r| {
            of(r, "pod-a").any(|r| r.method == Method::PATCH && !is_lease(r))
        })
        .await,
        "pod-a never reconciled: {:#?}",
        log.requests()
    );
    let b = start(&api, &log, "pod-b");
    sleep(Duration::from_secs(2)).await;
    let requests = log.requests();
    assert!(
        of(&requests, "pod-b").all(is_lease),
        "a follower only reads the Lease: {:#?}",
        of(&requests, "pod-b").collect::<Vec<_>>()
    );
    assert_eq!(holder(&api).as_deref(), Some("pod-a"));

    // The API server stops answering pod-a: its Lease renewals and every other call hang.
    let hung_at = Instant::now();
    a.api.hang_everything();
    // A Deployment rolls out: pod-a's open watch reports it, and the reconcile it triggers
    // sends requests that get no answer.
    api.roll_out(&ObjectKey::new(
        "apps/v1",
        "Deployment",
        Some("shops"),
        "acme-api",
    ))
    .expect("roll out");

    let lost = tokio::time::timeout(Duration::from_secs(20), a.task)
        .await
        .expect("pod-a gives up within its renew deadline")
        .expect("pod-a runs")
        .expect_err("pod-a loses the Lease");
    assert!(
        matches!(lost, RunError::LeaseLost(LeaseLost::NotRenewed { .. })),
        "{lost}"
    );

    // pod-b takes the Lease over and starts its controllers.
    assert!(
        until(&log, Duration::from_secs(20), |r| {
            of(r, "pod-b").any(|r| !is_lease(r))
        })
        .await,
        "pod-b never took over: {:#?}",
        log.requests()
    );
    assert!(
        until(&log, Duration::from_secs(20), |r| {
            of(r, "pod-b").any(|r| r.method == Method::PATCH && !is_lease(r))
        })
        .await,
        "pod-b never reconciled"
    );
    assert_eq!(holder(&api).as_deref(), Some("pod-b"));

    let requests = log.requests();
    let takeover = of(&requests, "pod-b")
        .find(|r| is_lease(r) && r.method == Method::PUT && r.outcome == Outcome::Answered(200))
        .expect("pod-b's write of the Lease")
        .arrived;
    let a_requests: Vec<&LoggedRequest> = of(&requests, "pod-a").collect();

    // pod-a was working when the API hung: its watches were open, and the rollout's reconcile
    // sent requests after the hang.
    assert!(
        a_requests.iter().any(|r| r.watch && r.open_at(hung_at)),
        "pod-a had no open watch at the hang"
    );
    assert!(
        a_requests
            .iter()
            .any(|r| !is_lease(r) && !r.watch && r.arrived > hung_at),
        "pod-a did not reconcile the rollout: {a_requests:#?}"
    );
    // Every request of pod-a — watches, the rollout's reconcile, the Lease renewals — had
    // ended (abandoned: nothing it sent can land later) before pod-b wrote the Lease, and none
    // came after.
    for request in &a_requests {
        let ended = request
            .ended
            .unwrap_or_else(|| panic!("pod-a's request is still open: {request:#?}"));
        assert!(
            ended < takeover,
            "pod-a's request outlived the takeover by {:?}: {request:#?}",
            ended - takeover
        );
    }
    let hung: Vec<&&LoggedRequest> = a_requests.iter().filter(|r| r.arrived >= hung_at).collect();
    assert!(
        hung.iter().all(|r| r.outcome == Outcome::Abandoned),
        "a hung request got an answer: {hung:#?}"
    );
    let a_stopped = a_requests
        .iter()
        .filter_map(|r| r.ended)
        .max()
        .expect("pod-a sent requests");
    // pod-a stopped within its renew deadline of the last renewal (at most one retry period
    // before the hang); pod-b took over a Lease duration after it last saw a renewal.
    let settings = lease("x");
    assert!(
        a_stopped - hung_at <= settings.renew_deadline + settings.retry_period,
        "pod-a stopped {:?} after the hang",
        a_stopped - hung_at
    );
    assert!(
        takeover - hung_at >= settings.lease_duration - settings.retry_period,
        "pod-b took over {:?} after the hang: before the Lease could expire",
        takeover - hung_at
    );
    assert!(
        takeover - hung_at <= settings.lease_duration + 3 * settings.retry_period,
        "pod-b took over {:?} after the hang",
        takeover - hung_at
    );
    // pod-b's controllers started after the takeover.
    assert!(
        of(&requests, "pod-b")
            .filter(|r| !is_lease(r))
            .all(|r| r.arrived > takeover),
        "pod-b reconciled before it held the Lease"
    );
    b.task.abort();
}
