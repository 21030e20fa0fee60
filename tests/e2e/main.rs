//! End-to-end tests of the `cellpilot` binary: each test starts the real server on loopback
//! (port 0) and talks to it over real OTLP/gRPC, OTLP/HTTP and the JSON API.

// Tests spawn freely and join or abort what they spawn before they end.
#![allow(clippy::disallowed_methods)]

mod alerts;
mod auth;
mod bad_input;
mod browser;
mod cluster;
mod control;
mod demo;
mod disk_full;
mod durability;
mod gateways;
mod hostile;
mod metrics;
mod mtls;
mod ops;
mod overload;
mod pages;
mod query;
mod sla;
mod support;
mod tls;
mod traces;
mod transport;
mod xds;
