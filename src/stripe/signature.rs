//! Verification of the `Stripe-Signature` header, exactly as Stripe specifies it.
//!
//! The header is a comma-separated list of `key=value` items: one `t` (the Unix time Stripe signed
//! at) and one or more `v1` (hex HMAC-SHA256 signatures; several while a signing secret is being
//! rolled). Other schemes (`v0`, test-mode signatures) are ignored. The expected signature is
//! HMAC-SHA256, keyed with the endpoint's signing secret (the whole `whsec_...` string), of
//! `"{t}.{raw body}"`. The payload is genuine when any `v1` matches (compared in constant time) and
//! `t` is not older than the tolerance (Stripe's libraries, like this one, accept timestamps from
//! the future: the signature already binds them).

use hmac::{Hmac, Mac};
use std::time::Duration;

/// Why a request does not carry a valid signature (the reason in the 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header: no timestamp (t=...)")]
    NoTimestamp,
    #[error("malformed Stripe-Signature header: no v1 signature")]
    NoSignature,
    #[error(
        "no v1 signature in Stripe-Signature matches the payload (wrong signing secret, or the body was \
         altered)"
    )]
    Mismatch,
    #[error(
        "the Stripe-Signature timestamp is {age} seconds old, beyond the tolerance of {tolerance} seconds"
    )]
    Expired { age: i64, tolerance: u64 },
}

/// Verifies `header` (the `Stripe-Signature` value, if the request had one) for `payload`, the raw
/// request body. `now` is the current Unix time in seconds. Returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    tolerance: Duration,
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else { continue };
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::NoTimestamp)?);
            }
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let expected = mac(secret, timestamp, payload);
    let matches = signatures.iter().any(|signature| {
        crate::util::decode_hex(signature).is_some_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let age = now.saturating_sub(timestamp);
    let limit = tolerance.as_secs();
    if age > 0 && age as u64 > limit {
        return Err(SignatureError::Expired { age, tolerance: limit });
    }
    Ok(timestamp)
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<sha2::Sha256> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The hex `v1` signature of `payload` at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let bytes = mac(secret, timestamp, payload).finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Stripe-Signature` header as Stripe sends it (`t=...,v1=...`), for tests and tools.
pub fn header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature(secret, timestamp, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const PAYLOAD: &[u8] = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    const T: i64 = 1_492_774_577;
    /// HMAC-SHA256("whsec_test_secret", "1492774577." + PAYLOAD), computed independently (Python's
    /// `hmac` module).
    const V1: &str = "c2f890decbc5ede7c5060bb9a6d31e0626a4342bacb9aeae2adb1bcea72f9812";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn check(header: &str, payload: &[u8], secret: &str, now: i64) -> Result<i64, SignatureError> {
        verify(Some(header), payload, secret, TOLERANCE, now)
    }

    #[test]
    fn the_signature_matches_an_independent_implementation() {
        assert_eq!(signature(SECRET, T, PAYLOAD), V1);
        assert_eq!(header(SECRET, T, PAYLOAD), format!("t={T},v1={V1}"));
    }

    #[test]
    fn valid() {
        // The documentation's form: a timestamp, a v1 signature, and a v0 one that is ignored.
        let header =
            format!("t={T},v1={V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
        assert_eq!(check(&header, PAYLOAD, SECRET, T + 10), Ok(T));
        assert_eq!(check(&format!("t={T}, v1={V1}"), PAYLOAD, SECRET, T), Ok(T), "spaces after commas");
    }

    #[test]
    fn tampered_body() {
        let header = format!("t={T},v1={V1}");
        let tampered = String::from_utf8(PAYLOAD.to_vec()).unwrap().replace("evt_test", "evt_evil");
        assert_eq!(check(&header, tampered.as_bytes(), SECRET, T), Err(SignatureError::Mismatch));
        let mut extra = PAYLOAD.to_vec();
        extra.push(b'\n');
        assert_eq!(check(&header, &extra, SECRET, T), Err(SignatureError::Mismatch));
        // The timestamp is signed too.
        let moved = format!("t={},v1={V1}", T + 1);
        assert_eq!(check(&moved, PAYLOAD, SECRET, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn wrong_secret() {
        let header = format!("t={T},v1={V1}");
        assert_eq!(check(&header, PAYLOAD, "whsec_other", T), Err(SignatureError::Mismatch));
        let signed_elsewhere = super::header("whsec_other", T, PAYLOAD);
        assert_eq!(check(&signed_elsewhere, PAYLOAD, SECRET, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn expired_timestamp() {
        let header = format!("t={T},v1={V1}");
        assert_eq!(check(&header, PAYLOAD, SECRET, T + 300), Ok(T), "exactly at the tolerance");
        assert_eq!(
            check(&header, PAYLOAD, SECRET, T + 301),
            Err(SignatureError::Expired { age: 301, tolerance: 300 })
        );
        let long = verify(Some(&header), PAYLOAD, SECRET, Duration::from_secs(3600), T + 301);
        assert_eq!(long, Ok(T), "the tolerance is configurable");
        assert_eq!(check(&header, PAYLOAD, SECRET, T - 3600), Ok(T), "a future timestamp, as Stripe allows");
        // A bad signature is reported as such even when the timestamp is old too.
        let forged = format!("t={T},v1={}", "0".repeat(64));
        assert_eq!(check(&forged, PAYLOAD, SECRET, T + 10_000), Err(SignatureError::Mismatch));
    }

    #[test]
    fn multiple_signatures() {
        let old_secret = super::signature("whsec_old", T, PAYLOAD);
        let header = format!("t={T},v1={old_secret},v1={V1}");
        assert_eq!(check(&header, PAYLOAD, SECRET, T), Ok(T), "the second one matches");
        let header = format!("t={T},v1={V1},v1={old_secret}");
        assert_eq!(check(&header, PAYLOAD, SECRET, T), Ok(T), "the first one matches");
        assert_eq!(check(&header, PAYLOAD, "whsec_old", T), Ok(T), "a rolled secret still verifies");
        let header = format!("t={T},v1=zz,v1={old_secret}");
        assert_eq!(check(&header, PAYLOAD, SECRET, T), Err(SignatureError::Mismatch), "none matches");
    }

    #[test]
    fn missing_or_malformed_header() {
        assert_eq!(verify(None, PAYLOAD, SECRET, TOLERANCE, T), Err(SignatureError::Missing));
        assert_eq!(check(&format!("v1={V1}"), PAYLOAD, SECRET, T), Err(SignatureError::NoTimestamp));
        assert_eq!(check(&format!("t=abc,v1={V1}"), PAYLOAD, SECRET, T), Err(SignatureError::NoTimestamp));
        assert_eq!(check(&format!("t={T},v0={V1}"), PAYLOAD, SECRET, T), Err(SignatureError::NoSignature));
        assert_eq!(check("", PAYLOAD, SECRET, T), Err(SignatureError::NoTimestamp));
        assert_eq!(
            check(&format!("t={T},v1={}", &V1[1..]), PAYLOAD, SECRET, T),
            Err(SignatureError::Mismatch)
        );
        let message = SignatureError::Expired { age: 400, tolerance: 300 }.to_string();
        assert!(message.contains("400 seconds old"), "{message}");
    }
}
