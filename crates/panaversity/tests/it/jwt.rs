//! Production mode with SSO tokens: a local JWKS server (RSA key from the `rsa` crate) and the
//! server started with PANAVERSITY_JWKS_URL / _JWT_ISSUER / _JWT_AUDIENCE. Valid tokens work;
//! expired, wrong-issuer, wrong-audience, unknown-kid and alg-none tokens get 401; a student can
//! read and write only their own overlay.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{Value, json};

use crate::support::{BOOK, LESSON, Server, ServerOpts, TempData, client, now, spawn_router};

pub(crate) const ISS: &str = "https://sso.e2e.test";
pub(crate) const AUD: &str = "panaversity-e2e";

/// rand 0.9's thread RNG behind the rand_core 0.6 traits the `rsa` crate wants.
struct TestRng;
impl rsa::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rand::rng().next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        rand::rng().next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::rng().fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        rand::rng().fill_bytes(dest);
        Ok(())
    }
}
impl rsa::rand_core::CryptoRng for TestRng {}

/// An RS256 signing key and its public JWK.
pub(crate) struct TestKey {
    kid: String,
    enc: EncodingKey,
    pub(crate) jwk: Value,
}

pub(crate) fn rsa_key(kid: &str) -> TestKey {
    let key = rsa::RsaPrivateKey::new(&mut TestRng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    let enc = EncodingKey::from_rsa_der(der.as_bytes());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.into(),
        enc,
        jwk: serde_json::to_value(&jwk).unwrap(),
    }
}

pub(crate) fn sign(key: &TestKey, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
}

pub(crate) fn claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "iat": now(), "exp": now() + 600,
           "scope": scope, "name": "Student", "email": format!("{sub}@example.com")})
}

/// A JWKS endpoint on 127.0.0.1 serving `keys`; returns its URL.
async fn start_jwks(keys: &[&TestKey]) -> String {
    let doc = Arc::new(json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}));
    let app = Router::new().route(
        "/api/auth/jwks",
        get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    );
    let addr = spawn_router(app).await;
    format!("http://{addr}/api/auth/jwks")
}

