//! The AWS Signature Version 4 test suite (vendored in `sigv4-suite/`, see
//! its README): for each request, the canonical request, the string to
//! sign and the Authorization header must be AWS's, and the signed request
//! must verify.

use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, TimeZone, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use virga_sigv4::{canonical, sha256_hex, sign, string_to_sign, Authorization, Credentials};

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const SERVICE: &str = "service";
const WHEN: &str = "20150830T123600Z";

struct Parsed {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A `.req` / `.sreq` file: request line, `Name:value` lines, blank line, body.
fn parse(text: &str) -> Parsed {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap();
    let (method, rest) = first.split_once(' ').unwrap();
    let uri = rest.strip_suffix(" HTTP/1.1").unwrap();
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (uri.to_string(), None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    Parsed {
        method: method.to_string(),
        path,
        query,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if p.join(format!("{name}.req")).exists() {
                out.push(p);
            } else {
                cases(&p, out);
            }
        }
    }
}

fn read(dir: &Path, ext: &str) -> String {
    let name = dir.file_name().unwrap().to_str().unwrap();
    std::fs::read_to_string(dir.join(format!("{name}.{ext}"))).unwrap()
}

#[test]
fn every_vendored_case_signs_and_verifies_as_aws_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-suite");
    let mut dirs = Vec::new();
    cases(&root, &mut dirs);
    dirs.sort();
    assert!(dirs.len() >= 25, "the suite is missing: {}", dirs.len());
    let now =
        Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(WHEN, "%Y%m%dT%H%M%SZ").unwrap());
    let creds = Credentials::new(KEY_ID, SECRET, None);
    for dir in &dirs {
        let case = dir.file_name().unwrap().to_str().unwrap();
        let req = parse(&read(dir, "req"));
        let hash = sha256_hex(&req.body);
        let mut signed: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        signed.sort_unstable();
        signed.dedup();
        let creq = canonical::canonical_request(
            &req.method,
            &req.path,
            req.query.as_deref(),
            &req.headers,
            &signed,
            &hash,
        );
        assert_eq!(creq, read(dir, "creq"), "{case}: canonical request");
        let scope = format!("20150830/{REGION}/{SERVICE}/aws4_request");
        assert_eq!(
            string_to_sign(WHEN, &scope, &creq),
            read(dir, "sts"),
            "{case}: string to sign"
        );
        let mut headers = req.headers.clone();
        sign(
            &req.method,
            &req.path,
            req.query.as_deref(),
            &mut headers,
            &hash,
            &creds,
            REGION,
            SERVICE,
            now,
        )
        .unwrap();
        assert_eq!(
            headers["authorization"],
            read(dir, "authz").trim_end(),
            "{case}: Authorization"
        );

        let sreq = parse(&read(dir, "sreq"));
        let value = sreq.headers["authorization"].to_str().unwrap();
        let auth = Authorization::parse(value).unwrap().unwrap();
        let signed_req = virga_sigv4::Request {
            method: &sreq.method,
            path: &sreq.path,
            query: sreq.query.as_deref(),
            headers: &sreq.headers,
        };
        let hash = sha256_hex(&sreq.body);
        let verified = auth.verify(&signed_req, &hash, SECRET, SERVICE, now);
        assert_eq!(verified, Ok(()), "{case}: the signed request verifies");
        let other_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX";
        let wrong = auth.verify(&signed_req, &hash, other_secret, SERVICE, now);
        assert!(wrong.is_err(), "{case}: another secret fails");
    }
}
