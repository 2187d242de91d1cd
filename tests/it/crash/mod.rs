//! Crash safety and restarts: SIGKILL mid-stream loses no acknowledged event,
//! SIGTERM closes streams cleanly, a restart keeps cursors; on the embedded
//! store, a torn tail is cut on start and a wiped log gets a new epoch.
//! The broker is the real binary, killed, stopped and started again.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::Value;

use crate::support::*;

mod damage;
mod recovery;
mod restart;
mod segments;
mod sigkill;

const T: Duration = Duration::from_secs(15);

/// A publisher that publishes `{"p":tag,"seq":i}` until its first failure
/// (the broker died), recording every acknowledged (cursor, data).
async fn publish_until_error(
    base: String,
    topic: String,
    tag: &'static str,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<AtomicUsize>,
) {
    let client = http_client();
    for i in 0u64.. {
        let data = format!("{{\"p\":\"{tag}\",\"seq\":{i}}}");
        let r = client
            .post(format!("{base}/v1/topics/{topic}/events"))
            .body(data.clone())
            .send()
            .await;
        let Ok(r) = r else { return };
        if r.status() != 201 {
            return;
        }
        let Ok(v) = r.json::<Value>().await else {
            return;
        };
        let c = v["cursor"].as_str().expect("cursor").to_string();
        acked.lock().unwrap().push((c, data));
        count.fetch_add(1, Ordering::SeqCst);
    }
}
