//! AWS Signature Version 4, both sides: the gateway verifies what the AWS
//! CLI and SDKs send, and the virga CLI and lab sign their own requests.
//!
//! One implementation of the canonical request serves both, so a request
//! this crate signs is one it verifies; the published test suite's vectors
//! (`tests/sigv4-suite/`) pin it to what AWS computes. Header-signed
//! requests only (no presigned query strings, no chunked payload signing).
//!
//! Pure but for [`credentials`], which reads the usual AWS variables and the
//! shared credentials file.

pub mod canonical;
pub mod credentials;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

pub use credentials::{Credentials, CredentialsError, Signer};

/// The only algorithm there is.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` of a body its signer chose not to hash.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's `X-Amz-Date` may be from the verifier's clock.
pub const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// `X-Amz-Date`'s format.
const AMZ_DATE: &str = "%Y%m%dT%H%M%SZ";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature is not accepted. The messages say what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    /// the Authorization header cannot be read
    #[error("the Authorization header is not `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=...`: {0}")]
    Malformed(String),
    /// no date to check the signature against
    #[error("the request has no X-Amz-Date header (YYYYMMDDTHHMMSSZ)")]
    MissingDate,
    /// the date is not in the format
    #[error("X-Amz-Date {0:?} is not YYYYMMDDTHHMMSSZ")]
    BadDate(String),
    /// the request was signed too long ago, or in the future
    #[error("Signature expired: {date} is more than 15 minutes from the server's time {now}; check the client's clock")]
    Expired { date: String, now: String },
    /// the scope's date is not the request's
    #[error("the credential scope's date {scope} is not the date of X-Amz-Date {date}")]
    ScopeDate { scope: String, date: String },
    /// signed for another service
    #[error("the credential scope names service {found:?}; sign for service {expected:?}")]
    WrongService { found: String, expected: String },
    /// `host` is not among the signed headers
    #[error("the Host header must be signed (SignedHeaders has no host)")]
    HostNotSigned,
    /// a header named in SignedHeaders is not in the request
    #[error("signed header {0:?} is not in the request")]
    MissingSignedHeader(String),
    /// the signature is not the one the secret gives
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    Mismatch,
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// the request names no host
    #[error("cannot sign a request without a Host")]
    NoHost,
    /// a credential cannot travel in a header
    #[error("the access key id or session token has characters a header cannot carry")]
    BadCredential,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hex SHA-256, the payload hash of a body.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key a secret derives for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// `DATE/REGION/SERVICE/aws4_request`.
