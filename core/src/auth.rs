//! Authentication and roles shared by every listener: `Authorization: Bearer <secret>` or
//! HTTP Basic with the secret as password (so browsers can log in), or a verified client
//! certificate whose subject `[auth] cert_roles` names ([`PeerCert`]). A caller holds roles
//! ([`Role`]); no tokens and no certificate roles configured means open access with every role.

use crate::Result;
use crate::config::{AuthConfig, CertField, CertRule, Token};
pub use crate::role::{Role, Roles};
use base64::Engine;

/// Why a request was not let in. Messages never contain the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header (or an unknown scheme).
    Missing,
    /// A secret that matches no token.
    Invalid,
    /// A valid token without the role the request needs (HTTP 403, gRPC PERMISSION_DENIED).
    Lacks(Role),
    /// A verified client certificate that no `[auth] cert_roles` entry names, and no token.
    UnknownCert,
}

impl Denied {
    /// Whether the caller is known but not allowed (403), rather than unknown (401).
    pub fn is_forbidden(self) -> bool {
        matches!(self, Denied::Lacks(_))
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Missing => f.write_str("missing credentials: send `Authorization: Bearer <token>`"),
            Denied::Invalid => f.write_str("invalid token"),
            Denied::Lacks(role) => write!(f, "this token lacks the `{role}` role ([auth] {role}_tokens)"),
            Denied::UnknownCert => f.write_str(
                "the client certificate matches no [auth] cert_roles entry; send `Authorization: Bearer <token>`",
            ),
        }
    }
}

impl std::error::Error for Denied {}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No tokens are configured: everyone is let in, with every role.
    Anonymous,
    /// The named token's holder.
    Token {
        /// Token name (the actor recorded for what they do).
        name: String,
        /// What it may do.
        roles: Roles,
    },
}

impl Principal {
    /// Name recorded as the actor of a change.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Token { name, .. } => name,
        }
    }

    /// Whether the principal holds `role`.
    pub fn has(&self, role: Role) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::Token { roles, .. } => roles.has(role),
        }
    }

    /// Whether the caller may speak as gateway id (or xDS node id) `id`. A token is bound to
    /// the ids its name matches: `gw-eu-1` to itself, a pattern such as `gw-eu-*` to every id
    /// it matches (`*` stands for any run of characters). Admin and anonymous callers are bound
    /// to none.
    pub fn may_act_as(&self, id: &str) -> bool {
        match self {
            Principal::Anonymous => true,
            Principal::Token { roles, .. } if roles.has(Role::Admin) => true,
            Principal::Token { name, .. } => matches_pattern(name.as_bytes(), id.as_bytes()),
        }
    }

    /// Why the caller may not speak as `id` (PERMISSION_DENIED's message), if it may not.
    pub fn check_acts_as(&self, id: &str) -> Result<(), String> {
        if self.may_act_as(id) {
            return Ok(());
        }
        Err(format!(
            "token `{}` may act only as the gateway ids its name matches, not `{id}` (name gateway tokens after their gateway, `gw-eu-1=secret`, or a pattern, `gw-eu-*=secret`)",
            self.actor()
        ))
    }

    /// `Ok(self)` if it holds `role`, else the refusal naming it.
    pub fn require(self, role: Role) -> Result<Self, Denied> {
        if self.has(role) { Ok(self) } else { Err(Denied::Lacks(role)) }
    }
}

/// What a verified client certificate names: its subject's common name and its URI subject
/// alternative names. The listener's TLS layer verified it against `[tls] client_ca`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's CN.
    pub cn: Option<String>,
    /// URI SANs (SPIFFE ids and the like), at most [`MAX_CERT_URIS`].
    pub uris: Vec<String>,
}

/// URI SANs read from one certificate.
pub const MAX_CERT_URIS: usize = 16;
/// Longest CN or URI kept.
const MAX_CERT_NAME: usize = 1024;

impl PeerCert {
    /// The names in a DER certificate; `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let keep = |v: &str| (v.len() <= MAX_CERT_NAME).then(|| v.to_string());
        let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).and_then(keep);
        let uris = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::URI(u) => keep(u),
                    _ => None,
                })
                .take(MAX_CERT_URIS)
                .collect(),
            _ => Vec::new(),
        };
        Some(Self { cn, uris })
    }
}

/// Checks `Authorization` header values against the configured tokens, and client
/// certificates against `[auth] cert_roles`.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Vec<Token>,
    certs: Vec<CertRule>,
}

