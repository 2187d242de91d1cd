//! A broker in the test process: `sluice::server::run` on a listener bound
//! to 127.0.0.1:0, in an actix System on a thread of its own, stopped (as
//! SIGTERM would stop the binary) and joined when the handle is dropped.
//!
//! Its `shutdown_grace_secs` is 0 unless the test sets it. Drop blocks the
//! test's runtime while it joins, so the client connections that runtime
//! would close (the pool's idle keep-alive ones, streams just dropped) stay
//! open, and a graceful stop waits for them: the whole default grace of
//! 10 s, or with 0 one tick of actix's shutdown timer (1 s) at most.
//!
//! What is process-wide is shared by every in-process broker: the
//! Prometheus registry (`/metrics` sums them all), the tracing subscriber,
//! and the environment (so settings come from the handle's own variables,
//! never from the process's).

use std::{
    io,
    ops::Deref,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sluice::config::{Overrides, Settings};

use super::{Api, Setup, Store};

/// How long the broker may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A broker running in this process; see the module documentation.
pub struct Broker {
    api: Api,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Its temporary data directory, removed after it stopped.
    _tmp: Option<tempfile::TempDir>,
}

impl Deref for Broker {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Logs of in-process brokers, when `RUST_LOG` asks for them (into the
/// output of the test that started the broker).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

impl Broker {
    /// Starts a broker on `store` with these `SLUICE__…` settings and a
    /// temporary data directory.
    pub async fn start(store: Store, env: &[(&str, &str)]) -> Broker {
        Broker::with(Setup::new(store).env(env)).await
    }

    /// Starts a broker as `setup` says. Its variables must all be settings
    /// (`SLUICE__…`): anything else is read from the process environment,
    /// which only a [`super::BrokerProcess`] has of its own.
    pub async fn with(setup: Setup) -> Broker {
        init_logging();
        let (data_dir, tmp) = setup.data_dir();
        // No grace period unless the test sets one (module documentation).
        let mut vars = vec![("SLUICE__SHUTDOWN_GRACE_SECS".to_string(), "0".to_string())];
        vars.extend(setup.vars(&data_dir).await);
        for (k, _) in &vars {
            assert!(
                k.starts_with("SLUICE__"),
                "{k} is read from the process environment: start a BrokerProcess for this test"
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let overrides = Overrides {
            file: setup.config.clone(),
            listen: Some(addr.to_string()),
            data_dir: Some(data_dir.clone()),
            log_format: None,
        };
        let settings = Settings::load_with_env(&overrides, Some(vars))
            .unwrap_or_else(|e| panic!("in-process broker settings: {e}"));
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-{}", addr.port()))
            .spawn(move || {
                actix_web::rt::System::new().block_on(sluice::server::run(
                    settings,
                    listener,
                    async {
                        let _ = stop.await;
                    },
                    false,
                ))
            })
            .expect("spawn the broker thread");
        let mut b = Broker {
            api: Api::new(addr.port(), data_dir),
            shutdown: Some(shutdown),
            thread: Some(thread),
            _tmp: tmp,
        };
        b.wait_ready().await;
        b
    }

    /// Waits until `/healthz` answers; panics if the broker stopped.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.thread.take().map(JoinHandle::join);
                panic!("the in-process broker stopped while starting: {result:?}");
            }
            let r = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the in-process broker did not answer /healthz within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Broker {
    /// Shuts the broker down (streams end, the store is flushed) as SIGTERM
    /// would, and waits for its thread.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("in-process broker on port {}: {e}", self.port),
                Err(_) => eprintln!("in-process broker on port {} panicked", self.port),
            }
        }
    }
}
