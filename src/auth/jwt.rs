//! JWT connection tokens (SPEC §13), verified with `jsonwebtoken`: the key
//! decides the algorithms allowed, the time is the caller's.
//!
//! The header is read here first, so that `alg: none`, unknown algorithms
//! and algorithm confusion (an HS token against a public key) are refused
//! before any key is used. The signature is `jsonwebtoken`'s; its clock-based
//! checks are off, and every claim is checked here against the given time.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::AuthFailure;
use crate::protocol::heartbeat::is_valid_client_id;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// `exp` is capped here so that callers may take it to milliseconds
/// (`exp * 1000`) without overflow; that is still 584 million years away.
const MAX_EXP_SECS: u64 = u64::MAX / 1000;

const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// What verifies tokens.
#[derive(Clone)]
pub enum JwtKey {
    /// `--auth-jwt-secret`: HS256, HS384, HS512.
    Secret(Vec<u8>),
    /// `--auth-jwt-public-key`: the PEM file's contents (RSA: RS256; EC
    /// P-256: ES256; Ed25519: EdDSA).
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(..)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

/// `--auth-jwt-*`.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    pub key: JwtKey,
    /// When set, `iss` must be this.
    pub issuer: Option<String>,
    /// When set, `aud` must hold this; when not, a token with `aud` is
    /// refused (it was meant for someone else).
    pub audience: Option<String>,
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The client id (valid by the id rules of SPEC §3).
    pub sub: Box<str>,
    /// Unix seconds (at most `u64::MAX / 1000`, so it fits in ms).
    pub exp: u64,
}

/// Verifies tokens against one key. Cheap to share (`Arc`) between loops.
pub struct JwtVerifier {
    key: DecodingKey,
    /// One entry per algorithm the key allows; the header's `alg` picks it.
    validations: Vec<(Algorithm, Validation)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtVerifier {
    /// Fails with one line naming the cause (a PEM that is not a public key
    /// of a supported type, an empty secret).
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, String> {
        let (key, algs) = match &settings.key {
            JwtKey::Secret(secret) => {
                // jsonwebtoken refuses an empty secret itself; say why.
                let key = DecodingKey::from_secret(secret).map_err(|_| "the secret is empty".to_string())?;
                if secret.len() < 32 {
                    // RFC 7518 §3.2: an HS256 key has at least 256 bits; a
                    // short secret can be found by guessing offline.
                    log::warn!(
                        "the JWT secret is {} bytes: use 32 random bytes or more (RFC 7518 §3.2)",
                        secret.len()
                    );
                }
                (key, HMAC_ALGS)
            }
            JwtKey::PublicKeyPem(pem) => public_key(pem)?,
        };
        Ok(JwtVerifier {
            key,
            validations: algs.iter().map(|&a| (a, validation(a))).collect(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// Checks `token` at `now_ms` (Unix ms): size, header (`alg` of the
    /// key's family, `typ` absent or `JWT`), signature, `exp` (required,
    /// after now), `nbf` (if present, not after now), `iss`, `aud`, `sub`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::TooLarge);
        }
        if token.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthFailure::Malformed);
        };
        let validation = self.check_header(header)?;

        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, validation)
            .map_err(|e| failure_of(e.kind()))?
            .claims;
        self.check_claims(&claims, now_ms / 1000)
    }

