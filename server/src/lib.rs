//! cellpilot-server: `cellpilot serve` — binds every listener, replays the WAL, starts the owned
//! background tasks and shuts them down in order.
//!
//! # Layout
//! - [`serve`]: [`serve::start`] (every listener bound and ready when it returns) and
//!   [`serve::serve`] (until SIGINT/SIGTERM).
//! - `cluster`: joining the nodes that share an object store (heartbeat, Flight, peers).
//! - `gate`: every listener's admission: connection caps (total, per IP), the idle timeout, accept
//!   back-off.
//! - `listen`: binding and building every listener (HTTP and gRPC) with the `[transport]` limits,
//!   and the HTTP listeners' lingering closes.
//! - `tls`: `[tls]` certificates for the HTTP and gRPC listeners.

mod cluster;
mod gate;
mod listen;
pub mod serve;
mod tls;

pub use tls::install_crypto_provider;
