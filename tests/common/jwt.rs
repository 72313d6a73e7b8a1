//! JWT material for the auth tests: key pairs made at test time (rcgen),
//! tokens signed with `jsonwebtoken`, hand-made tokens for the hostile
//! cases, and PEM files for the binary's `--auth-jwt-public-key`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// The HS256 secret most tests use.
pub const SECRET: &str = "wsbeat-test-secret-0123456789abcdef";

/// A key pair in PEM: PKCS#8 private, SPKI public.
pub struct Pair {
    pub alg: Algorithm,
    pub private_pem: String,
    pub public_pem: String,
}

impl Pair {
    fn generate(rc: &'static rcgen::SignatureAlgorithm, alg: Algorithm) -> Pair {
        let kp = rcgen::KeyPair::generate_for(rc).expect("key generation");
        Pair {
            alg,
            private_pem: kp.serialize_pem(),
            public_pem: kp.public_key_pem(),
        }
    }

    /// P-256, for ES256.
    pub fn es256() -> Pair {
        Pair::generate(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256)
    }

    /// Ed25519, for EdDSA.
    pub fn ed25519() -> Pair {
        Pair::generate(&rcgen::PKCS_ED25519, Algorithm::EdDSA)
    }

    /// RSA 2048, for RS256 (rcgen makes RSA keys with aws-lc-rs).
    pub fn rsa() -> Pair {
        Pair::generate(&rcgen::PKCS_RSA_SHA256, Algorithm::RS256)
    }

    pub fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .expect("private key PEM")
    }

    /// `claims` signed with this key's algorithm.
    pub fn sign(&self, claims: &Value) -> String {
        sign(self.alg, &self.encoding_key(), claims)
    }

    /// The server setting that verifies this pair's tokens.
    pub fn settings(&self) -> wsbeat::config::JwtSettings {
        wsbeat::config::JwtSettings {
            key: wsbeat::config::JwtKey::PublicKeyPem(self.public_pem.clone().into_bytes()),
            issuer: None,
            audience: None,
        }
    }
}

/// The server setting for [`SECRET`].
pub fn secret_settings() -> wsbeat::config::JwtSettings {
    wsbeat::config::JwtSettings {
        key: wsbeat::config::JwtKey::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    }
}

/// Unix time, seconds (what `exp` and `nbf` count).
pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Unix time, milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `claims` signed with `alg` and `key`, header `{"typ":"JWT","alg":..}`.
pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

/// `claims` as HS256 with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret).expect("secret"),
        claims,
    )
}

/// `claims` as HS256 with [`SECRET`].
pub fn token(claims: &Value) -> String {
    hs256(SECRET.as_bytes(), claims)
}

/// A valid HS256 token for `sub`, good for a minute.
pub fn token_for(sub: &str) -> String {
    token(&serde_json::json!({"sub": sub, "exp": now_s() + 60}))
}

/// A token of any header text, payload text and signature text.
pub fn raw(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

/// Signs any header and payload text with `key` as `alg`.
pub fn raw_signed(alg: Algorithm, key: &EncodingKey, header: &str, payload: &str) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign");
    format!("{msg}.{sig}")
}

/// A file in the temporary directory, removed when dropped.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `contents` (e.g. a PEM) to a fresh temporary file.
pub fn temp_file(name: &str, contents: &[u8]) -> TempFile {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "wsbeat-test-{}-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        now_ms()
    ));
    std::fs::write(&path, contents).expect("write temp file");
    TempFile { path }
}
