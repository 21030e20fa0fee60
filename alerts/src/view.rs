//! [`AlertsView`]: the alerts and delivery outcomes the API and pages show, written by the
//! evaluation loop and the receivers' outboxes.

use crate::deliver::DeliveryStatus;
use crate::engine::Alert;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Alerts and delivery outcomes, for `/api/v1/alerts`.
#[derive(Debug, Default)]
pub struct AlertsView {
    alerts: Mutex<Vec<Alert>>,
    deliveries: Mutex<BTreeMap<String, DeliveryStatus>>,
}

impl AlertsView {
    /// Pending, firing and recently resolved alerts.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last delivery to each receiver.
    pub fn deliveries(&self) -> BTreeMap<String, DeliveryStatus> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the alerts shown with `alerts`.
    pub(crate) fn set_alerts(&self, alerts: Vec<Alert>) {
        *self.alerts.lock().unwrap_or_else(|e| e.into_inner()) = alerts;
    }

    /// Keeps `status` as `receiver`'s last delivery.
    pub fn record_delivery(&self, receiver: &str, status: DeliveryStatus) {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner()).insert(receiver.to_string(), status);
    }
}
