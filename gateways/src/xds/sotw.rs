//! The state-of-the-world ADS variant for one stream: per type, what the node subscribed to,
//! the latest response (its nonce and version) and what it held; requests and new snapshots
//! in, responses and ACK/NACK events out. No I/O, so every rule is tested directly.

use crate::xds::event::{Event, Limits, Machine};
use crate::xds::resources::{Kind, Snapshot};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet};
use tonic::Status;

#[derive(Debug, Default)]
struct TypeState {
    /// A request for the type arrived on this stream.
    requested: bool,
    /// Subscribed names; `None`: every resource (wildcard).
    names: Option<BTreeSet<String>>,
    /// The latest response: nonce and table version.
    latest: Option<(String, u64)>,
    /// Whether the latest response has been neither ACKed nor NACKed yet.
    awaiting: bool,
    /// Per resource, the version in the latest response.
    sent: BTreeMap<String, String>,
}

/// One SotW stream.
#[derive(Debug, Default)]
pub(crate) struct Sotw {
    types: [TypeState; 4],
    nonces: u64,
}

impl Sotw {
    /// A new stream.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The subscribed resources of `kind` that exist, under a new nonce.
    fn respond(&mut self, kind: Kind, snap: &Snapshot) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let t = &mut self.types[kind as usize];
        t.sent = wanted(t, snap, kind);
        t.latest = Some((nonce.clone(), snap.version));
        t.awaiting = true;
        let all = snap.of(kind);
        DiscoveryResponse {
            version_info: snap.version.to_string(),
            resources: t.sent.keys().filter_map(|n| all.get(n)).map(|r| r.any.clone()).collect(),
            type_url: kind.type_url().to_string(),
            nonce,
            ..Default::default()
        }
    }
}

impl Machine for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    /// A request: its ACK or NACK as events, and the response it calls for (the first request
    /// of a type, or a changed subscription). A request of a type not served, or answering a
    /// response other than the latest (stale nonce), changes nothing.
    fn request(
        &mut self,
        req: &DiscoveryRequest,
        snap: &Snapshot,
        limits: &Limits,
    ) -> Result<(Vec<Event>, Option<DiscoveryResponse>), Status> {
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            return Ok((Vec::new(), None));
        };
        limits.check_names(req.resource_names.iter(), "resource_names")?;
        let t = &mut self.types[kind as usize];
        let mut events = Vec::new();
        if !req.response_nonce.is_empty()
            && let Some((nonce, version)) = &t.latest
        {
            if *nonce != req.response_nonce {
                return Ok((events, None));
            }
            if t.awaiting {
                t.awaiting = false;
                events.push(match &req.error_detail {
                    Some(e) => Event::Nack { kind, version: *version, error: e.message.clone() },
                    None => Event::Ack { kind, version: *version },
                });
            }
        }
        let names = if req.resource_names.iter().any(|n| n == "*")
            || (req.resource_names.is_empty() && kind.wildcard_by_default())
        {
            None
        } else {
            Some(req.resource_names.iter().cloned().collect())
        };
        let changed = !t.requested || names != t.names;
        t.requested = true;
        t.names = names;
        let response = changed.then(|| self.respond(kind, snap));
        Ok((events, response))
    }

    /// A new snapshot: a response for each type whose subscribed resources changed, and for
    /// a node whose assignments did not change and that holds every response it was sent,
    /// [`Event::Unchanged`].
    fn snapshot(&mut self, snap: &Snapshot) -> (Vec<Event>, Vec<DiscoveryResponse>) {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = &self.types[kind as usize];
            if t.requested && wanted(t, snap, kind) != t.sent {
                out.push(self.respond(kind, snap));
            }
        }
        let eds = &self.types[Kind::Endpoints as usize];
        let events =
            if out.iter().all(|r| r.type_url != Kind::Endpoints.type_url()) && !eds.sent.is_empty() && !eds.awaiting {
                vec![Event::Unchanged { version: snap.version }]
            } else {
                Vec::new()
            };
        (events, out)
    }

    /// Whether the node holds at least one assignment (it then follows the weights).
    fn holds_assignment(&self) -> bool {
        !self.types[Kind::Endpoints as usize].sent.is_empty()
    }

    /// Whether an assignment response is neither ACKed nor NACKed yet.
    fn awaiting_assignment(&self) -> bool {
        let t = &self.types[Kind::Endpoints as usize];
        t.awaiting && !t.sent.is_empty()
    }

    /// Resource names held subscribed, over every type.
    fn subscribed(&self) -> usize {
        self.types.iter().map(|t| t.names.as_ref().map_or(0, BTreeSet::len)).sum()
    }
}

/// The subscribed resources that exist, with their versions.
fn wanted(t: &TypeState, snap: &Snapshot, kind: Kind) -> BTreeMap<String, String> {
    let all = snap.of(kind);
    match &t.names {
        None => all.iter().map(|(n, r)| (n.clone(), r.version.clone())).collect(),
        Some(names) => names.iter().filter_map(|n| all.get(n).map(|r| (n.clone(), r.version.clone()))).collect(),
    }
}
