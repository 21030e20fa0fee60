//! Every gateway that follows the table, of either protocol: its live streams, whether it
//! counts as watching (it holds a drain's `applied_at` until it applies it), its last ACK and
//! its last NACK. Bounded: a client inventing ids evicts only gateways that are gone, and
//! streams are capped in total, per gateway id and per token ([`StreamCaps`]).

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How a gateway follows the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// cellpilot's own CellWeights Watch/Ack.
    CellWeights,
    /// xDS (ADS), Envoy or a proxyless gRPC client; the id is its node id.
    Xds,
}

impl Protocol {
    /// The name used in the API (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::CellWeights => "cell-weights",
            Protocol::Xds => "xds",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gateway: its protocol and the id it gave (`gateway_id`, or the xDS node id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayId {
    /// How it follows the table.
    pub protocol: Protocol,
    /// Its own name.
    pub id: String,
}

impl GatewayId {
    /// A CellWeights gateway.
    pub fn cell_weights(id: &str) -> Self {
        Self { protocol: Protocol::CellWeights, id: id.to_string() }
    }

    /// An xDS node.
    pub fn xds(node: &str) -> Self {
        Self { protocol: Protocol::Xds, id: node.to_string() }
    }
}

impl std::fmt::Display for GatewayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.protocol, self.id)
    }
}

/// A gateway's latest ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    /// Table version applied.
    pub version: u64,
    /// When (the gateway's `applied_at`, else arrival), unix ms.
    pub at_ms: i64,
}

/// A gateway's latest NACK: it refused a version and keeps the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// Table version refused.
    pub version: u64,
    /// What the gateway said (`error_detail.message`), cut to [`MAX_NACK_DETAIL`] bytes.
    pub error: String,
    /// Arrival, unix ms.
    pub at_ms: i64,
}

/// Longest NACK message kept.
pub const MAX_NACK_DETAIL: usize = 1024;

/// What is known of one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    /// Protocol.
    pub protocol: Protocol,
    /// Its id.
    pub id: String,
    /// Live streams.
    pub streams: usize,
    /// Streams that count as watching (keeping up; xDS: holding at least one assignment).
    #[serde(skip)]
    pub watching_streams: usize,
    /// Last time a stream opened or closed, or an ACK or NACK arrived, unix ms.
    pub last_seen_ms: i64,
    /// Latest ACK.
    pub last_ack: Option<Ack>,
    /// Latest NACK.
    pub last_nack: Option<Nack>,
    /// NACKs so far.
    pub nacks: u64,
}

impl Gateway {
    /// Whether it holds cut-overs until it applies them.
    pub fn watching(&self) -> bool {
        self.watching_streams > 0
    }
}

/// Every gateway seen, at most `max` (`[control] max_gateways`): one more evicts the one gone
/// longest, or is refused when all are connected.
#[derive(Debug)]
pub(crate) struct Gateways {
    map: BTreeMap<GatewayId, Gateway>,
    max: usize,
    caps: StreamCaps,
    /// Live streams in all.
    streams: usize,
    /// Live streams per token (the caller's name); an open server's callers are not counted.
    by_token: BTreeMap<String, usize>,
}

/// Bounds on live gateway streams (CellWeights Watch and xDS ADS alike), from `[xds]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCaps {
    /// In all (`max_streams`).
    pub total: usize,
    /// Per gateway id or xDS node id (`max_streams_per_node`).
    pub per_node: usize,
    /// Per token (`max_streams_per_token`).
    pub per_token: usize,
}

impl StreamCaps {
    /// The caps `[xds]` sets.
    pub fn of(x: &cellpilot_core::config::XdsConfig) -> Self {
        Self { total: x.max_streams, per_node: x.max_streams_per_node, per_token: x.max_streams_per_token }
    }
}

impl Default for StreamCaps {
    fn default() -> Self {
        Self::of(&cellpilot_core::config::XdsConfig::default())
    }
}

/// Why a gateway's stream or answer was not taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// Every one of the `max_gateways` gateways has a live stream.
    #[error("more than {0} gateways are connected ([control] max_gateways)")]
    Gateways(usize),
    /// `max_streams` streams are open.
    #[error("{0} gateway streams are open, the most allowed ([xds] max_streams)")]
    Streams(usize),
    /// The gateway id has `max_streams_per_node` streams open.
    #[error("`{id}` has {max} streams open, the most one gateway id may ([xds] max_streams_per_node)")]
    Node {
        /// The gateway id or node id.
        id: String,
        /// The cap.
        max: usize,
    },
    /// The token has `max_streams_per_token` streams open.
    #[error("token `{token}` has {max} streams open, the most one token may ([xds] max_streams_per_token)")]
    Token {
        /// The token's name.
        token: String,
        /// The cap.
        max: usize,
    },
}

