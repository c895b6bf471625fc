//! Events about runs and schedules, published for both controllers.

use kube::Client;
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use tracing::warn;

use crate::bounded::cut;
use crate::run::decide::{Event, EventType, MAX_EVENT_NOTE_BYTES};

/// Who publishes this operator's Events: the controller, and the pod (when the
/// chart gives its name).
pub fn reporter() -> Reporter {
    Reporter {
        controller: "amperity-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Publishes one of the decisions' Events about `regarding` (a run or a schedule).
/// Events are best effort: the status already says the same.
pub async fn publish_event(
    client: &Client,
    reporter: &Reporter,
    event: &Event,
    action: &str,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
) {
    let kube_event = KubeEvent {
        type_: match event.type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: event.reason.to_string(),
        note: Some(cut(&event.note, MAX_EVENT_NOTE_BYTES)),
        action: action.into(),
        secondary: None,
    };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    if let Err(e) = recorder.publish(&kube_event, regarding).await {
        warn!(reason = event.reason, error = %kube_error_summary(&e), "could not publish event");
    }
}

/// A kube error in one line, without response bodies that could echo request data.
pub fn kube_error_summary(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}", s.code, s.reason),
        other => other.to_string(),
    }
}