#[tokio::test]
async fn jwt_tokens_and_overlay_isolation() {
    let key = rsa_key("sso-key-1");
    let jwks = start_jwks(&[&key]).await;
    let tmp = TempData::new();
    let opts = ServerOpts::default()
        .env("PANAVERSITY_JWKS_URL", &jwks)
        .env("PANAVERSITY_JWT_ISSUER", ISS)
        .env("PANAVERSITY_JWT_AUDIENCE", AUD);
    let server = Server::start(&tmp.data(), opts).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});

    // A valid token works.
    let alice_token = sign(&key, &claims("alice", "read write"));
    let alice = server.mcp_bearer(&alice_token);
    assert_eq!(alice.raw(list.clone()).await.status, 200);

    // Every bad token is a 401 with resource metadata.
    let mut expired = claims("alice", "read write");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    let mut wrong_iss = claims("alice", "read write");
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = claims("alice", "read write");
    wrong_aud["aud"] = json!("someone-else");
    let stranger = rsa_key("not-in-jwks");
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"sso-key-1"}"#);
    let none_payload = URL_SAFE_NO_PAD.encode(claims("alice", "read write admin").to_string());
    let mut tampered = alice_token.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let bad = [
        ("expired", sign(&key, &expired)),
        ("wrong issuer", sign(&key, &wrong_iss)),
        ("wrong audience", sign(&key, &wrong_aud)),
        (
            "unknown kid",
            sign(&stranger, &claims("alice", "read write")),
        ),
        ("alg none", format!("{none_header}.{none_payload}.")),
        ("bad signature", tampered),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in &bad {
        let a = server.mcp_bearer(token).raw(list.clone()).await;
        assert_eq!(a.status, 401, "{what}: {a:?}");
        let www = a.headers["www-authenticate"].to_str().unwrap();
        assert!(www.contains("resource_metadata="), "{what}: {www}");
    }
    assert_eq!(server.mcp(&[]).raw(list.clone()).await.status, 401);

    // Overlays: alice writes her own overlay and reads it back (source overlay) ...
    let base = alice
        .ok("read_content", json!({"book_id": BOOK, "path": LESSON}))
        .await;
    assert_eq!(base["source"], json!("base"));
    let w = alice
        .ok(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice",
                   "content": "# Alice's notes\n"}),
        )
        .await;
    assert_eq!(w["namespace"], json!("overlay"), "{w}");
    let mine = alice
        .ok(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        )
        .await;
    assert_eq!(mine["content"], json!("# Alice's notes\n"));
    assert_eq!(mine["source"], json!("overlay"));

    // ... while bob can neither read nor write hers, nor search it; his own view is the base.
    let bob = server.mcp_bearer(&sign(&key, &claims("bob", "read write")));
    bob.err(
        "read_content",
        json!({"book_id": BOOK, "path": LESSON, "user_id": "alice"}),
        "FORBIDDEN",
    )
    .await;
    bob.err(
        "write_content",
        json!({"book_id": BOOK, "path": LESSON, "user_id": "alice", "content": "pwned\n",
               "expected_hash": w["file_hash"]}),
        "FORBIDDEN",
    )
    .await;
    bob.err(
        "grep_search",
        json!({"book_id": BOOK, "pattern": "Alice", "user_id": "alice"}),
        "FORBIDDEN",
    )
    .await;
    bob.err(
        "read_content",
        json!({"book_id": BOOK, "path": "content/01-Foundations/01-What-Is-A-Program",
               "scope": "chapter", "user_id": "alice"}),
        "FORBIDDEN",
    )
    .await;
    bob.err(
        "get_book_archive",
        json!({"book_id": BOOK, "scope": "content", "user_id": "alice"}),
        "FORBIDDEN",
    )
    .await;
    // Bob's bulk read of the chapter shows the base text, not alice's overlay.
    let chapter = bob
        .ok(
            "read_content",
            json!({"book_id": BOOK, "path": "content/01-Foundations/01-What-Is-A-Program",
                   "scope": "chapter"}),
        )
        .await;
    assert!(!chapter.to_string().contains("Alice's notes"), "{chapter}");
    assert!(chapter["count"].as_u64().unwrap() >= 3, "{chapter}");
    let his = bob
        .ok(
            "read_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "bob"}),
        )
        .await;
    assert_eq!(his["source"], json!("base"));
    assert_eq!(his["content"], base["content"]);
    let found = bob
        .ok(
            "grep_search",
            json!({"book_id": BOOK, "pattern": "Alice's notes"}),
        )
        .await;
    assert_eq!(found["count"], json!(0), "{found}");

    // A read-scope token cannot write even its own overlay.
    let carol = server.mcp_bearer(&sign(&key, &claims("carol", "read")));
    carol
        .err(
            "write_content",
            json!({"book_id": BOOK, "path": LESSON, "user_id": "carol", "content": "x\n"}),
            "FORBIDDEN",
        )
        .await;

    // The audit agent is the token's subject.
    let admin = server.mcp_bearer(&sign(&key, &claims("sso-admin", "read write admin")));
    let page = admin
        .ok(
            "query_audit_log",
            json!({"book_id": BOOK, "agent_id": "alice"}),
        )
        .await;
    let rows = crate::dev_serve::audit_rows(&page);
    assert_eq!(rows.len(), 1, "{page}");
    assert_eq!(rows[0]["user_id"], json!("alice"), "{page}");
    assert_eq!(rows[0]["status"], json!("success"), "{page}");
    // Bob's refused write is audited under bob, not under alice.
    let page = admin
        .ok(
            "query_audit_log",
            json!({"book_id": BOOK, "agent_id": "bob"}),
        )
        .await;
    assert!(
        crate::dev_serve::audit_rows(&page)
            .iter()
            .all(|r| r["status"] != json!("success")),
        "{page}"
    );

    // ChatKit uses the same tokens: no token 401, a valid one streams.
    let http = client();
    let r = http
        .get(format!(
            "{}/chatkit/suggestions?mode=ask&lesson_path=01-Foundations/01-What-Is-A-Program/01-instructions",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!(
            "{}/chatkit/suggestions?mode=ask&lesson_path=01-Foundations/01-What-Is-A-Program/01-instructions",
            server.base
        ))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}