pub fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// What is signed: the algorithm, the time, the scope and the canonical
/// request's hash.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// A request as the verifier sees it: the path and query exactly as they
/// arrived.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Reads the header's value; `None` when it is not a SigV4 header at
    /// all (another scheme, such as `Bearer`).
    pub fn parse(value: &str) -> Option<Result<Authorization, SigError>> {
        let rest = value.strip_prefix(ALGORITHM)?;
        if !rest.starts_with(' ') {
            return None;
        }
        Some(Self::parse_fields(rest))
    }

    fn parse_fields(rest: &str) -> Result<Authorization, SigError> {
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in rest.split(',') {
            let field = field.trim();
            let Some((k, v)) = field.split_once('=') else {
                return Err(SigError::Malformed(format!("{field:?} is not NAME=VALUE")));
            };
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => return Err(SigError::Malformed(format!("unknown field {k:?}"))),
            }
        }
        let missing = |what: &str| SigError::Malformed(format!("no {what}"));
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, "aws4_request"] = parts[..] else {
            return Err(SigError::Malformed(format!(
                "Credential {credential:?} is not KEY/DATE/REGION/SERVICE/aws4_request"
            )));
        };
        if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SigError::Malformed(format!(
                "Credential {credential:?} is not KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
            )));
        }
        Ok(Authorization {
            access_key_id: key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.to_string(),
        })
    }

    /// The credential scope this header claims.
    pub fn scope(&self) -> String {
        scope(&self.date, &self.region, &self.service)
    }

    /// Checks the signature against `secret`: the time within
    /// [`MAX_SKEW`] of `now`, the scope's date and service, `host` signed,
    /// and the signature itself (compared in constant time). Any region is
    /// accepted: the scope's region is only part of what is signed.
    pub fn verify(
        &self,
        req: &Request<'_>,
        payload_hash: &str,
        secret: &str,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SigError> {
        let amz_date = req
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or(SigError::MissingDate)?;
        let when = parse_amz_date(amz_date)?;
        if (now - when).abs() > MAX_SKEW {
            return Err(SigError::Expired {
                date: amz_date.to_string(),
                now: now.format(AMZ_DATE).to_string(),
            });
        }
        if amz_date.get(..8) != Some(self.date.as_str()) {
            return Err(SigError::ScopeDate {
                scope: self.date.clone(),
                date: amz_date.to_string(),
            });
        }
        if self.service != service {
            return Err(SigError::WrongService {
                found: self.service.clone(),
                expected: service.to_string(),
            });
        }
        if !self.signed_headers.iter().any(|h| h == "host") {
            return Err(SigError::HostNotSigned);
        }
        if let Some(h) = self
            .signed_headers
            .iter()
            .find(|h| !req.headers.contains_key(h.as_str()))
        {
            return Err(SigError::MissingSignedHeader(h.clone()));
        }
        let signed: Vec<&str> = self.signed_headers.iter().map(String::as_str).collect();
        let creq = canonical::canonical_request(
            req.method,
            req.path,
            req.query,
            req.headers,
            &signed,
            payload_hash,
        );
        let sts = string_to_sign(amz_date, &self.scope(), &creq);
        let key = signing_key(secret, &self.date, &self.region, &self.service);
        let given = unhex(&self.signature).ok_or(SigError::Mismatch)?;
        let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(sts.as_bytes());
        mac.verify_slice(&given).map_err(|_| SigError::Mismatch)
    }
}

fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, SigError> {
    NaiveDateTime::parse_from_str(s, AMZ_DATE)
        .map(|t| t.and_utc())
        .map_err(|_| SigError::BadDate(s.to_string()))
}

/// Headers never signed: proxies and clients may change or add them.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "transfer-encoding",
    "user-agent",
    "x-amzn-trace-id",
];

