//! Tests of what ships beside the binary: the CRDs (drift, docs), the examples through `local`, the GitOps recipes and the metrics the chart's alerts read.

mod argocd_health;
mod cel_cost;
mod connection_health;
mod crd_docs;
mod crd_drift;
mod examples;
mod metrics_exposition;
