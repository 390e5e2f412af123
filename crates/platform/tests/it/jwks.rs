//! JWT verification against an in-process JWKS server with RSA (RS256), P-256 (ES256) and
//! Ed25519 (EdDSA) keys.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::{AuthConfig, AuthError, Authenticator, JwksVerifier, JwtConfig};
use platform::{AuthMethod, Scopes};
use rand::RngCore;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use serde_json::{Value, json};

use crate::{init, now, spawn};

pub const ISS: &str = "https://sso.test";
pub const AUD: &str = "panaversity";

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

/// A signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Value,
    /// DER of the public key (RSA only), for the HS256-with-public-key attack.
    pub public_der: Vec<u8>,
}

fn finish(kid: &str, alg: Algorithm, enc: EncodingKey, public_der: Vec<u8>) -> TestKey {
    let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.to_owned(),
        alg,
        enc,
        jwk: serde_json::to_value(&jwk).unwrap(),
        public_der,
    }
}

pub fn rsa_key(kid: &str) -> TestKey {
    let key = rsa::RsaPrivateKey::new(&mut TestRng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    let public_der = key
        .to_public_key()
        .to_pkcs1_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    finish(
        kid,
        Algorithm::RS256,
        EncodingKey::from_rsa_der(der.as_bytes()),
        public_der,
    )
}

/// A P-256 private key as PKCS#8 DER (SEC1 ECPrivateKey without the optional public key).
pub fn ec_key(kid: &str) -> TestKey {
    let mut scalar = [0u8; 32];
    rand::rng().fill_bytes(&mut scalar);
    scalar[0] = (scalar[0] & 0x7f) | 0x01; // below the group order, never zero
    let mut der = vec![
        0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
        0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25,
        0x02, 0x01, 0x01, 0x04, 0x20,
    ];
    der.extend_from_slice(&scalar);
    finish(
        kid,
        Algorithm::ES256,
        EncodingKey::from_ec_der(&der),
        vec![],
    )
}

/// An Ed25519 private key as PKCS#8 DER.
pub fn ed_key(kid: &str) -> TestKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    finish(
        kid,
        Algorithm::EdDSA,
        EncodingKey::from_ed_der(&der),
        vec![],
    )
}

/// The fake SSO's JWKS endpoint: serves `doc`, counts hits, answers 503 while `down`.
pub struct JwksServer {
    pub doc: Mutex<Value>,
    pub hits: AtomicUsize,
    pub down: AtomicBool,
    pub url: Mutex<String>,
}

impl JwksServer {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.doc.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
    pub fn url(&self) -> String {
        self.url.lock().unwrap().clone()
    }
}

async fn jwks_handler(State(s): State<Arc<JwksServer>>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(s.doc.lock().unwrap().clone()).into_response()
}

pub async fn start_jwks(keys: &[&TestKey]) -> Arc<JwksServer> {
    init();
    let s = Arc::new(JwksServer {
        doc: Mutex::new(json!({"keys": []})),
        hits: AtomicUsize::new(0),
        down: AtomicBool::new(false),
        url: Mutex::new(String::new()),
    });
    s.set_keys(keys);
    let app = Router::new()
        .route("/api/auth/jwks", get(jwks_handler))
        .with_state(s.clone());
    let addr = spawn(app).await;
    *s.url.lock().unwrap() = format!("http://{addr}/api/auth/jwks");
    s
}

pub fn config(url: &str) -> JwtConfig {
    let mut c = JwtConfig::new(url);
    c.issuer = Some(ISS.into());
    c.audience = Some(AUD.into());
    c.refetch_cooldown = Duration::from_millis(300);
    c.http_timeout = Duration::from_secs(2);
    c
}

pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub, "iss": ISS, "aud": AUD, "iat": now(), "exp": now() + 600,
        "scope": "read write", "name": "Ann", "email": "ann@example.com", "organization_id": "org-1"
    })
}

pub fn sign(key: &TestKey, claims: &Value) -> String {
    sign_kid(key, &key.kid, claims)
}