impl Authenticator {
    /// From the `[auth]` section.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        Ok(Self { tokens: config.parsed()?, certs: CertRule::parse_all(config)? })
    }

    /// Whether any token or certificate role is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.certs.is_empty()
    }

    /// Who sent `header` (the raw `Authorization` value), or why they may not pass.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Denied> {
        self.authenticate_peer(header, None)
    }

    /// Who is calling: the token in `header` when one is sent, else the verified client
    /// certificate `cert` when `[auth] cert_roles` names it. Every configured token is
    /// compared, in constant time each, so timing tells neither which token matched nor how
    /// much of one.
    pub fn authenticate_peer(&self, header: Option<&str>, cert: Option<&PeerCert>) -> Result<Principal, Denied> {
        if !self.enabled() {
            return Ok(Principal::Anonymous);
        }
        let Some(header) = header else {
            return match cert {
                Some(c) => self.by_cert(c).ok_or(Denied::UnknownCert),
                None => Err(Denied::Missing),
            };
        };
        let secret = secret_of(header).ok_or(Denied::Missing)?;
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            let eq = constant_time_eq(t.secret.expose().as_bytes(), secret.as_bytes());
            // Secrets are unique, so at most one matches; no early exit.
            found = if eq { Some(t) } else { found };
        }
        found.map(|t| Principal::Token { name: t.name.clone(), roles: t.roles }).ok_or(Denied::Invalid)
    }

    /// [`Authenticator::authenticate`], then `role` is required.
    pub fn check(&self, header: Option<&str>, role: Role) -> Result<Principal, Denied> {
        self.authenticate(header)?.require(role)
    }

    /// [`Authenticator::authenticate_peer`], then `role` is required.
    pub fn check_peer(&self, header: Option<&str>, cert: Option<&PeerCert>, role: Role) -> Result<Principal, Denied> {
        self.authenticate_peer(header, cert)?.require(role)
    }

    /// The caller a certificate stands for: named by the first entry's matched CN or URI, with
    /// the roles of every entry it matches.
    fn by_cert(&self, cert: &PeerCert) -> Option<Principal> {
        let mut found: Option<(String, Roles)> = None;
        for rule in &self.certs {
            let matched = match rule.field {
                CertField::Cn => cert.cn.iter().find(|cn| matches_pattern(rule.pattern.as_bytes(), cn.as_bytes())),
                CertField::Uri => cert.uris.iter().find(|u| matches_pattern(rule.pattern.as_bytes(), u.as_bytes())),
            };
            if let Some(name) = matched {
                found = Some(match found {
                    Some((first, roles)) => (first, roles.union(rule.roles)),
                    None => (name.clone(), rule.roles),
                });
            }
        }
        found.map(|(name, roles)| Principal::Token { name, roles })
    }
}

