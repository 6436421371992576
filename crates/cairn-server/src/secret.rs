//! The server secret and what is derived from it: sealing endpoint keys so that they can be shown
//! again to callers with rights, and signing short-lived endpoint tokens.
//!
//! The secret is `CAIRN_SECRET_KEY` (the same value on every server of a PostgreSQL setup) or a
//! random 256-bit `secret-key` file made at first start in the data directory (mode 0600). Two
//! independent keys are derived from it with HMAC-SHA256 under fixed labels, so sealing and
//! signing never share a key. Sealing is XChaCha20-Poly1305 with a random 192-bit nonce (random
//! nonces are safe at that size) and the endpoint id and key slot as associated data, so a sealed
//! key copied onto another endpoint or slot does not open.
//!
//! Nothing here logs, and `Debug` shows no key material.

use std::path::Path;

use cairn_core::Error;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// File in the data directory holding the generated secret.
pub const SECRET_FILE: &str = "secret-key";
/// Shortest `CAIRN_SECRET_KEY` accepted (32 characters of, ideally, `openssl rand -hex 32`).
pub const MIN_SECRET_LEN: usize = 32;
/// Prefix of endpoint tokens (and their format version).
const TOKEN_PREFIX: &str = "cairn-et1";
const SEAL_PREFIX: &str = "x1.";

pub struct ServerSecret {
    seal: XChaCha20Poly1305,
    sign: [u8; 32],
    /// Signs studio session cookies and derives their CSRF tokens.
    studio: [u8; 32],
    /// Signs URLs that carry their own authority (MLflow multipart part URLs).
    urls: [u8; 32],
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// What a presented token turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    /// Signed by this server for this endpoint, but past its expiry (Unix seconds).
    Expired(i64),
    /// Not a token of this endpoint (malformed, forged, another endpoint's, another secret's).
    Invalid,
}

fn derive(master: &[u8], label: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(master).expect("HMAC takes keys of any length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl ServerSecret {
    /// Derives the sealing and signing keys from the secret's text.
    pub fn from_material(material: &[u8]) -> ServerSecret {
        let master = Sha256::digest(material);
        let seal_key = derive(&master, "cairn/v1/seal-endpoint-keys");
        ServerSecret {
            seal: XChaCha20Poly1305::new(&seal_key.into()),
            sign: derive(&master, "cairn/v1/sign-endpoint-tokens"),
            studio: derive(&master, "cairn/v1/studio-sessions"),
            urls: derive(&master, "cairn/v1/signed-urls"),
        }
    }

    /// `fixed` (`CAIRN_SECRET_KEY`) if given, else `data_dir/secret-key`, created on first start.
    pub fn load(data_dir: &Path, fixed: Option<&str>) -> Result<ServerSecret, Error> {
        if let Some(s) = fixed {
            if s.trim().len() < MIN_SECRET_LEN {
                return Err(Error::invalid(format!(
                    "CAIRN_SECRET_KEY must be at least {MIN_SECRET_LEN} characters (e.g. the output of \
                     `openssl rand -hex 32`)"
                )));
            }
            return Ok(ServerSecret::from_material(s.trim().as_bytes()));
        }
        let path = data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= MIN_SECRET_LEN => {
                Ok(ServerSecret::from_material(text.trim().as_bytes()))
            }
            Ok(_) => Err(Error::invalid(format!(
                "{} holds fewer than {MIN_SECRET_LEN} characters; restore it from a backup (endpoint keys \
                 were sealed with it)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let text = hex::encode(bytes);
                crate::auth::write_secret(&path, &text)?;
                Ok(ServerSecret::from_material(text.as_bytes()))
            }
            Err(e) => Err(Error::internal(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Encrypts `plaintext`, bound to `context`: `x1.` and hex of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .seal
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() },
            )
            .expect("XChaCha20-Poly1305 encrypts any message of a sane size");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{SEAL_PREFIX}{}", hex::encode(out))
    }

    /// Decrypts what [`ServerSecret::seal`] made with the same `context`; `None` if it was sealed
    /// with another secret or context, or damaged.
    pub fn open(&self, sealed: &str, context: &str) -> Option<String> {
        let bytes = hex::decode(sealed.strip_prefix(SEAL_PREFIX)?).ok()?;
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .seal
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context.as_bytes() })
            .ok()?;
        String::from_utf8(plain).ok()
    }

    fn token_mac(&self, endpoint_id: &str, expiry: i64) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.sign).expect("HMAC takes keys of any length");
        mac.update(TOKEN_PREFIX.as_bytes());
        mac.update(&[0]);
        mac.update(endpoint_id.as_bytes());
        mac.update(&[0]);
        mac.update(expiry.to_string().as_bytes());
        mac
    }

    /// A token for endpoint `endpoint_id`, valid until `expiry` (Unix seconds):
    /// `cairn-et1.EXPIRY.HMAC`. The id is not in the token; the scoring URI names the endpoint, and
    /// the MAC binds the token to that endpoint's id (a re-created endpoint has a new one).
    pub fn sign_token(&self, endpoint_id: &str, expiry: i64) -> String {
        let mac = self.token_mac(endpoint_id, expiry).finalize().into_bytes();
        format!("{TOKEN_PREFIX}.{expiry}.{}", hex::encode(mac))
    }

    /// Checks a token against endpoint `endpoint_id` at time `now_ms`. The MAC is checked in
    /// constant time, and before the expiry, so only genuine tokens are told they expired.
    pub fn verify_token(&self, token: &str, endpoint_id: &str, now_ms: i64) -> TokenCheck {
        let mut parts = token.split('.');
        let (Some(TOKEN_PREFIX), Some(expiry), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return TokenCheck::Invalid;
        };
        let (Ok(expiry), Ok(mac)) = (expiry.parse::<i64>(), hex::decode(mac)) else {
            return TokenCheck::Invalid;
        };
        if self.token_mac(endpoint_id, expiry).verify_slice(&mac).is_err() {
            return TokenCheck::Invalid;
        }
        if now_ms >= expiry.saturating_mul(1000) {
            TokenCheck::Expired(expiry)
        } else {
            TokenCheck::Valid
        }
    }
}

