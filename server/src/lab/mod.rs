//! The shared lab: who is asking ([`Caller`]), and what they may see.
//!
//! In single mode (no accounts) every request is the one anonymous user's, who owns
//! everything. In lab mode the authentication layer puts the signed-in user's [`Caller`]
//! into the request's extensions before any handler runs, and refuses a request without
//! one; handlers take it as an extractor and pass it down, so that ownership is decided in
//! one place ([`Caller::may_see`]).

pub mod auth;
pub mod command;
pub mod keys;
pub mod quota;
pub mod testing;

pub use auth::{Credential, Lab};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gpulab_shared::lab::Role;

/// The user behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user's name in lab mode; `None` for single mode's anonymous user.
    pub user: Option<String>,
    pub role: Role,
}

impl Caller {
    /// Single mode's one user: owns every job (whose owner is `None`) and may do anything
    /// the server's token allows.
    pub fn anonymous() -> Self {
        Caller {
            user: None,
            role: Role::Admin,
        }
    }

    /// A signed-in user of lab mode.
    pub fn user(name: &str, role: Role) -> Self {
        Caller {
            user: Some(name.to_owned()),
            role,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The owner recorded for what this caller submits.
    pub fn owner(&self) -> Option<String> {
        self.user.clone()
    }

    /// Whether this caller may see (and cancel) what `owner` submitted: their own, or
    /// anything for an admin (single mode's anonymous user is one).
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.is_admin() || self.user.as_deref() == owner
    }
}

/// The request's caller: the one the authentication layer stored, or single mode's
/// anonymous user where no layer stored one.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_see_their_own_and_admins_everything() {
        let alice = Caller::user("alice", Role::User);
        assert!(alice.may_see(Some("alice")));
        assert!(!alice.may_see(Some("bob")));
        assert!(!alice.may_see(None));
        assert!(Caller::user("root", Role::Admin).may_see(Some("bob")));
        assert!(Caller::anonymous().may_see(None));
    }
}