fn secret_of(header: &str) -> Option<String> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (_, password) = text.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes. Linear in practice:
/// backtracks only to the latest `*`.
fn matches_pattern(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Equality whose time depends only on the configured secret's length.
fn constant_time_eq(secret: &[u8], sent: &[u8]) -> bool {
    let mut diff = u8::from(secret.len() != sent.len());
    for (i, x) in secret.iter().enumerate() {
        diff |= x ^ sent.get(i).copied().unwrap_or(!x);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: vec!["collector=s3cr3t".into()],
            ingest_tokens: vec!["otel=1ngest".into()],
            read_tokens: vec!["viewer=r3ad".into(), "both=b0th".into()],
            gateway_tokens: vec!["gw=g4te".into(), "both=b0th".into()],
            admin_tokens: vec!["ops=adm1n".into()],
            cert_roles: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn open_without_tokens() {
        assert_eq!(Authenticator::default().check(None, Role::Admin), Ok(Principal::Anonymous));
    }

    #[test]
    fn bearer_and_basic() {
        let a = auth();
        assert_eq!(a.authenticate(Some("Bearer s3cr3t")).unwrap().actor(), "collector");
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:adm1n");
        assert_eq!(a.authenticate(Some(&format!("Basic {basic}"))).unwrap().actor(), "ops");
        assert_eq!(a.authenticate(None), Err(Denied::Missing));
        assert_eq!(a.authenticate(Some("Bearer nope")), Err(Denied::Invalid));
        assert_eq!(a.authenticate(Some("Bearer s3cr3")), Err(Denied::Invalid), "a prefix is no match");
        assert_eq!(a.authenticate(Some("Bearer s3cr3tt")), Err(Denied::Invalid));
    }

    #[test]
    fn roles_are_granted_by_list_and_admin_has_all() {
        let a = auth();
        let has = |secret: &str, role| a.check(Some(&format!("Bearer {secret}")), role).is_ok();
        let table = [
            ("s3cr3t", [true, true, false, false]),
            ("1ngest", [true, false, false, false]),
            ("r3ad", [false, true, false, false]),
            ("g4te", [false, false, true, false]),
            ("b0th", [false, true, true, false]),
            ("adm1n", [true, true, true, true]),
        ];
        for (secret, want) in table {
            let got = [Role::Ingest, Role::Read, Role::Gateway, Role::Admin].map(|r| has(secret, r));
            assert_eq!(got, want, "{secret}");
        }
        let e = a.check(Some("Bearer r3ad"), Role::Admin).unwrap_err();
        assert!(e.is_forbidden() && e.to_string().contains("`admin` role"), "{e}");
        let dup = AuthConfig { tokens: vec!["a=x".into()], read_tokens: vec!["b=x".into()], ..Default::default() };
        assert!(Authenticator::new(&dup).unwrap_err().to_string().contains("same secret"));
    }

    #[test]
    fn gateway_tokens_are_bound_to_the_ids_their_names_match() {
        let token = |name: &str, roles| Principal::Token { name: name.into(), roles: Roles::of(roles) };
        let one = token("gw-eu-1", &[Role::Gateway]);
        assert!(one.may_act_as("gw-eu-1"));
        assert!(!one.may_act_as("gw-eu-10") && !one.may_act_as("gw-eu-") && !one.may_act_as(""));
        let eu = token("gw-eu-*", &[Role::Gateway]);
        assert!(eu.may_act_as("gw-eu-1") && eu.may_act_as("gw-eu-") && eu.may_act_as("gw-eu-a-b"));
        assert!(!eu.may_act_as("gw-us-1") && !eu.may_act_as("x-gw-eu-1"));
        let mid = token("*-eu-*-envoy", &[Role::Gateway]);
        assert!(mid.may_act_as("gw-eu-1-envoy") && mid.may_act_as("-eu--envoy"));
        assert!(!mid.may_act_as("gw-eu-1-envoy2"));
        assert!(token("*", &[Role::Gateway]).may_act_as("anything"));
        assert!(token("ops", &[Role::Admin]).may_act_as("gw-eu-1"), "admin speaks for every gateway");
        assert!(Principal::Anonymous.may_act_as("gw-eu-1"));
        let e = one.check_acts_as("gw-us-2").unwrap_err();
        assert!(e.contains("gw-eu-1") && e.contains("gw-us-2"), "{e}");
        // Many stars against a long id stay cheap.
        let stars = token(&"*a".repeat(100), &[Role::Gateway]);
        assert!(!stars.may_act_as(&"b".repeat(256)));
    }

    #[test]
    fn certificates_stand_for_the_callers_cert_roles_name() {
        let config = AuthConfig {
            read_tokens: vec!["viewer=r3ad".into()],
            cert_roles: [("CN=gw-eu-*", "gateway"), ("URI=spiffe://prod/ops/*", "admin"), ("CN=gw-eu-1", "read")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let a = Authenticator::new(&config).unwrap();
        let cert = |cn: &str, uris: &[&str]| PeerCert {
            cn: Some(cn.to_string()),
            uris: uris.iter().map(|u| u.to_string()).collect(),
        };
        let gw = a.authenticate_peer(None, Some(&cert("gw-eu-1", &[]))).unwrap();
        assert_eq!(gw.actor(), "gw-eu-1");
        assert!(gw.has(Role::Gateway) && gw.has(Role::Read) && !gw.has(Role::Admin), "roles of every match");
        assert!(gw.may_act_as("gw-eu-1") && !gw.may_act_as("gw-eu-2"), "bound to its own CN");
        let ops = a.check_peer(None, Some(&cert("laptop", &["spiffe://prod/ops/alice"])), Role::Admin).unwrap();
        assert_eq!(ops.actor(), "spiffe://prod/ops/alice");
        assert_eq!(a.authenticate_peer(None, Some(&cert("gw-us-1", &[]))), Err(Denied::UnknownCert));
        assert_eq!(a.authenticate_peer(None, None), Err(Denied::Missing));
        // A token sent wins over the certificate, and a wrong one is not rescued by it.
        let who = a.authenticate_peer(Some("Bearer r3ad"), Some(&cert("gw-eu-1", &[]))).unwrap();
        assert_eq!(who.actor(), "viewer");
        let wrong = a.authenticate_peer(Some("Bearer nope"), Some(&cert("gw-eu-1", &[])));
        assert_eq!(wrong, Err(Denied::Invalid));
        for (key, value, names) in [
            ("O=acme", "read", "CN=<name>"),
            ("CN=", "read", "must not be empty"),
            ("CN=x", "reader", "unknown role `reader`"),
        ] {
            let bad = AuthConfig { cert_roles: [(key.to_string(), value.to_string())].into(), ..Default::default() };
            let e = Authenticator::new(&bad).unwrap_err().to_string();
            assert!(e.contains(names) && e.contains(key), "{e}");
        }
    }

    #[test]
    fn a_real_certificate_gives_its_cn_and_uris() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "gw-eu-1");
        params.subject_alt_names.push(rcgen::SanType::URI("spiffe://prod/gw-eu-1".try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerCert::from_der(cert.der()).unwrap();
        assert_eq!(peer.cn.as_deref(), Some("gw-eu-1"));
        assert_eq!(peer.uris, ["spiffe://prod/gw-eu-1"]);
        assert_eq!(PeerCert::from_der(b"not a certificate"), None);
    }
}
