//! Redis over verified TLS (`rediss://`), and through Sentinel across a
//! failover.

use std::time::Duration;

use tokio::time::Instant;

use super::T;
use crate::support::{certs::make_certs, redis::RedisServer, *};

/// `rediss://`: events go to Redis over TLS, and the server's certificate is
/// checked (here against a private CA given in `SSL_CERT_FILE`): a broker
/// that cannot verify it stores nothing and says why it is not ready.
#[tokio::test]
async fn rediss_url_stores_over_verified_tls() {
    bounded(120, async {
        let certs = tempfile::tempdir().expect("tempdir");
        make_certs(certs.path());
        let p = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
        let tls_port = free_port().to_string();
        let redis = RedisServer::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &p("srv.crt"),
            "--tls-key-file",
            &p("srv.key"),
            "--tls-ca-cert-file",
            &p("ca.crt"),
            "--tls-auth-clients",
            "no",
        ])
        .await;
        let url = format!("rediss://127.0.0.1:{tls_port}");
        let ca = p("ca.crt");
        // A process: SSL_CERT_FILE is read from the process environment.
        let store = Setup::new(Store::Redis).redis(&url, "tlstest");
        let a = BrokerProcess::with(store.clone().env(&[("SSL_CERT_FILE", &ca)])).await;
        assert_eq!(a.get("/readyz").await.status, 200);
        let t = topic("tls");
        let cursors = a.publish_numbered(&t, 0..5).await;
        // They are in that Redis (read over its plain port).
        let log = format!("tlstest:{{{t}}}:log:{}", cursor_epoch(&cursors[0]));
        assert_eq!(redis.cli(&["XLEN", &log]), "5");
        let mut s = a.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let ids: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(ids, cursors);

        // The same URL without the CA: the certificate does not verify.
        let empty = tempfile::tempdir().expect("tempdir");
        let none = empty.path().join("none.pem");
        std::fs::write(&none, "").unwrap();
        let none = none.to_str().unwrap().to_owned();
        let b = BrokerProcess::with(store.env(&[("SSL_CERT_FILE", &none)])).await;
        let r = b.get("/readyz").await;
        assert_eq!(r.status, 503, "readyz of an unverifiable Redis: {}", r.text);
        let r = b.publish(&t, r#"{"n":1}"#, &[]).await;
        r.assert_problem(503);
        assert_eq!(
            redis.cli(&["XLEN", &log]),
            "5",
            "nothing stored without TLS trust"
        );
    })
    .await;
}

/// Sentinel: the store finds the master through Sentinel, and follows a
/// failover to the promoted replica with no broker restart: every event
/// that got a 201 is readable afterwards, in order, and a subscriber that
/// resumes by cursor misses nothing.
#[tokio::test]
async fn sentinel_finds_the_master_and_follows_a_failover() {
    bounded(180, async {
        let mut master = RedisServer::start().await;
        let master_port = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]).await;
        let sentinel = RedisServer::start_sentinel(master.port).await;
        let sentinels = format!("redis://127.0.0.1:{}", sentinel.port);
        // The URL is the master's: with sentinels set, the store asks them.
        let a = Broker::with(
            Setup::new(Store::Redis)
                .redis(&master.url(), "senttest")
                .env(&[
                    ("SLUICE__REDIS__SENTINELS", sentinels.as_str()),
                    ("SLUICE__REDIS__SENTINEL_MASTER", "mymaster"),
                ]),
        )
        .await;
        let t = topic("sentinel");
        let mut cursors = a.publish_numbered(&t, 0..5).await;
        let log = format!("senttest:{{{t}}}:log:{}", cursor_epoch(&cursors[0]));
        assert_eq!(master.cli(&["XLEN", &log]), "5", "written to the master");
        let mut s = a.sse(&t, "from=earliest", &[]).await;
        s.assert_ok();
        let got: Vec<String> = s.expect_events(5, T).await.iter().map(msg_id).collect();
        assert_eq!(got, cursors);
        // The replica has caught up before its master goes: WAIT makes the
        // master confirm one replica holds every write so far (generous: on
        // a loaded machine the replica's first sync can take seconds).
        assert_eq!(master.cli(&["WAIT", "1", "60000"]), "1");

        master.kill9().await;
        // Publish until the broker reaches the promoted replica; 503s
        // meanwhile (nothing stored), then 201s again.
        let mut retries = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 5;
        while n < 15 {
            assert!(
                Instant::now() < deadline,
                "no publish went through within 60 s of the failover"
            );
            let r = a.publish(&t, &format!("{{\"seq\":{n}}}"), &[]).await;
            match r.status.as_u16() {
                201 => {
                    cursors.push(r.json["cursor"].as_str().unwrap().to_owned());
                    n += 1;
                }
                503 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("publish during failover: {other} {}", r.text),
            }
        }
        assert!(
            retries > 0,
            "the master was killed: some publishes must have waited"
        );
        assert_eq!(
            replica.cli(&["ROLE"]).lines().next(),
            Some("master"),
            "the replica was promoted"
        );
        assert_eq!(replica.cli(&["XLEN", &log]), "15");
        // Resume after the 5th event: the other ten, in order, once.
        let mut r = a.sse(&t, "", &[("last-event-id", &cursors[4])]).await;
        r.assert_ok();
        let got: Vec<String> = r.expect_events(10, T).await.iter().map(msg_id).collect();
        assert_eq!(got, cursors[5..].to_vec());
        r.expect_no_event(Duration::from_millis(300)).await;
    })
    .await;
}
