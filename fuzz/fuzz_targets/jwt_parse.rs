//! JWT handling of attacker-chosen text: shape detection, bearer-header parsing, header decoding
//! and the claims mapping never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = platform::auth::jwks::claims_from_payload(data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = platform::auth::looks_like_jwt(s);
    let _ = jsonwebtoken::decode_header(s);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(s) {
        headers.insert(http::header::AUTHORIZATION, v);
        let _ = platform::auth::bearer_token(&headers);
    }
});