/// Signs a request in place: sets `X-Amz-Date` (and `X-Amz-Security-Token`
/// with a session token), then `Authorization` over every header present
/// but those proxies may touch. `headers` must hold `host`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &mut HeaderMap,
    payload_hash: &str,
    credentials: &Credentials,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Result<(), SignError> {
    if !headers.contains_key(http::header::HOST) {
        return Err(SignError::NoHost);
    }
    let amz_date = now.format(AMZ_DATE).to_string();
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&amz_date).expect("digits and letters"),
    );
    if let Some(token) = &credentials.session_token {
        headers.insert(
            "x-amz-security-token",
            HeaderValue::from_str(token).map_err(|_| SignError::BadCredential)?,
        );
    }
    let mut signed: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !UNSIGNED_HEADERS.contains(k))
        .collect();
    signed.sort_unstable();
    signed.dedup();
    let creq = canonical::canonical_request(method, path, query, headers, &signed, payload_hash);
    let date = &amz_date[..8];
    let scope = scope(date, region, service);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let value = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={}",
        credentials.access_key_id,
        signed.join(";"),
        hex(&hmac(&key, sts.as_bytes())),
    );
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&value).map_err(|_| SignError::BadCredential)?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        )
    }

    fn now() -> DateTime<Utc> {
        parse_amz_date("20150830T123600Z").unwrap()
    }

    fn signed(path: &str, body: &[u8]) -> (HeaderMap, Authorization) {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
        sign(
            "POST",
            path,
            None,
            &mut h,
            &sha256_hex(body),
            &creds(),
            "eu-west-1",
            "lambda",
            now(),
        )
        .unwrap();
        let auth = Authorization::parse(h["authorization"].to_str().unwrap())
            .unwrap()
            .unwrap();
        (h, auth)
    }

    #[test]
    fn what_is_signed_verifies_and_nothing_else_does() {
        let path = "/2015-03-31/functions/echo/invocations";
        let (h, auth) = signed(path, b"{}");
        assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
        assert_eq!(auth.region, "eu-west-1");
        assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
        let req = Request {
            method: "POST",
            path,
            query: None,
            headers: &h,
        };
        let secret = &creds().secret_access_key;
        let hash = sha256_hex(b"{}");
        assert_eq!(auth.verify(&req, &hash, secret, "lambda", now()), Ok(()));
        // Another body, secret, method, path, service or time fails.
        assert_eq!(
            auth.verify(&req, &sha256_hex(b"[]"), secret, "lambda", now()),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            auth.verify(&req, &hash, "not-it", "lambda", now()),
            Err(SigError::Mismatch)
        );
        let other = Request {
            method: "GET",
            ..req
        };
        assert_eq!(
            auth.verify(&other, &hash, secret, "lambda", now()),
            Err(SigError::Mismatch)
        );
        let other = Request {
            path: "/2015-03-31/functions/other/invocations",
            ..req
        };
        assert_eq!(
            auth.verify(&other, &hash, secret, "lambda", now()),
            Err(SigError::Mismatch)
        );
        assert!(matches!(
            auth.verify(&req, &hash, secret, "s3", now()),
            Err(SigError::WrongService { .. })
        ));
        let later = now() + chrono::TimeDelta::minutes(16);
        assert!(matches!(
            auth.verify(&req, &hash, secret, "lambda", later),
            Err(SigError::Expired { .. })
        ));
        let within = now() - chrono::TimeDelta::minutes(14);
        assert_eq!(auth.verify(&req, &hash, secret, "lambda", within), Ok(()));
    }

    #[test]
    fn a_header_added_after_signing_is_ignored_one_changed_is_not() {
        let path = "/v1/functions";
        let (mut h, auth) = signed(path, b"");
        h.insert("x-extra", HeaderValue::from_static("1"));
        let hash = sha256_hex(b"");
        let secret = creds().secret_access_key;
        let req = |h: &HeaderMap| {
            auth.verify(
                &Request {
                    method: "POST",
                    path,
                    query: None,
                    headers: h,
                },
                &hash,
                &secret,
                "lambda",
                now(),
            )
        };
        assert_eq!(req(&h), Ok(()));
        h.insert("host", HeaderValue::from_static("evil.example"));
        assert_eq!(req(&h), Err(SigError::Mismatch));
        h.remove("host");
        assert_eq!(req(&h), Err(SigError::MissingSignedHeader("host".into())));
    }

    #[test]
    fn authorization_headers_are_read_strictly() {
        assert!(Authorization::parse("Bearer abc").is_none());
        assert!(Authorization::parse("AWS4-HMAC-SHA256X").is_none());
        let bad = |v: &str| Authorization::parse(v).unwrap().unwrap_err();
        assert!(matches!(
            bad("AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/lambda, SignedHeaders=host, Signature=00"),
            SigError::Malformed(_)
        ));
        assert!(matches!(
            bad("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00"),
            SigError::Malformed(_)
        ));
        assert!(matches!(
            bad("AWS4-HMAC-SHA256 Credential=K/2015/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00"),
            SigError::Malformed(_)
        ));
        let a = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/lambda/aws4_request,SignedHeaders=Host;x-amz-date,Signature=00",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(a.scope(), "20150830/us-east-1/lambda/aws4_request");
    }

    #[test]
    fn a_signature_that_is_not_hex_is_a_mismatch() {
        let path = "/";
        let (h, mut auth) = signed(path, b"");
        auth.signature = "zz".into();
        let req = Request {
            method: "POST",
            path,
            query: None,
            headers: &h,
        };
        assert_eq!(
            auth.verify(
                &req,
                &sha256_hex(b""),
                &creds().secret_access_key,
                "lambda",
                now()
            ),
            Err(SigError::Mismatch)
        );
    }
}
