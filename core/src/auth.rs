//! Token authentication shared by every listener: `Authorization: Bearer <secret>` or HTTP Basic
//! with the secret as password (so browsers can log in). No tokens configured means open access.

use crate::Result;
use crate::config::{AuthConfig, Token};
use base64::Engine;

/// Why a request was not let in. Messages never contain the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header (or an unknown scheme).
    Missing,
    /// A secret that matches no token.
    Invalid,
    /// A valid token without the admin right where one is needed.
    NotAdmin,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Denied::Missing => "missing credentials: send `Authorization: Bearer <token>`",
            Denied::Invalid => "invalid token",
            Denied::NotAdmin => "this action needs an admin token",
        })
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No tokens are configured: everyone is let in.
    Anonymous,
    /// The named token's holder.
    Token {
        /// Token name (the actor recorded for what they do).
        name: String,
        /// Whether the token is an admin token.
        admin: bool,
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
}

/// Checks `Authorization` header values against the configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Vec<Token>,
}

impl Authenticator {
    /// From the `[auth]` section.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        Ok(Self { tokens: config.parsed()? })
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Who sent `header` (the raw `Authorization` value), or why they may not pass.
    pub fn check(&self, header: Option<&str>) -> Result<Principal, Denied> {
        if self.tokens.is_empty() {
            return Ok(Principal::Anonymous);
        }
        let secret = header.and_then(secret_of).ok_or(Denied::Missing)?;
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.secret.as_bytes(), secret.as_bytes()))
            .map(|t| Principal::Token { name: t.name.clone(), admin: t.admin })
            .ok_or(Denied::Invalid)
    }

    /// Like [`Authenticator::check`], but only admin tokens pass.
    pub fn check_admin(&self, header: Option<&str>) -> Result<Principal, Denied> {
        match self.check(header)? {
            p @ (Principal::Anonymous | Principal::Token { admin: true, .. }) => Ok(p),
            Principal::Token { .. } => Err(Denied::NotAdmin),
        }
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: vec!["collector=s3cr3t".into()],
            admin_tokens: vec!["ops=adm1n".into()],
        })
        .unwrap()
    }

    #[test]
    fn open_without_tokens() {
        assert_eq!(Authenticator::default().check(None), Ok(Principal::Anonymous));
    }

    #[test]
    fn bearer_and_basic() {
        let a = auth();
        assert_eq!(a.check(Some("Bearer s3cr3t")).unwrap().actor(), "collector");
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:adm1n");
        assert_eq!(a.check(Some(&format!("Basic {basic}"))).unwrap().actor(), "ops");
        assert_eq!(a.check(None), Err(Denied::Missing));
        assert_eq!(a.check(Some("Bearer nope")), Err(Denied::Invalid));
        assert_eq!(a.check_admin(Some("Bearer s3cr3t")), Err(Denied::NotAdmin));
        assert!(a.check_admin(Some("Bearer adm1n")).is_ok());
    }
}