impl cellpilot_core::status::ErrorExt for Full {
    fn status_code(&self) -> cellpilot_core::status::StatusCode {
        cellpilot_core::status::StatusCode::LimitReached
    }
}

impl Gateways {
    /// At most `max` gateways remembered, their streams held to `caps`.
    pub(crate) fn new(max: usize, caps: StreamCaps) -> Self {
        Self { map: BTreeMap::new(), max: max.max(1), caps, streams: 0, by_token: BTreeMap::new() }
    }

    /// The entry of `id`, made (evicting the gateway gone longest if need be).
    fn entry(&mut self, id: &GatewayId, now_ms: i64) -> Result<&mut Gateway, Full> {
        if !self.map.contains_key(id) && self.map.len() >= self.max {
            let gone = self.map.iter().filter(|(_, g)| g.streams == 0).min_by_key(|(_, g)| g.last_seen_ms);
            let Some((oldest, _)) = gone else { return Err(Full::Gateways(self.max)) };
            let oldest = oldest.clone();
            self.map.remove(&oldest);
        }
        let g = self.map.entry(id.clone()).or_insert_with(|| Gateway {
            protocol: id.protocol,
            id: id.id.clone(),
            streams: 0,
            watching_streams: 0,
            last_seen_ms: now_ms,
            last_ack: None,
            last_nack: None,
            nacks: 0,
        });
        g.last_seen_ms = g.last_seen_ms.max(now_ms);
        Ok(g)
    }

    /// A stream of `id` opened by `token`'s holder (`None`: no tokens are configured);
    /// refused (nothing counted) over a cap.
    pub(crate) fn open(&mut self, id: &GatewayId, token: Option<&str>, now_ms: i64) -> Result<(), Full> {
        let caps = self.caps;
        if self.streams >= caps.total {
            return Err(Full::Streams(caps.total));
        }
        if self.map.get(id).is_some_and(|g| g.streams >= caps.per_node) {
            return Err(Full::Node { id: id.id.clone(), max: caps.per_node });
        }
        if let Some(t) = token
            && self.by_token.get(t).is_some_and(|n| *n >= caps.per_token)
        {
            return Err(Full::Token { token: t.to_string(), max: caps.per_token });
        }
        self.entry(id, now_ms)?.streams += 1;
        self.streams += 1;
        if let Some(t) = token {
            *self.by_token.entry(t.to_string()).or_default() += 1;
        }
        Ok(())
    }

    /// A stream of `id` opened by `token`'s holder closed.
    pub(crate) fn close(&mut self, id: &GatewayId, token: Option<&str>, now_ms: i64) {
        if let Some(g) = self.map.get_mut(id)
            && g.streams > 0
        {
            g.streams -= 1;
            g.last_seen_ms = g.last_seen_ms.max(now_ms);
            self.streams = self.streams.saturating_sub(1);
            if let Some(t) = token
                && let Some(n) = self.by_token.get_mut(t)
            {
                *n -= 1;
                if *n == 0 {
                    self.by_token.remove(t);
                }
            }
        }
    }

    /// Streams opened from now on are held to `caps`.
    pub(crate) fn set_caps(&mut self, caps: StreamCaps) {
        self.caps = caps;
    }

    /// Live streams in all.
    pub(crate) fn streams(&self) -> usize {
        self.streams
    }

    /// One of its streams counts as watching.
    pub(crate) fn join(&mut self, id: &GatewayId, now_ms: i64) -> Result<(), Full> {
        self.entry(id, now_ms)?.watching_streams += 1;
        Ok(())
    }

    /// One of its streams stopped counting; true when it was its last (the gateway no longer
    /// holds cut-overs).
    pub(crate) fn leave(&mut self, id: &GatewayId) -> bool {
        match self.map.get_mut(id) {
            Some(g) if g.watching_streams > 0 => {
                g.watching_streams -= 1;
                g.watching_streams == 0
            }
            _ => false,
        }
    }

    /// Records an ACK; `Err` when the gateway is new and there is no room.
    pub(crate) fn ack(&mut self, id: &GatewayId, ack: Ack, now_ms: i64) -> Result<(), Full> {
        self.entry(id, now_ms)?.last_ack = Some(ack);
        Ok(())
    }

    /// Records a NACK (its message cut to [`MAX_NACK_DETAIL`] bytes).
    pub(crate) fn nack(&mut self, id: &GatewayId, version: u64, error: &str, now_ms: i64) -> Result<(), Full> {
        let g = self.entry(id, now_ms)?;
        g.last_nack =
            Some(Nack { version, error: cellpilot_core::cut_str(error, MAX_NACK_DETAIL).to_string(), at_ms: now_ms });
        g.nacks += 1;
        Ok(())
    }

