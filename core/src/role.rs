//! What a caller may do: [`Role`] and sets of them ([`Roles`]), as tokens and certificate rules grant them.

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send OTLP.
    Ingest,
    /// Read pages, the API, SQL and `/metrics`.
    Read,
    /// Follow and acknowledge weights (CellWeights), report cut-overs.
    Gateway,
    /// Everything, weight overrides included.
    Admin,
}

impl Role {
    /// The role's name, as in `[auth] <name>_tokens`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` (as in `[auth] cert_roles` values).
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Ingest, Role::Read, Role::Gateway, Role::Admin].into_iter().find(|r| r.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles; [`Role::Admin`] implies every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles(0b1111);

    /// The set holding `roles`.
    pub fn of(roles: &[Role]) -> Self {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Both sets' roles.
    pub fn union(self, other: Roles) -> Self {
        Roles(self.0 | other.0)
    }

    /// Whether `role` is granted (directly or through admin).
    pub fn has(self, role: Role) -> bool {
        self.0 & (role.bit() | Role::Admin.bit()) != 0
    }
}
