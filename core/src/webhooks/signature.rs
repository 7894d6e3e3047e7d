//! Signing webhook bodies, and the check receivers perform.
//!
//! The signed text is `"{timestamp}.{body}"`: binding the timestamp lets a
//! receiver refuse replays of an old delivery without trusting an unsigned
//! header.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signature scheme's version tag in `X-Webhook-Signature`.
const VERSION: &str = "v1=";

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of every length, so this never fails in practice.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `X-Webhook-Signature` value for `body` sent at `timestamp` (unix
/// seconds): `v1=` followed by the lowercase hex HMAC-SHA256 of
/// `"{timestamp}.{body}"` keyed with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut out = String::from(VERSION);
    let Some(mac) = mac(secret, timestamp, body) else {
        return out;
    };
    let digest = mac.finalize().into_bytes();
    out.reserve(digest.len() * 2);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `header` is a valid signature of `body` at `timestamp`, compared
/// in constant time. Receivers should also refuse timestamps far from now.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix(VERSION) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|mac| mac.verify_slice(&expected).is_ok())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body() {
        let header = sign(b"Jefe", 0, b"x");
        assert!(header.starts_with("v1="));
        assert_eq!(header.len(), 3 + 64);
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.x");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(header, format!("v1={expected}"));
    }

    #[test]
    fn verifies_only_the_exact_body_timestamp_and_secret() {
        let header = sign(b"secret", 1_700_000_000, b"{\"a\":1}");
        assert!(verify(b"secret", 1_700_000_000, b"{\"a\":1}", &header));
        assert!(!verify(b"secret", 1_700_000_001, b"{\"a\":1}", &header));
        assert!(!verify(b"secret", 1_700_000_000, b"{\"a\":2}", &header));
        assert!(!verify(b"other", 1_700_000_000, b"{\"a\":1}", &header));
        assert!(!verify(b"secret", 1_700_000_000, b"{\"a\":1}", "v1=zz"));
        assert!(!verify(
            b"secret",
            1_700_000_000,
            b"{\"a\":1}",
            &header[3..]
        ));
    }
}
