//! Keys rotated through a JWKS without a restart: a new `kid` makes the
//! broker load the document again (at most once per
//! `jwks_refresh_min_secs`, whatever the number of unknown kids), a key
//! removed from it stops being accepted, and a document that cannot be
//! loaded at start stops the start.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use jsonwebtoken::{
    jwk::{Jwk, JwkSet},
    Algorithm, Header,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

on_embedded_store! {
    #[tokio::test]
    a_new_kid_is_fetched_without_a_restart_at_a_bounded_rate,
    #[tokio::test]
    keys_removed_from_the_document_stop_being_accepted,
    #[tokio::test]
    a_jwks_file_is_read_again_for_a_new_kid,
}

/// The public JWK of test key `name` (RS256), named `kid`.
fn jwk(name: &str, kid: &str) -> Jwk {
    let mut k =
        Jwk::from_encoding_key(&private_key(name, Algorithm::RS256), Algorithm::RS256).unwrap();
    k.common.key_id = Some(kid.to_owned());
    k
}

fn document(keys: &[(&str, &str)]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|(name, kid)| jwk(name, kid)).collect(),
    })
    .unwrap()
}

/// An RS256 token signed with test key `name`, naming `kid`.
fn token(name: &str, kid: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    sign(
        h,
        &claims(rights(&["r"], &["r"], false)),
        &private_key(name, Algorithm::RS256),
    )
}

/// A JWKS server on 127.0.0.1: serves whatever `document` holds, counts
/// the requests.
struct JwksServer {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let document = Arc::new(Mutex::new(initial));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (doc, count) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = doc.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            document,
            fetches,
        }
    }

    fn serve(&self, doc: String) {
        *self.document.lock().unwrap() = doc;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn publish_with(b: &Api, token: String) -> Resp {
    As { api: b, token }.publish("r", "x").await
}

async fn a_new_kid_is_fetched_without_a_restart_at_a_bounded_rate(store: Store) {
    bounded(90, async {
        // Signed up front: RSA signing is slow in a debug build, and the
        // checks below are about time between fetches.
        let k1 = token("rsa1", "k1");
        let k2 = token("rsa2", "k2");
        let k3 = token("rsa1", "k3");
        let junk: Vec<String> = (0..20)
            .map(|i| token("rsa1", &format!("junk{i}")))
            .collect();
        let nobody = token("rsa1", "nobody");

        let jwks = JwksServer::start(document(&[("rsa1", "k1")])).await;
        let min = Duration::from_secs(3);
        let b = Broker::start(
            store,
            &[
                ("SLUICE__AUTH__JWKS", &jwks.url),
                ("SLUICE__AUTH__JWKS_REFRESH_MIN_SECS", "3"),
                ("SLUICE__AUTH__JWKS_REFRESH_SECS", "0"),
            ],
        )
        .await;
        assert_eq!(jwks.fetches(), 1, "fetched once at start");
        assert_eq!(publish_with(&b, k1.clone()).await.status, 201);
        assert_eq!(jwks.fetches(), 1, "a known kid needs no fetch");

        // The issuer rotates: key 2 is published. Once the minimum interval
        // since the last load has passed, a token naming it is accepted.
        jwks.serve(document(&[("rsa1", "k1"), ("rsa2", "k2")]));
        tokio::time::sleep(min).await;
        let r = publish_with(&b, k2.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(jwks.fetches(), 2);
        assert_eq!(publish_with(&b, k1.clone()).await.status, 201);

        // Right after a load, unknown kids (a flood of them, at once) do not
        // make the broker fetch again: refused until the interval passed.
        jwks.serve(document(&[("rsa1", "k1"), ("rsa2", "k2"), ("rsa1", "k3")]));
        let flood = junk
            .iter()
            .chain(std::iter::repeat_n(&k3, 20))
            .map(|t| publish_with(&b, t.clone()));
        for r in futures_util::future::join_all(flood).await {
            assert_401(&r, true, "unknown kid within the interval");
            assert!(
                r.json["detail"].as_str().unwrap().contains("kid"),
                "{}",
                r.text
            );
        }
        assert_eq!(jwks.fetches(), 2, "no fetch within the minimum interval");
        tokio::time::sleep(min).await;
        // Once past it, one fetch serves them all.
        let flood = (0..20).map(|_| publish_with(&b, k3.clone()));
        for r in futures_util::future::join_all(flood).await {
            assert_eq!(r.status, 201, "{}", r.text);
        }
        assert_eq!(jwks.fetches(), 3, "one fetch for twenty requests");
        // A kid nobody has, again and again for a second: one fetch.
        tokio::time::sleep(min).await;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            assert_eq!(publish_with(&b, nobody.clone()).await.status, 401);
        }
        assert_eq!(jwks.fetches(), 4, "one fetch for the unknown kid");
    })
    .await;
}

async fn keys_removed_from_the_document_stop_being_accepted(store: Store) {
    bounded(60, async {
        let jwks = JwksServer::start(document(&[("rsa1", "k1"), ("rsa2", "k2")])).await;
        let b = Broker::start(
            store,
            &[
                ("SLUICE__AUTH__JWKS", &jwks.url),
                ("SLUICE__AUTH__JWKS_REFRESH_SECS", "1"),
            ],
        )
        .await;
        assert_eq!(publish_with(&b, token("rsa1", "k1")).await.status, 201);
        // Key 1 is retired.
        jwks.serve(document(&[("rsa2", "k2")]));
        wait_for(Duration::from_secs(10), "key 1 refused", || async {
            (publish_with(&b, token("rsa1", "k1")).await.status == 401).then_some(())
        })
        .await;
        assert_eq!(publish_with(&b, token("rsa2", "k2")).await.status, 201);
    })
    .await;
}

async fn a_jwks_file_is_read_again_for_a_new_kid(store: Store) {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, document(&[("rsa1", "k1")])).unwrap();
        let b = Broker::start(
            store,
            &[
                ("SLUICE__AUTH__JWKS", file.to_str().unwrap()),
                ("SLUICE__AUTH__JWKS_REFRESH_MIN_SECS", "1"),
            ],
        )
        .await;
        assert_eq!(publish_with(&b, token("rsa1", "k1")).await.status, 201);
        std::fs::write(&file, document(&[("rsa2", "k2")])).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = publish_with(&b, token("rsa2", "k2")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    })
    .await;
}