pub fn sign_kid(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(key.alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn authenticator(cfg: JwtConfig) -> Authenticator {
    Authenticator::new(AuthConfig {
        jwt: Some(cfg),
        ..Default::default()
    })
}

fn is_invalid(r: &Result<impl std::fmt::Debug, AuthError>) -> bool {
    matches!(r, Err(AuthError::Invalid(_)))
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_give_an_identity() {
    let (rk, ek, dk) = (rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1"));
    let srv = start_jwks(&[&rk, &ek, &dk]).await;
    let auth = authenticator(config(&srv.url()));
    for key in [&rk, &ek, &dk] {
        let id = auth
            .authenticate(&bearer(&sign(key, &claims("user-1"))))
            .await
            .unwrap_or_else(|e| panic!("{:?} token rejected: {e}", key.alg));
        assert_eq!(id.subject, "user-1");
        assert_eq!(id.method, AuthMethod::Jwt);
        assert_eq!(
            id.scopes,
            Scopes {
                read: true,
                write: true,
                admin: false
            }
        );
        assert_eq!(id.name.as_deref(), Some("Ann"));
        assert_eq!(id.email.as_deref(), Some("ann@example.com"));
        assert_eq!(id.organization.as_deref(), Some("org-1"));
    }
    // One fetch served all three verifications.
    assert_eq!(srv.hits(), 1);
}

#[tokio::test]
async fn missing_expired_wrong_issuer_wrong_audience_are_rejected() {
    let k = rsa_key("k1");
    let srv = start_jwks(&[&k]).await;
    let auth = authenticator(config(&srv.url()));

    assert_eq!(
        auth.authenticate(&HeaderMap::new()).await,
        Err(AuthError::Missing)
    );

    let mut c = claims("u");
    c["exp"] = json!(now() - 600);
    assert_eq!(
        auth.authenticate(&bearer(&sign(&k, &c))).await,
        Err(AuthError::Expired)
    );
    // Within the 60 s leeway: accepted.
    c["exp"] = json!(now() - 20);
    assert!(auth.authenticate(&bearer(&sign(&k, &c))).await.is_ok());

    let mut c = claims("u");
    c["nbf"] = json!(now() + 600);
    assert!(is_invalid(&auth.authenticate(&bearer(&sign(&k, &c))).await));

    let mut c = claims("u");
    c["iss"] = json!("https://evil.test");
    assert!(is_invalid(&auth.authenticate(&bearer(&sign(&k, &c))).await));
    c.as_object_mut().unwrap().remove("iss");
    assert!(is_invalid(&auth.authenticate(&bearer(&sign(&k, &c))).await));

    let mut c = claims("u");
    c["aud"] = json!("someone-else");
    assert!(is_invalid(&auth.authenticate(&bearer(&sign(&k, &c))).await));
    c["aud"] = json!(["someone-else", AUD]);
    assert!(auth.authenticate(&bearer(&sign(&k, &c))).await.is_ok());

    let mut c = claims("u");
    c.as_object_mut().unwrap().remove("sub");
    assert!(is_invalid(&auth.authenticate(&bearer(&sign(&k, &c))).await));

    // A token signed by a key the JWKS does not publish, under a published kid.
    let other = rsa_key("k1");
    assert!(is_invalid(
        &auth
            .authenticate(&bearer(&sign(&other, &claims("u"))))
            .await
    ));
}

#[tokio::test]
async fn algorithm_confusion_is_rejected() {
    let rk = rsa_key("rsa-1");
    let ek = ec_key("ec-1");
    let srv = start_jwks(&[&rk, &ek]).await;
    let mut cfg = config(&srv.url());
    // Even if someone lists HS256, HMAC is never accepted.
    cfg.algorithms.push(Algorithm::HS256);
    let auth = authenticator(cfg);

    // alg "none", unsigned.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("u").to_string());
    let none_token = format!("{header}.{payload}.");
    assert!(is_invalid(&auth.authenticate(&bearer(&none_token)).await));

    // HS256 keyed with the RSA public key (the classic RS/HS confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let hs =
        jsonwebtoken::encode(&h, &claims("u"), &EncodingKey::from_secret(&rk.public_der)).unwrap();
    assert!(is_invalid(&auth.authenticate(&bearer(&hs)).await));
    // Also keyed with the JWK's modulus text.
    let hs2 = jsonwebtoken::encode(
        &h,
        &claims("u"),
        &EncodingKey::from_secret(rk.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert!(is_invalid(&auth.authenticate(&bearer(&hs2)).await));

    // An RS256 token pointing at the EC key's kid.
    assert!(is_invalid(
        &auth
            .authenticate(&bearer(&sign_kid(&rk, "ec-1", &claims("u"))))
            .await
    ));

    // An algorithm outside the allow-list (RS256 only configured) is refused before any key lookup.
    let mut only_rs = config(&srv.url());
    only_rs.algorithms = vec![Algorithm::RS256];
    let auth = authenticator(only_rs);
    assert!(is_invalid(
        &auth.authenticate(&bearer(&sign(&ek, &claims("u")))).await
    ));
    assert!(
        auth.authenticate(&bearer(&sign(&rk, &claims("u"))))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn unknown_kid_refetches_once_and_respects_the_cooldown() {
    let k1 = rsa_key("k1");
    let srv = start_jwks(&[&k1]).await;
    let auth = authenticator(config(&srv.url()));
    assert!(
        auth.authenticate(&bearer(&sign(&k1, &claims("u"))))
            .await
            .is_ok()
    );
    assert_eq!(srv.hits(), 1);

    // Within the cooldown: unknown kids are rejected without refetching.
    for _ in 0..5 {
        let r = auth
            .authenticate(&bearer(&sign_kid(&k1, "nope", &claims("u"))))
            .await;
        assert!(is_invalid(&r));
    }
    assert_eq!(srv.hits(), 1, "refetch must wait for the cooldown");

    // After the cooldown: exactly one refetch, then rejected (the kid really is unknown).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = auth
        .authenticate(&bearer(&sign_kid(&k1, "nope", &claims("u"))))
        .await;
    assert!(is_invalid(&r));
    assert_eq!(srv.hits(), 2);
    let r = auth
        .authenticate(&bearer(&sign_kid(&k1, "nope", &claims("u"))))
        .await;
    assert!(is_invalid(&r));
    assert_eq!(srv.hits(), 2);
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_refetch() {
    let k1 = rsa_key("k1");
    let k2 = ec_key("k2");
    let srv = start_jwks(&[&k1]).await;
    let auth = authenticator(config(&srv.url()));
    assert!(
        auth.authenticate(&bearer(&sign(&k1, &claims("u"))))
            .await
            .is_ok()
    );

    // The SSO rotates to k2 (and drops k1).
    srv.set_keys(&[&k2]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let id = auth
        .authenticate(&bearer(&sign(&k2, &claims("rotated"))))
        .await
        .unwrap();
    assert_eq!(id.subject, "rotated");
    assert_eq!(srv.hits(), 2);
    // k1 is gone from the refreshed set.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(is_invalid(
        &auth.authenticate(&bearer(&sign(&k1, &claims("u")))).await
    ));
}

#[tokio::test]
async fn stale_keys_are_used_while_the_jwks_is_down() {
    let k = rsa_key("k1");
    let srv = start_jwks(&[&k]).await;
    let mut cfg = config(&srv.url());
    cfg.cache_ttl = Duration::from_millis(100);
    cfg.refetch_cooldown = Duration::from_millis(100);
    let v = JwksVerifier::new(cfg);
    assert_eq!(v.verify(&sign(&k, &claims("u"))).await.unwrap().sub, "u");

    srv.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The cache expired and the refresh fails: the stale key still verifies.
    let c = v.verify(&sign(&k, &claims("still-me"))).await.unwrap();
    assert_eq!(c.sub, "still-me");
    assert!(srv.hits() >= 2, "a refresh was attempted");

    // Back up: fresh keys again.
    srv.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(v.verify(&sign(&k, &claims("u"))).await.is_ok());
}

#[tokio::test]
async fn unreachable_jwks_without_cache_is_unavailable() {
    init();
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let k = rsa_key("k1");
    let auth = authenticator(config(&format!("http://{addr}/jwks")));
    let err = auth
        .authenticate(&bearer(&sign(&k, &claims("u"))))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A JWKS that answers 503 from the start: same.
    let srv = start_jwks(&[&k]).await;
    srv.down.store(true, Ordering::SeqCst);
    let auth = authenticator(config(&srv.url()));
    let err = auth
        .authenticate(&bearer(&sign(&k, &claims("u"))))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_cache_is_filled_by_one_fetch_under_concurrency() {
    let k = ec_key("k1");
    let srv = start_jwks(&[&k]).await;
    let v = JwksVerifier::new(config(&srv.url()));
    let token = sign(&k, &claims("many"));
    let mut hs = Vec::new();
    for _ in 0..50 {
        let v = v.clone();
        let t = token.clone();
        hs.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for h in hs {
        assert_eq!(h.await.unwrap().unwrap().sub, "many");
    }
    assert_eq!(srv.hits(), 1, "single-flight JWKS fetch");
}

#[tokio::test]
async fn symmetric_jwks_keys_and_kidless_tokens() {
    let k = rsa_key("k1");
    let srv = start_jwks(&[&k]).await;
    // The JWKS also (wrongly) publishes a shared secret.
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut doc = srv.doc.lock().unwrap().clone();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hs", "k": URL_SAFE_NO_PAD.encode(secret)}));
    *srv.doc.lock().unwrap() = doc;
    let mut cfg = config(&srv.url());
    cfg.algorithms.push(Algorithm::HS256);
    let v = JwksVerifier::new(cfg);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("hs".into());
    let hs = jsonwebtoken::encode(&h, &claims("u"), &EncodingKey::from_secret(secret)).unwrap();
    assert!(matches!(v.verify(&hs).await, Err(AuthError::Invalid(_))));

    // No kid, and exactly one key that fits RS256: accepted.
    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("nokid"), &k.enc).unwrap();
    assert_eq!(v.verify(&no_kid).await.unwrap().sub, "nokid");
    // No kid with two candidate RSA keys: ambiguous, rejected.
    let k2 = rsa_key("k2");
    srv.set_keys(&[&k, &k2]);
    let v = JwksVerifier::new(config(&srv.url()));
    assert!(matches!(
        v.verify(&no_kid).await,
        Err(AuthError::Invalid(_))
    ));
}
