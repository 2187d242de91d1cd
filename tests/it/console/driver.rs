//! A headless Chromium driven over WebDriver (`chromedriver` and the
//! `fantoccini` crate): pages are opened, filled in and read as a person
//! would, through the DOM.

use std::{path::Path, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support::{free_port, wait_for};

use crate::browser::CHROMIUM;
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether a browser test can run. Without Chromium it is skipped with a
/// message, except in CI (`CI` set), where it fails: a green CI must mean
/// the browser tests ran.
pub fn chromium_available(needs_driver: bool) -> bool {
    let missing: Vec<&str> = [CHROMIUM]
        .into_iter()
        .chain(needs_driver.then_some(CHROMEDRIVER))
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{missing:?} not installed: the browser tests must run in CI");
    }
    println!("{missing:?} not installed: browser test skipped (it fails in CI)");
    false
}

/// One browser session with its own chromedriver and profile.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` where
    /// [`chromium_available`] says to skip.
    pub async fn start() -> Option<Browser> {
        if !chromium_available(true) {
            return None;
        }
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        wait_for(Duration::from_secs(20), "chromedriver answers", || {
            let req = http.get(&status).send();
            async move { req.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1200,880",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.start_kill();
                panic!("no browser session: {e}");
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the element with this id ("" when there is none).
    pub async fn text(&self, id: &str) -> String {
        let v = self
            .js(
                "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
                vec![json!(id)],
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Types `text` into the field with this id, replacing what it held.
    pub async fn fill(&self, id: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Id(id))
            .await
            .expect("find the field");
        el.clear().await.expect("clear the field");
        el.send_keys(text).await.expect("type into the field");
    }

    pub async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .expect("find the button")
            .click()
            .await
            .expect("click");
    }

    /// Polls the page until `script` returns something other than
    /// `null`/`false`, which it returns; panics with the page's state
    /// after `secs`.
    pub async fn wait(&self, secs: u64, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(script, vec![]).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                let body = self.text_of_body().await;
                panic!("timed out after {secs} s waiting for: {what}\npage:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text_of_body(&self) -> String {
        self.js("return document.body.innerText;", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.start_kill();
        let _ = self.driver.wait().await;
    }
}
