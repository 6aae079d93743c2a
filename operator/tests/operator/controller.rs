//! The controller's wiring: which projects a Secret event triggers, and how loudly the
//! controller's errors are logged.

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    core::ErrorResponse,
    runtime::{
        controller::Error as ControllerError,
        reflector::{store::Writer, ObjectRef},
        watcher,
    },
};
use tracing::Level;
use zori_operator::{
    controller::{controller_error_level, projects_of_secret},
    crd::{self, ZoriProject},
    reconcile::ReconcileError,
};

use super::common::{minimal, production};

fn secret(namespace: &str, name: &str, owner: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: crd::API_VERSION.to_owned(),
                    kind: crd::KIND.to_owned(),
                    name: o.to_owned(),
                    uid: format!("uid-{o}"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    }
}

/// The controller's store of projects, filled as its watch fills it.
fn store(projects: Vec<ZoriProject>) -> Vec<Arc<ZoriProject>> {
    let mut writer = Writer::<ZoriProject>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for project in projects {
        writer.apply_watcher_event(&watcher::Event::InitApply(project));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader().state()
}

#[test]
fn a_stripe_secret_triggers_the_projects_naming_it() {
    // bakery (production example) names bakery-stripe; acme (minimal) names none.
    let projects = store(vec![minimal(), production()]);
    let bakery = ObjectRef::<ZoriProject>::new("bakery").within("shops");

    // Created or fixed by the user: unlabelled, not owned, picked up at once.
    assert_eq!(
        projects_of_secret(&secret("shops", "bakery-stripe", None), &projects),
        vec![bakery.clone()]
    );
    // The same name in another namespace, or another Secret, concerns nobody.
    assert!(projects_of_secret(&secret("other", "bakery-stripe", None), &projects).is_empty());
    assert!(projects_of_secret(&secret("shops", "unrelated", None), &projects).is_empty());
    // The credentials Secret triggers its owner.
    assert_eq!(
        projects_of_secret(
            &secret("shops", "acme-credentials", Some("acme")),
            &projects
        ),
        vec![ObjectRef::new("acme").within("shops")]
    );
    // Owned and named at once: one trigger.
    assert_eq!(
        projects_of_secret(&secret("shops", "bakery-stripe", Some("bakery")), &projects),
        vec![bakery]
    );
}

#[test]
fn watch_failures_are_warnings_and_failed_reconciles_are_not_logged_twice() {
    let forbidden = ErrorResponse {
        status: "Failure".to_owned(),
        message: "zoriprojects.zori.dev is forbidden: User \
                  \"system:serviceaccount:zori-system:zori-operator\" cannot watch resource \
                  \"zoriprojects\" in API group \"zori.dev\" at the cluster scope"
            .to_owned(),
        reason: "Forbidden".to_owned(),
        code: 403,
    };
    let watch: ControllerError<ReconcileError, watcher::Error> =
        ControllerError::QueueError(watcher::Error::WatchError(forbidden.clone()));
    assert_eq!(controller_error_level(&watch), Level::WARN);
    let list: ControllerError<ReconcileError, watcher::Error> = ControllerError::QueueError(
        watcher::Error::InitialListFailed(kube::Error::Api(ErrorResponse {
            code: 404,
            reason: "NotFound".to_owned(),
            message: "the server could not find the requested resource".to_owned(),
            ..forbidden
        })),
    );
    assert_eq!(controller_error_level(&list), Level::WARN);
    // The default filter shows them.
    assert!(controller_error_level(&watch) <= Level::INFO);

    let reconcile: ControllerError<ReconcileError, watcher::Error> =
        ControllerError::ReconcilerFailed(
            ReconcileError::Malformed("metadata.name"),
            ObjectRef::<ZoriProject>::new("acme")
                .within("shops")
                .erase(),
        );
    assert_eq!(controller_error_level(&reconcile), Level::DEBUG);
}
