//! `[auth]`, `[tls]` and `[transport]`: who may connect, how, and how much each connection may hold.

use super::Dur;
use crate::role::{Role, Roles};
use crate::secret::Secret;
use crate::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[auth]`: `name=secret` tokens by role. A secret listed under several roles has them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Ingest and read (the role pair of the first version).
    pub tokens: Vec<Secret>,
    /// OTLP export only.
    pub ingest_tokens: Vec<Secret>,
    /// Pages, API, SQL and `/metrics`.
    pub read_tokens: Vec<Secret>,
    /// CellWeights Get/Watch/Ack (an Ack only for the gateway_id of the caller's own Watch),
    /// xDS, and reporting cut-overs as `cell.cutover` log events. A token's name binds it:
    /// `gw-eu-1=secret` may watch only as gateway id (or xDS node id) `gw-eu-1`, `gw-eu-*=secret`
    /// as any id the pattern matches (`*`: any run of characters).
    pub gateway_tokens: Vec<Secret>,
    /// Everything, weight overrides included.
    pub admin_tokens: Vec<Secret>,
    /// Roles of clients that present a verified certificate (`[tls] client_ca`) and no token:
    /// `"CN=gw-eu-1" = "gateway"`, or a SAN URI, `"URI=spiffe://prod/gw-eu-1" = "gateway"`;
    /// `*` in a key matches any run of characters (`"CN=gw-eu-*"`). Roles as the token lists
    /// name them, comma-separated (`"read,gateway"`). The caller's name is the certificate's
    /// CN or URI, so a gateway certificate is bound to the gateway id it names.
    pub cert_roles: BTreeMap<String, String>,
}

/// One parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Who holds it; recorded as the actor of what they do.
    pub name: String,
    /// The secret itself; never logged.
    pub secret: Secret,
    /// What it may do.
    pub roles: Roles,
}

impl AuthConfig {
    /// Every token, parsed, one per secret with the union of its roles.
    pub fn parsed(&self) -> Result<Vec<Token>> {
        let lists: [(&str, &Vec<Secret>, Roles); 5] = [
            ("auth.tokens", &self.tokens, Roles::of(&[Role::Ingest, Role::Read])),
            ("auth.ingest_tokens", &self.ingest_tokens, Roles::of(&[Role::Ingest])),
            ("auth.read_tokens", &self.read_tokens, Roles::of(&[Role::Read])),
            ("auth.gateway_tokens", &self.gateway_tokens, Roles::of(&[Role::Gateway])),
            ("auth.admin_tokens", &self.admin_tokens, Roles::ALL),
        ];
        let mut out: Vec<Token> = Vec::new();
        for (key, list, roles) in lists {
            for (i, t) in list.iter().enumerate() {
                let Some((name, secret)) = t.expose().split_once('=') else {
                    return Err(Error::Config(format!("{key}[{i}]: expected `name=secret`")));
                };
                if name.is_empty() || secret.is_empty() {
                    return Err(Error::Config(format!("{key}[{i}]: name and secret must not be empty")));
                }
                match out.iter_mut().find(|t| t.secret.expose() == secret) {
                    Some(t) if t.name != name => {
                        return Err(Error::Config(format!(
                            "{key}[{i}]: token `{name}` has the same secret as `{}`",
                            t.name
                        )));
                    }
                    Some(t) => t.roles = t.roles.union(roles),
                    None => out.push(Token { name: name.into(), secret: Secret::new(secret), roles }),
                }
            }
        }
        Ok(out)
    }
}

/// `[transport]`: limits every listener applies to its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Open connections per listener, counted on accept; more are closed at once.
    pub max_connections: usize,
    /// Open connections per listener from one IP address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection that sends nothing for this long after it opens is closed.
    pub idle_timeout: Dur,
    /// Time a client has to send an export's body once its headers arrived; a body that stalls
    /// longer is dropped (408 / DEADLINE_EXCEEDED) and its ingest slot freed.
    pub body_read_timeout: Dur,
    /// HTTP/2 streams a gRPC client may open on one connection.
    pub max_concurrent_streams: u32,
    /// gRPC requests served at once per connection.
    pub concurrency_per_connection: usize,
    /// HTTP/2 PING interval on idle CellWeights connections (and TCP keepalive everywhere).
    pub keepalive_interval: Dur,
    /// A peer that does not answer a PING within this is disconnected (its Watch streams end).
    pub keepalive_timeout: Dur,
    /// Time a client has to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Dur,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_connections: 1_024,
            max_connections_per_ip: 64,
            idle_timeout: Dur::secs(10),
            body_read_timeout: Dur::secs(30),
            max_concurrent_streams: 128,
            concurrency_per_connection: 64,
            keepalive_interval: Dur::secs(10),
            keepalive_timeout: Dur::secs(10),
            header_read_timeout: Dur::secs(10),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA certificates: every listener asks clients for a certificate signed by one of
    /// them, and cluster nodes verify each other against them. Empty: no client certificates.
    pub client_ca: String,
    /// With `client_ca`: `required` (a handshake without a valid client certificate fails) or
    /// `optional` (a certificate offered is verified; clients without one use tokens).
    pub client_auth: ClientAuth,
}

/// `[tls] client_auth`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Every connection presents a certificate signed by `client_ca`.
    #[default]
    Required,
    /// A certificate is verified when offered.
    Optional,
}

/// Which name of a certificate a `cert_roles` entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertField {
    Cn,
    Uri,
}

/// One `[auth] cert_roles` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRule {
    pub(crate) field: CertField,
    pub(crate) pattern: String,
    pub(crate) roles: Roles,
}

impl CertRule {
    /// Every `[auth] cert_roles` entry; errors name the entry and what is wrong.
    pub fn parse_all(config: &AuthConfig) -> Result<Vec<CertRule>> {
        let bad = |key: &str, why: String| Error::Config(format!("auth.cert_roles.\"{key}\": {why}"));
        let mut out = Vec::new();
        for (key, roles) in &config.cert_roles {
            let (field, pattern) = match key.split_once('=') {
                Some(("CN", p)) => (CertField::Cn, p),
                Some(("URI", p)) => (CertField::Uri, p),
                _ => return Err(bad(key, "expected `CN=<name>` or `URI=<uri>`".into())),
            };
            if pattern.is_empty() {
                return Err(bad(key, "the name must not be empty".into()));
            }
            let mut set = Vec::new();
            for r in roles.split(',').map(str::trim) {
                set.push(Role::parse(r).ok_or_else(|| {
                    bad(key, format!("unknown role `{r}` (ingest, read, gateway, admin; comma-separated)"))
                })?);
            }
            out.push(CertRule { field, pattern: pattern.to_string(), roles: Roles::of(&set) });
        }
        Ok(out)
    }
}