    /// Reads the header ourselves: jsonwebtoken cannot even parse `none`,
    /// which would make it `Malformed` rather than `Algorithm`.
    fn check_header(&self, encoded: &str) -> Result<&Validation, AuthFailure> {
        let header = URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
            .ok_or(AuthFailure::Malformed)?;
        // No `alg` (or not a string) names no algorithm we allow.
        let Some(Value::String(alg)) = header.get("alg") else {
            return Err(AuthFailure::Algorithm);
        };
        let alg = Algorithm::from_str(alg).map_err(|_| AuthFailure::Algorithm)?;
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(AuthFailure::Algorithm)?;
        match header.get("typ") {
            None | Some(Value::Null) => {}
            // RFC 7515 §4.1.9: the "application/" prefix may be written out.
            Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt") => {}
            Some(_) => return Err(AuthFailure::Type),
        }
        Ok(validation)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Claims, AuthFailure> {
        // Types first: a claim of the wrong type is a malformed token,
        // whatever else is wrong with it.
        let exp = numeric_date(claims.get("exp"))?;
        let nbf = numeric_date(claims.get("nbf"))?;
        let iss = string_claim(claims.get("iss"))?;
        let aud = audience(claims.get("aud"))?;
        let sub = string_claim(claims.get("sub"))?;

        let exp = exp.ok_or(AuthFailure::MissingExp)?;
        if exp <= now {
            return Err(AuthFailure::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now) {
            return Err(AuthFailure::NotYetValid);
        }
        if let Some(want) = &self.issuer
            && iss != Some(want.as_str())
        {
            return Err(AuthFailure::Issuer);
        }
        match (&self.audience, aud) {
            (Some(want), Some(aud)) if aud.contains(&want.as_str()) => {}
            (None, None) => {}
            _ => return Err(AuthFailure::Audience),
        }
        let sub = sub
            .filter(|s| is_valid_client_id(s.as_bytes()))
            .ok_or(AuthFailure::Subject)?;
        Ok(Claims {
            sub: sub.into(),
            exp: exp.min(MAX_EXP_SECS),
        })
    }
}

/// jsonwebtoken's own time checks are off: the time is the caller's.
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v.reject_tokens_expiring_in_less_than = 0;
    v.required_spec_claims.clear();
    v
}

/// What jsonwebtoken's refusals mean to the client.
fn failure_of(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthFailure::Algorithm,
        // Key problems: new() vetted the key, so the token cannot be
        // verified with it; no other cause is visible to the client.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => AuthFailure::Signature,
        // The claim checks are ours; these only come if that changes.
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::Issuer,
        ErrorKind::InvalidAudience => AuthFailure::Audience,
        ErrorKind::InvalidSubject => AuthFailure::Subject,
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => AuthFailure::MissingExp,
            "sub" => AuthFailure::Subject,
            "iss" => AuthFailure::Issuer,
            "aud" => AuthFailure::Audience,
            _ => AuthFailure::Malformed,
        },
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_) => AuthFailure::Malformed,
        _ => AuthFailure::Malformed,
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds, maybe
/// with a fraction (dropped). `null` counts as absent.
fn numeric_date(v: Option<&Value>) -> Result<Option<u64>, AuthFailure> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                return Ok(Some(secs));
            }
            match n.as_f64() {
                // `as` saturates: 1e300 becomes u64::MAX, far in the future.
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
                _ => Err(AuthFailure::Malformed),
            }
        }
        Some(_) => Err(AuthFailure::Malformed),
    }
}

fn string_claim(v: Option<&Value>) -> Result<Option<&str>, AuthFailure> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthFailure::Malformed),
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audience(v: Option<&Value>) -> Result<Option<Vec<&str>>, AuthFailure> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or(AuthFailure::Malformed))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(AuthFailure::Malformed),
    }
}

const NOT_A_PUBLIC_KEY: &str = "not a PEM public key (RSA, EC P-256/P-384 or Ed25519)";
const BAD_DER: &str = "the PEM public key is not valid DER";

// Object identifiers, DER-encoded contents (RFC 8017, RFC 5480, RFC 8410).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

