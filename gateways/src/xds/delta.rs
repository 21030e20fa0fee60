//! The incremental ("delta") ADS variant for one stream: per type, the wildcard flag, the
//! names subscribed, what the node holds (name → version, seeded from
//! `initial_resource_versions` on reconnect) and the responses not yet answered; requests and
//! new snapshots in, responses carrying only what changed and ACK/NACK events out.

use crate::xds::event::{Event, Limits, Machine};
use crate::xds::resources::{Kind, Snapshot};
use cellpilot_core::status::StatusCode;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tonic::Status;

/// Unanswered responses remembered per type; an ACK of an older one is stale.
const OUTSTANDING: usize = 16;

#[derive(Debug, Default)]
struct TypeState {
    started: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the node holds: name → version.
    has: BTreeMap<String, String>,
    /// Subscribed names already reported as not existing.
    absent: BTreeSet<String>,
    /// Responses not yet ACKed or NACKed: nonce, table version, whether they carried
    /// assignments.
    outstanding: VecDeque<(String, u64)>,
}

/// One delta stream.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    types: [TypeState; 4],
    nonces: u64,
}

impl Delta {
    /// A new stream.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// What the node lacks of `kind` (changed resources, and subscribed names that do not
    /// exist), under a new nonce; `None` when it lacks nothing.
    fn respond(&mut self, kind: Kind, snap: &Snapshot) -> Option<DeltaDiscoveryResponse> {
        let t = &mut self.types[kind as usize];
        if !t.started {
            return None;
        }
        let all = snap.of(kind);
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let wanted: BTreeSet<&String> =
            if t.wildcard { all.keys().chain(t.names.iter()).collect() } else { t.names.iter().collect() };
        for name in wanted {
            match all.get(name) {
                Some(r) if t.has.get(name) != Some(&r.version) => {
                    t.has.insert(name.clone(), r.version.clone());
                    t.absent.remove(name);
                    resources.push(Resource {
                        name: name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.any.clone()),
                        ..Default::default()
                    });
                }
                Some(_) => {}
                None => {
                    let held = t.has.remove(name).is_some();
                    if (held || t.names.contains(name)) && t.absent.insert(name.clone()) {
                        removed.push(name.clone());
                    }
                }
            }
        }
        // Held under the wildcard but gone from the snapshot.
        let gone: Vec<String> = t.has.keys().filter(|n| !all.contains_key(*n)).cloned().collect();
        for n in gone {
            t.has.remove(&n);
            removed.push(n);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        if t.outstanding.len() == OUTSTANDING {
            t.outstanding.pop_front();
        }
        t.outstanding.push_back((nonce.clone(), snap.version));
        Some(DeltaDiscoveryResponse {
            system_version_info: snap.version.to_string(),
            resources,
            type_url: kind.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}

impl Machine for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    /// A request: subscription changes, its ACK or NACK as events, and the response with what
    /// the node lacks (if anything).
    fn request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snap: &Snapshot,
        limits: &Limits,
    ) -> Result<(Vec<Event>, Option<DeltaDiscoveryResponse>), Status> {
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            return Ok((Vec::new(), None));
        };
        limits.check_names(req.resource_names_subscribe.iter(), "resource_names_subscribe")?;
        limits.check_names(req.resource_names_unsubscribe.iter(), "resource_names_unsubscribe")?;
        limits.check_names(req.initial_resource_versions.keys(), "initial_resource_versions")?;
        let t = &mut self.types[kind as usize];
        if !t.started {
            t.started = true;
            t.wildcard = req.resource_names_subscribe.is_empty() && kind.wildcard_by_default();
            t.has = req.initial_resource_versions.clone().into_iter().collect();
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(n);
                t.absent.remove(n);
            }
        }
        if t.names.len() > limits.max_names {
            return Err(StatusCode::InvalidArgument
                .status(format!("more than {} resources of {} subscribed", limits.max_names, req.type_url)));
        }
        // What is no longer subscribed is no longer held.
        let (wildcard, names) = (t.wildcard, &t.names);
        t.has.retain(|n, _| wildcard || names.contains(n));
        let mut events = Vec::new();
        if !req.response_nonce.is_empty()
            && let Some(at) = t.outstanding.iter().position(|(n, _)| *n == req.response_nonce)
        {
            let version = t.outstanding[at].1;
            t.outstanding.drain(..=at);
            events.push(match &req.error_detail {
                Some(e) => Event::Nack { kind, version, error: e.message.clone() },
                None => Event::Ack { kind, version },
            });
        }
        Ok((events, self.respond(kind, snap)))
    }

    /// A new snapshot: a response for each type with something the node lacks, and
    /// [`Event::Unchanged`] when its assignments did not change and it has answered everything.
    fn snapshot(&mut self, snap: &Snapshot) -> (Vec<Event>, Vec<DeltaDiscoveryResponse>) {
        let out: Vec<_> = Kind::ALL.into_iter().filter_map(|k| self.respond(k, snap)).collect();
        let events = if out.iter().all(|r| r.type_url != Kind::Endpoints.type_url())
            && self.holds_assignment()
            && !self.awaiting_assignment()
        {
            vec![Event::Unchanged { version: snap.version }]
        } else {
            Vec::new()
        };
        (events, out)
    }

    /// Whether the node holds at least one assignment.
    fn holds_assignment(&self) -> bool {
        !self.types[Kind::Endpoints as usize].has.is_empty()
    }

    /// Whether an assignment response is neither ACKed nor NACKed yet.
    fn awaiting_assignment(&self) -> bool {
        !self.types[Kind::Endpoints as usize].outstanding.is_empty()
    }

    /// Resource names held subscribed, over every type.
    fn subscribed(&self) -> usize {
        self.types.iter().map(|t| t.names.len()).sum()
    }
}
