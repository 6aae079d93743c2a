//! Tests of the operator: builders on the example specs, the real kube client against an API
//! server verifier, reconciles against the in-memory API,
//! provisioning against the real services, manifest validation, and the committed CRD.

mod operator {
    mod builders;
    mod client_contract;
    pub mod common;
    mod controller;
    mod crd;
    mod leadership;
    mod manifests;
    mod provisioning;
    mod reconcile;
}
