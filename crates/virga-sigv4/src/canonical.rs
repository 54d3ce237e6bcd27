//! The canonical request: method, URI path, query, signed headers and the
//! payload's hash, each in the one form both sides compute.

use http::HeaderMap;

/// The canonical URI of a path as it travels (percent-encoded or not).
///
/// The path is normalised as for every service but S3 (`.` and `..`
/// segments resolved, repeated slashes collapsed, a trailing slash kept),
/// then every byte outside the unreserved set is percent-encoded. A path
/// that was encoded for the wire is thus encoded twice, as AWS's SDKs and
/// CLI do for non-S3 services (`arn%3Aaws...` becomes `arn%253Aaws...`).
pub fn canonical_uri(path: &str) -> String {
    let normalized = normalize_path(if path.is_empty() { "/" } else { path });
    let mut out = String::with_capacity(normalized.len() + 8);
    for b in normalized.bytes() {
        if b == b'/' {
            out.push('/');
        } else {
            encode_byte(b, &mut out);
        }
    }
    out
}

/// RFC 3986 dot-segment removal plus collapsed slashes.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing =
        path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") || path == ".";
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// The canonical query string: each name and value decoded, then encoded
/// strictly, and the pairs sorted by name, then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `name:value` lines of the signed headers (names lowercase, sorted as
/// given), each header's values trimmed, inner runs of spaces collapsed,
/// and repeated headers joined with commas in the order they came.
pub fn canonical_headers(headers: &HeaderMap, signed: &[&str]) -> String {
    let mut out = String::new();
    for name in signed {
        out.push_str(name);
        out.push(':');
        for (i, v) in headers.get_all(*name).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let text = String::from_utf8_lossy(v.as_bytes());
            let mut words = text.split_whitespace();
            if let Some(first) = words.next() {
                out.push_str(first);
                for w in words {
                    out.push(' ');
                    out.push_str(w);
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The whole canonical request. `signed` lists lowercase header names in
/// sorted order; `payload_hash` is the hex SHA-256 of the body or
/// `UNSIGNED-PAYLOAD`.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    signed: &[&str],
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{}\n{}\n{}\n{}\n{payload_hash}",
        canonical_uri(path),
        canonical_query(query.unwrap_or("")),
        canonical_headers(headers, signed),
        signed.join(";"),
    )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode_byte(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if is_unreserved(b) {
        out.push(b as char);
    } else {
        out.push('%');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// Percent-encodes every byte outside the unreserved set.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        encode_byte(b, &mut out);
    }
    out
}

/// Percent-decodes (a `%` not followed by two hex digits stays as it is;
/// `+` stays a plus).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_then_encoded() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/example1/example2/../.."), "/");
        assert_eq!(canonical_uri("/./example"), "/example");
        assert_eq!(canonical_uri("/a/b/."), "/a/b/");
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        // Encoded for the wire, then again for the signature.
        assert_eq!(
            canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda/invocations"
        );
    }

    #[test]
    fn queries_are_decoded_reencoded_and_sorted() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("flag&x=a%2Fb"), "flag=&x=a%2Fb");
        assert_eq!(canonical_query("x=a/b c"), "x=a%2Fb%20c");
        assert_eq!(canonical_query("x=%zz"), "x=%25zz");
        assert_eq!(canonical_query("x=a+b"), "x=a%2Bb");
        assert_eq!(canonical_query("x=100%"), "x=100%25");
    }
}
