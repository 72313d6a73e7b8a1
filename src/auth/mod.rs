//! Who may claim an id (SPEC §13): a JWT connection token checked on the
//! loop ([`jwt`]), or the backend asked through a webhook on helper threads
//! ([`webhook`]). Neither imports the server: the session asks the verifier,
//! and the server wires the webhook's answers back to its loops.

pub mod jwt;
pub mod webhook;

/// Why a client was refused: the `reason` label of
/// `wsbeat_auth_failures_total`, and the text of its close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `?token=` (or an empty one).
    Missing,
    /// Longer than [`jwt::MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three base64url parts of JSON, or claims of the wrong types.
    Malformed,
    /// `alg` is `none`, unknown, or not of the configured key's family
    /// (an HS token against a public key, and the reverse).
    Algorithm,
    /// A `typ` header other than `JWT`.
    Type,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed (at the upgrade, or at a refresh).
    Expired,
    /// `nbf` is still to come.
    NotYetValid,
    /// No `exp` claim.
    MissingExp,
    /// No `sub`, or one that breaks the client id rules.
    Subject,
    /// `iss` other than `--auth-jwt-issuer`.
    Issuer,
    /// `aud` without `--auth-jwt-audience`.
    Audience,
    /// A `?client_id=`, heartbeat id or refreshed token naming another id.
    IdMismatch,
    /// A refresh whose `exp` is not later than the current token's (each
    /// refresh costs a signature check: one token is accepted once).
    RefreshNotLater,
    /// The token's `exp` passed without a refresh (the session's timer).
    TokenExpired,
    /// The webhook answered 401.
    WebhookUnauthorized,
    /// The webhook answered 403.
    WebhookForbidden,
    /// The webhook failed, timed out, or answered something else.
    WebhookError,
    /// The webhook queue was full: the upgrade got 503.
    WebhookBusy,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 19] = [
        AuthFailure::Missing,
        AuthFailure::TooLarge,
        AuthFailure::Malformed,
        AuthFailure::Algorithm,
        AuthFailure::Type,
        AuthFailure::Signature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::MissingExp,
        AuthFailure::Subject,
        AuthFailure::Issuer,
        AuthFailure::Audience,
        AuthFailure::IdMismatch,
        AuthFailure::RefreshNotLater,
        AuthFailure::TokenExpired,
        AuthFailure::WebhookUnauthorized,
        AuthFailure::WebhookForbidden,
        AuthFailure::WebhookError,
        AuthFailure::WebhookBusy,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::TooLarge => "too_large",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::Type => "type",
            AuthFailure::Signature => "signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::MissingExp => "missing_exp",
            AuthFailure::Subject => "subject",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Audience => "audience",
            AuthFailure::IdMismatch => "id_mismatch",
            AuthFailure::RefreshNotLater => "refresh_not_later",
            AuthFailure::TokenExpired => "token_expired",
            AuthFailure::WebhookUnauthorized => "webhook_unauthorized",
            AuthFailure::WebhookForbidden => "webhook_forbidden",
            AuthFailure::WebhookError => "webhook_error",
            AuthFailure::WebhookBusy => "webhook_busy",
        }
    }

    /// The close code and reason the client gets (`WebhookBusy` is a `503`
    /// before the upgrade, never a close).
    pub fn close(self) -> (u16, &'static str) {
        match self {
            AuthFailure::Missing => (4401, "unauthorized: missing token"),
            AuthFailure::TooLarge => (4401, "unauthorized: token too large"),
            AuthFailure::Malformed => (4401, "unauthorized: malformed token"),
            AuthFailure::Algorithm => (4401, "unauthorized: algorithm not allowed"),
            AuthFailure::Type => (4401, "unauthorized: wrong token type"),
            AuthFailure::Signature => (4401, "unauthorized: bad signature"),
            AuthFailure::Expired => (4401, "unauthorized: token expired"),
            AuthFailure::NotYetValid => (4401, "unauthorized: token not yet valid"),
            AuthFailure::MissingExp => (4401, "unauthorized: missing exp"),
            AuthFailure::Subject => (4401, "unauthorized: missing or invalid sub"),
            AuthFailure::Issuer => (4401, "unauthorized: wrong issuer"),
            AuthFailure::Audience => (4401, "unauthorized: wrong audience"),
            AuthFailure::IdMismatch => (1008, "client id mismatch"),
            AuthFailure::RefreshNotLater => (4401, "unauthorized: refreshed token does not expire later"),
            AuthFailure::TokenExpired => (4401, "token expired"),
            AuthFailure::WebhookUnauthorized => (4401, "unauthorized: refused by the auth webhook"),
            AuthFailure::WebhookForbidden => (4403, "forbidden"),
            AuthFailure::WebhookError | AuthFailure::WebhookBusy => (1011, "try again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_reasons_fit_a_close_frame() {
        let mut seen = std::collections::HashSet::new();
        for f in AuthFailure::ALL {
            assert!(seen.insert(f.label()), "{f:?}");
            assert!(f.close().1.len() <= 123, "{f:?}");
        }
    }
}
