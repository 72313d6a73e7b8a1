//! Who may come in (SPEC §13), as the sessions of a loop see it: anyone, the
//! holders of a valid JWT, or whoever the backend's webhook lets in. The
//! JWT is checked on the loop (microseconds); the webhook is asked through
//! [`AskBackend`], whose answer comes back later as
//! [`Session::on_authorized`](super::Session::on_authorized).

use std::sync::Arc;

use crate::auth::AuthFailure;
use crate::auth::jwt::{Claims, JwtVerifier};
use crate::auth::webhook::{QueueFull, Webhook, WebhookRequest};
use crate::presence::ConnId;

/// Sends an upgrade to the backend for a decision, without waiting.
pub trait AskBackend: Send + Sync {
    fn ask(&self, conn: ConnId, req: WebhookRequest) -> Result<(), QueueFull>;
    /// The connection is gone: its call, if not made yet, is not wanted.
    fn cancel(&self, conn: ConnId);
}

impl AskBackend for Webhook {
    fn ask(&self, conn: ConnId, req: WebhookRequest) -> Result<(), QueueFull> {
        self.submit(conn, req)
    }

    fn cancel(&self, conn: ConnId) {
        self.cancel(conn);
    }
}

/// The loop's gate.
#[derive(Clone, Default)]
pub enum Gate {
    #[default]
    Open,
    Jwt(Arc<JwtVerifier>),
    /// The webhook, and how long its answer may take.
    Webhook(Arc<dyn AskBackend>, u64),
}

/// The JWT of a text message `token JWT` (a refresh), if it is one.
pub(super) fn refresh_token(text: &str) -> Option<&str> {
    let rest = text.trim_ascii().strip_prefix("token")?;
    if rest.is_empty() {
        return Some("");
    }
    let token = rest.trim_ascii_start();
    (token.len() < rest.len()).then_some(token)
}

/// Checks the token of an upgrade (`None`: there was none).
pub(super) fn check(
    verifier: &JwtVerifier,
    token: Option<Result<Box<str>, ()>>,
    now_ms: u64,
) -> Result<Claims, AuthFailure> {
    match token {
        None => Err(AuthFailure::Missing),
        Some(Err(())) => Err(AuthFailure::Malformed),
        Some(Ok(t)) if t.is_empty() => Err(AuthFailure::Missing),
        Some(Ok(t)) => verifier.verify(&t, now_ms),
    }
}

/// Checks a refresh (`token JWT`) of a session holding `id` until `exp`:
/// before `exp`, the same `sub`, and a later `exp` (so that resending one
/// token cannot make the loop check its signature over and over). The new
/// `exp`, as kept.
pub(super) fn check_refresh(
    gate: &Gate,
    token: &str,
    now_ms: u64,
    id: Option<&str>,
    exp: u32,
) -> Result<u32, AuthFailure> {
    let Gate::Jwt(verifier) = gate else {
        return Err(AuthFailure::Malformed);
    };
    if now_ms >= u64::from(exp) * 1000 {
        // Read in the turn its timer was due: too late all the same.
        return Err(AuthFailure::TokenExpired);
    }
    if token.is_empty() {
        return Err(AuthFailure::Missing);
    }
    let claims = verifier.verify(token, now_ms)?;
    if id != Some(&*claims.sub) {
        return Err(AuthFailure::IdMismatch);
    }
    let new = exp_u32(claims.exp);
    if new <= exp {
        return Err(AuthFailure::RefreshNotLater);
    }
    Ok(new)
}

/// A JWT `exp` (Unix seconds) as kept by a session: 32 bits, 0 for none
/// (tokens valid past 2106 expire then).
pub(super) fn exp_u32(exp: u64) -> u32 {
    exp.clamp(1, u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_messages() {
        assert_eq!(refresh_token("token abc"), Some("abc"));
        assert_eq!(refresh_token("  token \t abc.def.ghi \n"), Some("abc.def.ghi"));
        assert_eq!(refresh_token("token "), Some(""));
        assert_eq!(refresh_token("token"), Some(""));
        assert_eq!(refresh_token("tokenabc"), None);
        assert_eq!(refresh_token("heartbeat"), None);
        assert_eq!(refresh_token("my token abc"), None);
    }
}
