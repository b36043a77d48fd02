//! API keys and session ids: how they are made, hashed and checked.
//!
//! A key is `glk_<name>_<secret>`, the secret 32 random bytes as 64 hex digits. The name
//! in front finds the one row whose Argon2id hash is checked, so that a request costs one
//! hash (~50 ms with the default parameters) rather than one per user; the hash alone is
//! stored. A session id is 32 random bytes too, stored as its SHA-256: a session lives a
//! few days and is random, so a fast hash is enough, and a stolen database still holds no
//! cookie that works.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// What every key begins with, so that a key found in a log or a repository is known.
pub const KEY_PREFIX: &str = "glk_";

/// The hex digits of a key's secret.
const SECRET_HEX: usize = 64;

/// 32 random bytes from the operating system's generator, as 64 hex digits.
pub fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key for `name`.
pub fn new_key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}_{}", random_hex())
}

/// The user a key names, or `None` when `key` is not shaped like a key.
pub fn key_user(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let split = rest.len().checked_sub(SECRET_HEX + 1)?;
    let (name, secret) = rest.split_at(split);
    let secret = secret.strip_prefix('_')?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (!name.is_empty() && secret.bytes().all(hex)).then_some(name)
}

/// The Argon2id hash of `key` with a fresh salt, as a PHC string (`$argon2id$v=19$…`).
pub fn hash_key(key: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(key.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the key: {e}"))?
        .to_string())
}

/// Whether `key` is the key whose hash is `stored`. Slow on purpose (Argon2id).
pub fn verify_key(key: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .and_then(|hash| Argon2::default().verify_password(key.as_bytes(), &hash))
        .is_ok()
}

/// The SHA-256 of `secret` as hex: how a session id is stored and looked up.
pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` is a user name: 1 to 32 of lowercase letters, digits, `-`, `_`, `.`,
/// starting with a letter.
pub fn valid_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_user_even_with_underscores() {
        let key = new_key("ada_l.2");
        assert_eq!(key_user(&key), Some("ada_l.2"));
        assert_eq!(key.len(), KEY_PREFIX.len() + "ada_l.2".len() + 1 + 64);
        assert_ne!(new_key("x"), new_key("x"));
        for bad in [
            "",
            "glk_",
            "glk__0123",
            "token",
            &key[..key.len() - 1],
            &key.replace("glk_", "gl_"),
        ] {
            assert_eq!(key_user(bad), None, "{bad}");
        }
        let upper = format!("glk_x_{}", "A".repeat(64));
        assert_eq!(key_user(&upper), None);
    }

    #[test]
    fn a_key_verifies_against_its_argon2id_hash_only() {
        let key = new_key("ada");
        let hash = hash_key(&key).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&key[KEY_PREFIX.len() + 4..]));
        assert!(verify_key(&key, &hash));
        assert!(!verify_key(&new_key("ada"), &hash));
        assert!(!verify_key(&key, "not a hash"));
        assert_ne!(hash_key(&key).unwrap(), hash, "salted");
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "alice", "bob-2", "c.d_e", &"x".repeat(32)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "2bob", "-x", "a b", "é", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
