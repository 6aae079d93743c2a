//! Tests of the operator: builders on the example specs, reconciles against the in-memory API,
//! provisioning against the real services, manifest validation, and the committed CRD.

mod operator {
    mod builders;
    pub mod common;
    mod crd;
    mod manifests;
    mod provisioning;
    mod reconcile;
}