/// The key of a PEM file and the algorithms it may verify. The key type is
/// read here (jsonwebtoken would also take a certificate, and cannot tell
/// P-256 from P-384), and the key is checked enough that a bad one fails
/// now rather than every token later.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), String> {
    let (label, body) = pem_block(pem).ok_or(NOT_A_PUBLIC_KEY)?;
    match label {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        l if l.ends_with("PRIVATE KEY") => {
            return Err("a private key, not a public key (openssl pkey -in KEY -pubout gives it)".into());
        }
        l if l.ends_with("CERTIFICATE") => {
            return Err("a certificate, not a public key (openssl x509 -in CERT -pubkey -noout gives it)".into());
        }
        _ => return Err(NOT_A_PUBLIC_KEY.into()),
    }
    // Whitespace (line breaks) is no part of the base64.
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| "the PEM block is not valid base64".to_string())?;
    if label == "RSA PUBLIC KEY" {
        rsa_key(&der)?;
        return Ok((DecodingKey::from_rsa_der(&der), RSA_ALGS));
    }
    spki_key(&der)
}

/// SubjectPublicKeyInfo (RFC 5280 §4.1): algorithm, parameters, key bits.
fn spki_key(der: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), String> {
    let (spki, rest) = der_element(der, 0x30).ok_or(BAD_DER)?;
    let (alg_id, rest2) = der_element(spki, 0x30).ok_or(BAD_DER)?;
    let (bits, rest3) = der_element(rest2, 0x03).ok_or(BAD_DER)?;
    let (oid, params) = der_element(alg_id, 0x06).ok_or(BAD_DER)?;
    // A BIT STRING starts with its count of unused bits: none, for a key.
    let key = match bits.split_first() {
        Some((0, key)) if rest.is_empty() && rest3.is_empty() => key,
        _ => return Err(BAD_DER.into()),
    };
    match oid {
        OID_RSA => {
            // Parameters: NULL, or absent.
            if !(params.is_empty() || params == [0x05, 0x00]) {
                return Err(BAD_DER.into());
            }
            rsa_key(key)?;
            Ok((DecodingKey::from_rsa_der(key), RSA_ALGS))
        }
        OID_EC => {
            let (curve, rest) = der_element(params, 0x06).ok_or(BAD_DER)?;
            let (algs, len): (&'static [Algorithm], usize) = match curve {
                OID_P256 if rest.is_empty() => (&[Algorithm::ES256], 65),
                OID_P384 if rest.is_empty() => (&[Algorithm::ES384], 97),
                _ => return Err("an EC key on a curve other than P-256 or P-384".into()),
            };
            // The uncompressed point 04 || x || y, what aws-lc verifies with.
            if key.len() != len || key.first() != Some(&0x04) {
                return Err("the EC public key is not an uncompressed point".into());
            }
            Ok((DecodingKey::from_ec_der(key), algs))
        }
        OID_ED25519 => {
            if !params.is_empty() || key.len() != 32 {
                return Err(BAD_DER.into());
            }
            Ok((DecodingKey::from_ed_der(key), &[Algorithm::EdDSA]))
        }
        OID_ED448 => Err("an Ed448 key (only Ed25519 is supported)".into()),
        _ => Err(NOT_A_PUBLIC_KEY.into()),
    }
}