impl ServerSecret {
    /// HMAC-SHA256 of `data` under the studio key (session cookies, CSRF tokens), as hex.
    pub fn studio_mac(&self, data: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.studio).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks `mac_hex` against [`ServerSecret::studio_mac`] of `data`, in constant time.
    pub fn verify_studio_mac(&self, data: &str, mac_hex: &str) -> bool {
        let Ok(presented) = hex::decode(mac_hex) else { return false };
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.studio).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        mac.verify_slice(&presented).is_ok()
    }
}

impl ServerSecret {
    fn url_hmac(&self, data: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.urls).expect("HMAC takes keys of any length");
        mac.update(data.as_bytes());
        mac
    }

    /// HMAC-SHA256 of `data` under the URL-signing key, as hex: the signature of a URL that is
    /// used without a token (MLflow multipart part URLs).
    pub fn url_mac(&self, data: &str) -> String {
        hex::encode(self.url_hmac(data).finalize().into_bytes())
    }

    /// Checks `mac_hex` against [`ServerSecret::url_mac`] of `data`, in constant time.
    pub fn verify_url_mac(&self, data: &str, mac_hex: &str) -> bool {
        let Ok(presented) = hex::decode(mac_hex) else { return false };
        self.url_hmac(data).verify_slice(&presented).is_ok()
    }
}

/// A new endpoint key: 256 bits from the thread CSPRNG, as 64 hex digits.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ServerSecret {
        ServerSecret::from_material(s.as_bytes())
    }

    #[test]
    fn a_token_is_valid_until_its_expiry_for_its_endpoint_only() {
        let s = secret("0123456789abcdef0123456789abcdef");
        let t = s.sign_token("ep-1", 1_000);
        assert_eq!(s.verify_token(&t, "ep-1", 999_999), TokenCheck::Valid);
        assert_eq!(s.verify_token(&t, "ep-1", 1_000_000), TokenCheck::Expired(1_000));
        assert_eq!(s.verify_token(&t, "ep-2", 0), TokenCheck::Invalid, "bound to the endpoint id");
        assert_eq!(
            secret("another secret of enough length!!").verify_token(&t, "ep-1", 0),
            TokenCheck::Invalid
        );
    }

    #[test]
    fn tampered_or_malformed_tokens_are_invalid() {
        let s = secret("0123456789abcdef0123456789abcdef");
        let t = s.sign_token("ep", 2_000);
        let later = t.replacen(".2000.", ".9000.", 1);
        assert_ne!(later, t);
        assert_eq!(s.verify_token(&later, "ep", 0), TokenCheck::Invalid, "expiry cannot be moved");
        let mut flipped = t.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(s.verify_token(&flipped, "ep", 0), TokenCheck::Invalid);
        for bad in ["", "cairn-et1", "cairn-et1.2000", "cairn-et1.x.00", "other.2000.00", &format!("{t}.x")] {
            assert_eq!(s.verify_token(bad, "ep", 0), TokenCheck::Invalid, "{bad}");
        }
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_context() {
        let s = secret("0123456789abcdef0123456789abcdef");
        let key = generate_key();
        let sealed = s.seal(&key, "ep-1/primary");
        assert!(!sealed.contains(&key));
        assert_ne!(sealed, s.seal(&key, "ep-1/primary"), "random nonces");
        assert_eq!(s.open(&sealed, "ep-1/primary").as_deref(), Some(key.as_str()));
        assert_eq!(s.open(&sealed, "ep-1/secondary"), None);
        assert_eq!(secret("another secret of enough length!!").open(&sealed, "ep-1/primary"), None);
        assert_eq!(s.open("x1.00", "ep-1/primary"), None);
    }

    #[test]
    fn keys_are_256_bit_hex_and_differ() {
        let a = generate_key();
        assert_eq!(a.len(), 64);
        assert!(hex::decode(&a).is_ok());
        assert_ne!(a, generate_key());
    }

    #[test]
    fn the_secret_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ServerSecret::load(dir.path(), None).unwrap();
        let sealed = first.seal("k", "c");
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ServerSecret::load(dir.path(), None).unwrap();
        assert_eq!(again.open(&sealed, "c").as_deref(), Some("k"));
        assert!(ServerSecret::load(dir.path(), Some("short")).is_err());
    }
}