    /// Gateways watching now.
    pub(crate) fn watching(&self) -> BTreeSet<GatewayId> {
        self.map.iter().filter(|(_, g)| g.watching()).map(|(id, _)| id.clone()).collect()
    }

    /// How many gateways are watching now.
    pub(crate) fn watching_count(&self) -> usize {
        self.map.values().filter(|g| g.watching()).count()
    }

    /// Every gateway, by protocol then id.
    pub(crate) fn all(&self) -> Vec<Gateway> {
        self.map.values().cloned().collect()
    }

    /// `id`'s entry.
    #[cfg(test)]
    pub(crate) fn get(&self, id: &GatewayId) -> Option<&Gateway> {
        self.map.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_ids_evicts_only_gateways_that_are_gone() {
        const MAX: usize = 1_000;
        let mut g = Gateways::new(MAX, StreamCaps { total: 10 * MAX, ..StreamCaps::default() });
        let live = GatewayId::xds("envoy-1");
        g.open(&live, Some("t"), 0).unwrap();
        g.ack(&live, Ack { version: 3, at_ms: 0 }, 0).unwrap();
        for i in 0..MAX as i64 + 50 {
            g.ack(&GatewayId::cell_weights(&format!("gw-{i}")), Ack { version: 1, at_ms: i + 1 }, i + 1).unwrap();
        }
        assert_eq!(g.all().len(), MAX);
        assert_eq!(g.get(&live).and_then(|e| e.last_ack).map(|a| a.version), Some(3), "a connected gateway stays");
        assert!(g.get(&GatewayId::cell_weights("gw-0")).is_none(), "the one gone longest went first");
        // Every one connected: the next is refused.
        for i in 0..MAX as i64 {
            let _ = g.open(&GatewayId::xds(&format!("n-{i}")), Some(&format!("t{i}")), 100_000 + i);
        }
        assert_eq!(g.open(&GatewayId::xds("one-more"), Some("t"), 200_000), Err(Full::Gateways(MAX)));
    }

    #[test]
    fn watching_counts_streams_and_nacks_are_cut() {
        let mut g = Gateways::new(10, StreamCaps::default());
        let id = GatewayId::xds("n");
        g.open(&id, Some("t"), 0).unwrap();
        g.join(&id, 0).unwrap();
        g.join(&id, 0).unwrap();
        assert!(!g.leave(&id), "one stream still watching");
        assert!(g.leave(&id));
        assert!(!g.leave(&id), "already gone");
        assert!(g.watching().is_empty());
        let long = "é".repeat(MAX_NACK_DETAIL);
        g.nack(&id, 4, &long, 10).unwrap();
        let nack = g.get(&id).and_then(|e| e.last_nack.clone()).unwrap();
        assert!(nack.error.len() <= MAX_NACK_DETAIL && nack.error.chars().all(|c| c == 'é'));
        assert_eq!((nack.version, g.get(&id).map(|e| e.nacks)), (4, Some(1)));
    }

    #[test]
    fn streams_are_capped_in_all_per_node_and_per_token() {
        let caps = StreamCaps { total: 10, per_node: 2, per_token: 4 };
        let mut g = Gateways::new(100, caps);
        let node = GatewayId::xds("n");
        g.open(&node, Some("a"), 0).unwrap();
        g.open(&node, Some("a"), 0).unwrap();
        assert_eq!(g.open(&node, Some("b"), 0), Err(Full::Node { id: "n".into(), max: 2 }));
        g.open(&GatewayId::xds("m"), Some("a"), 0).unwrap();
        g.open(&GatewayId::cell_weights("m"), Some("a"), 0).unwrap();
        let e = g.open(&GatewayId::xds("o"), Some("a"), 0).unwrap_err();
        assert_eq!(e, Full::Token { token: "a".into(), max: 4 });
        assert!(e.to_string().contains("max_streams_per_token"), "{e}");
        for i in 0..6 {
            g.open(&GatewayId::xds(&format!("p{i}")), Some(&format!("t{i}")), 0).unwrap();
        }
        assert_eq!(g.open(&GatewayId::xds("q"), Some("c"), 0), Err(Full::Streams(10)));
        // Closing gives each count back; a close of a stream never opened changes nothing.
        g.close(&node, Some("a"), 1);
        g.close(&GatewayId::xds("never"), Some("a"), 1);
        assert_eq!(g.streams(), 9);
        g.open(&GatewayId::xds("o"), Some("a"), 2).unwrap();
        assert_eq!(g.get(&node).map(|e| e.streams), Some(1));
        // Without tokens nobody is counted per token, only in all and per node.
        let mut open = Gateways::new(100, StreamCaps { total: 10, per_node: 2, per_token: 1 });
        for i in 0..5 {
            open.open(&GatewayId::xds(&format!("n{i}")), None, 0).unwrap();
        }
    }
}