/// RSAPublicKey (RFC 8017 §A.1.1): the modulus must be of a size aws-lc
/// verifies (2048 to 8192 bits), or every token would fail.
fn rsa_key(der: &[u8]) -> Result<(), String> {
    let (seq, rest) = der_element(der, 0x30).ok_or(BAD_DER)?;
    let (n, seq_rest) = der_element(seq, 0x02).ok_or(BAD_DER)?;
    let (e, seq_rest) = der_element(seq_rest, 0x02).ok_or(BAD_DER)?;
    if !rest.is_empty() || !seq_rest.is_empty() || e.is_empty() {
        return Err(BAD_DER.into());
    }
    // Leading zero bytes (a sign byte, padding) are no part of the size.
    let zeros = n.iter().take_while(|&&b| b == 0).count();
    let n = n.get(zeros..).unwrap_or_default();
    let bits = match n.first() {
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(2048..=8192).contains(&bits) {
        return Err(format!("an RSA key of {bits} bits (2048 to 8192 are supported)"));
    }
    Ok(())
}

/// The first PEM block: its label and base64 body.
fn pem_block(input: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(input).ok()?;
    let after_begin = text.get(text.find("-----BEGIN ")? + "-----BEGIN ".len()..)?;
    let label_end = after_begin.find("-----")?;
    let label = after_begin.get(..label_end)?;
    if label.contains(['\r', '\n']) {
        return None;
    }
    let body = after_begin.get(label_end + "-----".len()..)?;
    let end = body.find(&format!("-----END {label}-----"))?;
    Some((label, body.get(..end)?))
}

/// One DER element of tag `tag` at the start of `input`: its contents and
/// what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form, 1 to 4 length bytes (0x80 alone is BER's indefinite
        // length, not DER).
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(n)?;
        let len = len_bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW_MS: u64 = 1_700_000_000_123;
    const NOW: u64 = NOW_MS / 1000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn settings(key: JwtKey) -> JwtSettings {
        JwtSettings {
            key,
            issuer: None,
            audience: None,
        }
    }

    fn verifier(key: JwtKey) -> JwtVerifier {
        JwtVerifier::new(&settings(key)).unwrap()
    }

    fn hs() -> JwtVerifier {
        verifier(JwtKey::Secret(SECRET.to_vec()))
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET).unwrap()
    }

    fn good_claims() -> Value {
        json!({"sub": "dev-1", "exp": NOW + 60})
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    /// A token of any header and payload text, signed with `key`.
    fn raw(alg: Algorithm, key: &EncodingKey, header: &str, payload: &str) -> String {
        let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn hs_claims(claims: Value) -> Result<Claims, AuthFailure> {
        hs().verify(&sign(Algorithm::HS256, &hs_key(), &claims), NOW_MS)
    }

    fn ok(exp: u64) -> Result<Claims, AuthFailure> {
        Ok(Claims {
            sub: "dev-1".into(),
            exp,
        })
    }

    fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        (kp.serialize_pem(), kp.public_key_pem())
    }

    #[test]
    fn hmac_tokens_verify() {
        let v = hs();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, &hs_key(), &good_claims());
            assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60), "{alg:?}");
        }
    }

    #[test]
    fn es256_and_es384_tokens_verify() {
        let (private, public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let v = verifier(JwtKey::PublicKeyPem(public.into_bytes()));
        let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let t = sign(Algorithm::ES256, &key, &good_claims());
        assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60));
        // The P-256 key allows ES256 only.
        for alg in [Algorithm::ES384, Algorithm::HS256, Algorithm::RS256] {
            let t = raw(Algorithm::HS256, &hs_key(), &format!(r#"{{"alg":"{alg:?}"}}"#), "{}");
            assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Algorithm), "{alg:?}");
        }

        let (private, public) = pair(&rcgen::PKCS_ECDSA_P384_SHA384);
        let v = verifier(JwtKey::PublicKeyPem(public.into_bytes()));
        let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let t = sign(Algorithm::ES384, &key, &good_claims());
        assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60));
        let t = raw(Algorithm::HS256, &hs_key(), r#"{"alg":"ES256"}"#, "{}");
        assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Algorithm));
    }

    #[test]
    fn eddsa_tokens_verify() {
        let (private, public) = pair(&rcgen::PKCS_ED25519);
        let v = verifier(JwtKey::PublicKeyPem(public.into_bytes()));
        let key = EncodingKey::from_ed_pem(private.as_bytes()).unwrap();
        let t = sign(Algorithm::EdDSA, &key, &good_claims());
        assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60));
        // Another Ed25519 key's signature.
        let (other, _) = pair(&rcgen::PKCS_ED25519);
        let other = EncodingKey::from_ed_pem(other.as_bytes()).unwrap();
        let t = sign(Algorithm::EdDSA, &other, &good_claims());
        assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Signature));
    }

    #[test]
    fn rsa_tokens_verify_with_spki_and_pkcs1_keys() {
        let (private, public) = pair(&rcgen::PKCS_RSA_SHA256);
        let key = EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        // The PKCS#1 form of the same key: the SPKI's BIT STRING contents.
        let (_, body) = pem_block(public.as_bytes()).unwrap();
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = STANDARD.decode(b64).unwrap();
        let (spki, _) = der_element(&der, 0x30).unwrap();
        let (_, rest) = der_element(spki, 0x30).unwrap();
        let (bits, _) = der_element(rest, 0x03).unwrap();
        let pkcs1 = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            STANDARD.encode(&bits[1..])
        );
        for pem in [public, pkcs1] {
            let v = verifier(JwtKey::PublicKeyPem(pem.into_bytes()));
            for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
                let t = sign(alg, &key, &good_claims());
                assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60), "{alg:?}");
            }
            let t = raw(Algorithm::HS256, &hs_key(), r#"{"alg":"ES256"}"#, "{}");
            assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Algorithm));
        }
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_refused() {
        let v = hs();
        let payload = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"NONE"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS1"}"#,
            r#"{"alg":""}"#,
            r#"{"alg":null}"#,
            r#"{"alg":256}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let h = URL_SAFE_NO_PAD.encode(header);
            for sig in ["", "c2ln"] {
                let t = format!("{h}.{payload}.{sig}");
                assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Algorithm), "{header}");
            }
        }
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An HS256 token whose secret is the public key's PEM text, which an
        // attacker has: against the public key, it must not verify.
        let (_, public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let v = verifier(JwtKey::PublicKeyPem(public.clone().into_bytes()));
        let forged = EncodingKey::from_secret(public.as_bytes()).unwrap();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, &forged, &good_claims());
            assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Algorithm), "{alg:?}");
        }
        // And a public-key token against a secret.
        let (private, _) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let es = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let t = sign(Algorithm::ES256, &es, &good_claims());
        assert_eq!(hs().verify(&t, NOW_MS), Err(AuthFailure::Algorithm));
    }

    #[test]
    fn bad_signatures_are_refused() {
        let v = hs();
        let other = EncodingKey::from_secret(b"another secret").unwrap();
        let t = sign(Algorithm::HS256, &other, &good_claims());
        assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Signature));

        // Someone else's EC key.
        let (_, public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (private, _) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ev = verifier(JwtKey::PublicKeyPem(public.into_bytes()));
        let es = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let t = sign(Algorithm::ES256, &es, &good_claims());
        assert_eq!(ev.verify(&t, NOW_MS), Err(AuthFailure::Signature));

        // A payload changed after signing.
        let t = sign(Algorithm::HS256, &hs_key(), &good_claims());
        let parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": NOW + 60}).to_string());
        let t2 = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(v.verify(&t2, NOW_MS), Err(AuthFailure::Signature));
        // No signature at all, or a truncated one.
        let t3 = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(v.verify(&t3, NOW_MS), Err(AuthFailure::Signature));
        let t4 = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..8]);
        assert_eq!(v.verify(&t4, NOW_MS), Err(AuthFailure::Signature));
    }

    #[test]
    fn typ_must_be_jwt() {
        let v = hs();
        for (typ, want) in [
            (Some("JWT"), ok(NOW + 60)),
            (Some("jwt"), ok(NOW + 60)),
            (Some("application/jwt"), ok(NOW + 60)),
            (None, ok(NOW + 60)),
            (Some("at+jwt"), Err(AuthFailure::Type)),
            (Some("JWS"), Err(AuthFailure::Type)),
            (Some(""), Err(AuthFailure::Type)),
        ] {
            let mut h = Header::new(Algorithm::HS256);
            h.typ = typ.map(str::to_string);
            let t = jsonwebtoken::encode(&h, &good_claims(), &hs_key()).unwrap();
            assert_eq!(v.verify(&t, NOW_MS), want, "{typ:?}");
        }
        let t = raw(Algorithm::HS256, &hs_key(), r#"{"alg":"HS256","typ":7}"#, "{}");
        assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Type));
    }

    #[test]
    fn size_and_emptiness() {
        let v = hs();
        assert_eq!(v.verify("", NOW_MS), Err(AuthFailure::Missing));
        let huge = "a".repeat(64 * 1024);
        assert_eq!(v.verify(&huge, NOW_MS), Err(AuthFailure::TooLarge));
        // A valid token padded to just over the limit, then to the limit.
        let big = json!({"sub": "dev-1", "exp": NOW + 60, "pad": "x".repeat(3000)});
        let t = sign(Algorithm::HS256, &hs_key(), &big);
        assert!(t.len() > MAX_TOKEN_BYTES, "{}", t.len());
        assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::TooLarge));
        let fits = json!({"sub": "dev-1", "exp": NOW + 60, "pad": "x".repeat(2900)});
        let t = sign(Algorithm::HS256, &hs_key(), &fits);
        assert!(t.len() <= MAX_TOKEN_BYTES, "{}", t.len());
        assert_eq!(v.verify(&t, NOW_MS), ok(NOW + 60));
    }

    #[test]
    fn malformed_tokens() {
        let v = hs();
        let good = sign(Algorithm::HS256, &hs_key(), &good_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let not_json = URL_SAFE_NO_PAD.encode("not json");
        let array = URL_SAFE_NO_PAD.encode("[1]");
        for t in [
            "abc".to_string(),
            "a.b".to_string(),
            "..".to_string(),
            format!("{good}.x"),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{not_json}.{}.{}", parts[1], parts[2]),
            format!("{array}.{}.{}", parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            // Signature that is not base64url.
            format!("{}.{}.***", parts[0], parts[1]),
            // Payloads that are not JSON objects, well signed.
            raw(Algorithm::HS256, &hs_key(), r#"{"alg":"HS256"}"#, "not json"),
            raw(Algorithm::HS256, &hs_key(), r#"{"alg":"HS256"}"#, "[1,2]"),
            raw(Algorithm::HS256, &hs_key(), r#"{"alg":"HS256"}"#, "\"dev-1\""),
            // A claim given twice: which one counts is ambiguous.
            raw(
                Algorithm::HS256,
                &hs_key(),
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"sub":"dev-1","sub":"admin","exp":{}}}"#, NOW + 60),
            ),
            // So is a header field.
            raw(
                Algorithm::HS256,
                &hs_key(),
                r#"{"alg":"HS256","alg":"HS256"}"#,
                &good_claims().to_string(),
            ),
            // crit names an extension we cannot honour.
            raw(
                Algorithm::HS256,
                &hs_key(),
                r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
                &good_claims().to_string(),
            ),
        ] {
            assert_eq!(v.verify(&t, NOW_MS), Err(AuthFailure::Malformed), "{t}");
        }
    }

    #[test]
    fn exp_and_nbf_are_checked_against_the_given_time() {
        let sub = "dev-1";
        for (claims, want) in [
            (json!({"sub": sub}), Err(AuthFailure::MissingExp)),
            (json!({"sub": sub, "exp": null}), Err(AuthFailure::MissingExp)),
            (json!({"sub": sub, "exp": NOW}), Err(AuthFailure::Expired)),
            (json!({"sub": sub, "exp": NOW - 1}), Err(AuthFailure::Expired)),
            (json!({"sub": sub, "exp": 0}), Err(AuthFailure::Expired)),
            (json!({"sub": sub, "exp": NOW + 1}), ok(NOW + 1)),
            // Fractions are dropped: NOW + 0.9 is NOW, which has passed.
            (json!({"sub": sub, "exp": NOW as f64 + 0.9}), Err(AuthFailure::Expired)),
            (json!({"sub": sub, "exp": NOW as f64 + 10.7}), ok(NOW + 10)),
            (json!({"sub": sub, "exp": 1e300}), ok(MAX_EXP_SECS)),
            (json!({"sub": sub, "exp": u64::MAX}), ok(MAX_EXP_SECS)),
            (json!({"sub": sub, "exp": "1"}), Err(AuthFailure::Malformed)),
            (json!({"sub": sub, "exp": -5}), Err(AuthFailure::Malformed)),
            (json!({"sub": sub, "exp": -0.5}), Err(AuthFailure::Malformed)),
            (json!({"sub": sub, "exp": [1]}), Err(AuthFailure::Malformed)),
            (json!({"sub": sub, "exp": true}), Err(AuthFailure::Malformed)),
            (json!({"sub": sub, "exp": NOW + 9, "nbf": NOW}), ok(NOW + 9)),
            (json!({"sub": sub, "exp": NOW + 9, "nbf": NOW - 9}), ok(NOW + 9)),
            (
                json!({"sub": sub, "exp": NOW + 9, "nbf": NOW + 1}),
                Err(AuthFailure::NotYetValid),
            ),
            (
                json!({"sub": sub, "exp": NOW + 9, "nbf": "0"}),
                Err(AuthFailure::Malformed),
            ),
            // A missing exp is reported before a wrong sub.
            (json!({"sub": "a b"}), Err(AuthFailure::MissingExp)),
        ] {
            assert_eq!(hs_claims(claims.clone()), want, "{claims}");
        }
        // The same token at two times.
        let t = sign(Algorithm::HS256, &hs_key(), &good_claims());
        assert_eq!(hs().verify(&t, (NOW + 59) * 1000 + 999), ok(NOW + 60));
        assert_eq!(hs().verify(&t, (NOW + 60) * 1000), Err(AuthFailure::Expired));
    }

    #[test]
    fn issuer_and_audience() {
        let exp = NOW + 60;
        let strict = JwtVerifier::new(&JwtSettings {
            key: JwtKey::Secret(SECRET.to_vec()),
            issuer: Some("https://auth.example".into()),
            audience: Some("wsbeat".into()),
        })
        .unwrap();
        let iss = "https://auth.example";
        for (claims, want) in [
            (json!({"iss": iss, "aud": "wsbeat"}), ok(exp)),
            (json!({"iss": iss, "aud": ["x", "wsbeat"]}), ok(exp)),
            (json!({"iss": iss, "aud": ["x"]}), Err(AuthFailure::Audience)),
            (json!({"iss": iss, "aud": []}), Err(AuthFailure::Audience)),
            (json!({"iss": iss, "aud": "WSBEAT"}), Err(AuthFailure::Audience)),
            (json!({"iss": iss}), Err(AuthFailure::Audience)),
            (json!({"iss": "other", "aud": "wsbeat"}), Err(AuthFailure::Issuer)),
            (json!({"aud": "wsbeat"}), Err(AuthFailure::Issuer)),
            (json!({"iss": [iss], "aud": "wsbeat"}), Err(AuthFailure::Malformed)),
            (json!({"iss": iss, "aud": 5}), Err(AuthFailure::Malformed)),
            (json!({"iss": iss, "aud": ["wsbeat", 5]}), Err(AuthFailure::Malformed)),
        ] {
            let mut c = claims.clone();
            c["sub"] = json!("dev-1");
            c["exp"] = json!(exp);
            let t = sign(Algorithm::HS256, &hs_key(), &c);
            assert_eq!(strict.verify(&t, NOW_MS), want, "{claims}");
        }
        // Nothing configured: any iss is fine, any aud is for someone else.
        for (claims, want) in [
            (json!({"iss": "anyone"}), ok(exp)),
            (json!({"aud": "wsbeat"}), Err(AuthFailure::Audience)),
            (json!({"aud": []}), Err(AuthFailure::Audience)),
            (json!({"aud": null}), ok(exp)),
            (json!({"iss": 5}), Err(AuthFailure::Malformed)),
        ] {
            let mut c = claims.clone();
            c["sub"] = json!("dev-1");
            c["exp"] = json!(exp);
            assert_eq!(hs_claims(c), want, "{claims}");
        }
    }

    #[test]
    fn sub_must_be_a_valid_client_id() {
        let exp = NOW + 60;
        for (sub, want) in [
            (json!("a b"), Err(AuthFailure::Subject)),
            (json!(""), Err(AuthFailure::Subject)),
            (json!("dev/1"), Err(AuthFailure::Subject)),
            (json!("é"), Err(AuthFailure::Subject)),
            (json!("x".repeat(10_000)), Err(AuthFailure::TooLarge)),
            (json!(null), Err(AuthFailure::Subject)),
            (json!(5), Err(AuthFailure::Malformed)),
            (
                json!("user@example.com:phone_1.~-"),
                Ok(Claims {
                    sub: "user@example.com:phone_1.~-".into(),
                    exp,
                }),
            ),
        ] {
            assert_eq!(hs_claims(json!({"sub": sub, "exp": exp})), want, "{sub}");
        }
        assert_eq!(hs_claims(json!({"exp": exp})), Err(AuthFailure::Subject));
        let long = "a".repeat(crate::protocol::heartbeat::MAX_CLIENT_ID_LEN + 1);
        assert_eq!(hs_claims(json!({"sub": long, "exp": exp})), Err(AuthFailure::Subject));
    }

    #[test]
    fn keys_that_new_refuses() {
        assert_eq!(
            JwtVerifier::new(&settings(JwtKey::Secret(Vec::new()))).err().as_deref(),
            Some("the secret is empty")
        );
        let pem = |s: &str| JwtVerifier::new(&settings(JwtKey::PublicKeyPem(s.into()))).err();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let (private, _) = pair(alg);
            let e = pem(&private).unwrap();
            assert!(e.starts_with("a private key"), "{e}");
        }
        let e = pem("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n").unwrap();
        assert!(e.starts_with("a private key"), "{e}");
        let e = pem("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        assert!(e.starts_with("a certificate"), "{e}");
        let (_, p521) = pair(&rcgen::PKCS_ECDSA_P521_SHA512);
        let e = pem(&p521).unwrap();
        assert!(e.contains("P-256"), "{e}");
        for garbage in [
            "",
            "hello",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== me@host",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
            "-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n",
        ] {
            let e = pem(garbage).unwrap_or_else(|| panic!("accepted {garbage:?}"));
            assert!(!e.contains('\n'), "{e}");
        }
        // Every truncation of a real key is refused, not a panic.
        let (_, public) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, body) = pem_block(public.as_bytes()).unwrap();
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = STANDARD.decode(b64).unwrap();
        for n in 0..der.len() {
            let p = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                STANDARD.encode(&der[..n])
            );
            assert!(pem(&p).is_some(), "{n}");
        }
        // Invalid UTF-8 in the file.
        assert!(JwtVerifier::new(&settings(JwtKey::PublicKeyPem(vec![0xff, 0xfe]))).is_err());
    }

    #[test]
    fn rsa_keys_too_small_are_refused() {
        // RSAPublicKey with a 1024-bit modulus and e = 65537.
        let mut n = vec![0x00, 0xc0];
        n.extend(std::iter::repeat_n(0x11, 127));
        let mut inner = vec![0x02, 0x81, n.len() as u8];
        inner.extend(&n);
        inner.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let mut der = vec![0x30, 0x81, inner.len() as u8];
        der.extend(&inner);
        let p = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        let e = JwtVerifier::new(&settings(JwtKey::PublicKeyPem(p.into())))
            .err()
            .unwrap();
        assert!(e.contains("1024 bits"), "{e}");
    }

    #[test]
    fn mangled_tokens_never_panic() {
        let v = hs();
        let t = sign(Algorithm::HS256, &hs_key(), &good_claims());
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            for c in [b'.', b'A', b'_', b'-', b'=', b'+'] {
                let mut m = bytes.to_vec();
                m[i] = c;
                let m = String::from_utf8(m).unwrap();
                if m != t {
                    assert!(v.verify(&m, NOW_MS).is_err(), "{m}");
                }
            }
            let _ = v.verify(&t[..i], NOW_MS);
        }
    }

    #[test]
    fn verifier_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<JwtVerifier>();
    }
}
