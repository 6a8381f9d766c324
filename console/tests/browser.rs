//! Real-browser test: headless Chromium (Debian's `chromium` + `chromedriver`,
//! driven over WebDriver) loads every page of a console filled with a
//! synthetic call, and fails if a chart stayed empty or the page logged a
//! console error. Screenshots go to `$DEMARC_ARTIFACTS` (default
//! `<repo>/artifacts`)/console/.
//!
//! Chromium only talks to 127.0.0.1: background networking is off and every
//! other host name resolves to nothing.

mod common;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{recent, Harness};
use demarc_console::{app, store};
use serde_json::{json, Value};

/// Kills the process we started (by its own handle) when the test ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("DEMARC_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts")))
        .join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct WebDriver {
    http: reqwest::Client,
    base: String,
}

impl WebDriver {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "webdriver {path}: {status} {v}");
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.cmd(reqwest::Method::GET, path, None).await
    }
}

/// Per chart: drawn, and what it holds (lit canvas pixels or SVG shapes).
const CHART_STATE: &str = r#"
return [...document.querySelectorAll('.chart[data-kind]')].map(el => {
  let lit = 0;
  for (const c of el.querySelectorAll('canvas')) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) lit++;
  }
  const shapes = el.querySelectorAll('svg rect, svg line, svg polyline, svg path').length;
  return { kind: el.dataset.kind, drawn: el.dataset.drawn === '1', lit, shapes, text: el.innerText.slice(0, 200) };
});
"#;

/// Inline SVGs outside charts (sparklines, split bars) must hold shapes too.
const INLINE_SVGS: &str = r#"
return [...document.querySelectorAll('svg.split, .spark svg')].map(s =>
  s.querySelectorAll('rect, polyline').length > 0 &&
  [...s.querySelectorAll('polyline')].every(p => p.getAttribute('points').trim().includes(' ')));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_draws_its_charts_in_headless_chromium() {
    // A console filled with a call through a relay: a → b gets 2 ms slower
    // halfway through, b → a does not (the asymmetry RTT/2 smears).
    let dir = std::env::temp_dir().join(format!("demarc-console-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = store::open(&dir.join("console.db")).await.unwrap();
    let h = Harness::new(pool).await;
    let mut s = recent(240);
    s.pps = 25;
    s.ab_ms = 18.0;
    s.ba_ms = 18.0;
    s.step_at_s = Some(120);
    s.step_ms = 2.0;
    s.drop_every = 20;
    h.ingest_all(&s.batches(1000)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, app(h.state.clone())).into_future());

    let port = free_port();
    let _driver = Kill(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/setup.sh installs it)"),
    );
    let wd = WebDriver {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while wd
        .http
        .get(format!("{}/status", wd.base))
        .send()
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = dir.join("chromium-profile");
    let session = wd
        .post(
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--no-proxy-server",
                        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                        "--window-size=1400,2000", "--hide-scrollbars",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                },
                "goog:loggingPrefs": {"browser": "ALL"}
            }}}),
        )
        .await;
    let sid = session["sessionId"].as_str().unwrap().to_owned();
    let flow: i64 = sqlx::query_scalar(
        "SELECT id FROM flows WHERE tx_host = 'a' AND rx_host = 'b' AND class = 'rtp'",
    )
    .fetch_one(h.db())
    .await
    .unwrap();

    let pages = [
        ("overview", "/".to_owned()),
        ("flow", format!("/flows/{flow}")),
        ("direction", "/pairs/a/b".to_owned()),
        ("relay", "/relays/relay".to_owned()),
        ("probes", "/probes".to_owned()),
    ];
    let out = artifacts();
    let mut failures = Vec::new();
    for (name, path) in &pages {
        wd.post(
            &format!("/session/{sid}/url"),
            json!({"url": format!("{console}{path}")}),
        )
        .await;
        let start = Instant::now();
        let charts = loop {
            let charts = wd
                .post(
                    &format!("/session/{sid}/execute/sync"),
                    json!({"script": CHART_STATE, "args": []}),
                )
                .await;
            let all = charts.as_array().unwrap();
            if all.iter().all(|c| c["drawn"] == true) || start.elapsed() > Duration::from_secs(20) {
                break charts;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if *name == "flow" {
            click_stack_and_check_waterfall(&wd, &sid, &mut failures).await;
        }
        let png = wd.get(&format!("/session/{sid}/screenshot")).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(out.join(format!("{name}.png")), bytes).unwrap();

        let charts = charts.as_array().unwrap();
        if charts.is_empty() && *name != "probes" {
            failures.push(format!("{name}: no chart on the page"));
        }
        for c in charts {
            let drew = c["drawn"] == true
                && (c["lit"].as_u64() > Some(500) || c["shapes"].as_u64() > Some(0));
            if !drew {
                failures.push(format!("{name}: chart {} is empty: {c}", c["kind"]));
            }
        }
        let inline = wd
            .post(
                &format!("/session/{sid}/execute/sync"),
                json!({"script": INLINE_SVGS, "args": []}),
            )
            .await;
        if inline.as_array().unwrap().iter().any(|ok| ok != true) {
            failures.push(format!("{name}: an inline SVG is empty: {inline}"));
        }
        let logs = wd
            .post(
                &format!("/session/{sid}/se/log"),
                json!({"type": "browser"}),
            )
            .await;
        for entry in logs.as_array().unwrap() {
            // console.error, uncaught exceptions and failed loads are SEVERE.
            if entry["level"] == "SEVERE" {
                failures.push(format!(
                    "{name}: console {}: {}",
                    entry["level"], entry["message"]
                ));
            }
        }
    }
    wd.cmd(reqwest::Method::DELETE, &format!("/session/{sid}"), None)
        .await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{failures:#?}\nscreenshots in {}",
        out.display()
    );
}

/// Clicking a time in the stacked chart loads the packets around it.
async fn click_stack_and_check_waterfall(wd: &WebDriver, sid: &str, failures: &mut Vec<String>) {
    let first_label = r#"const t = document.querySelector('#waterfall svg text:nth-of-type(6)'); return t ? t.textContent : null;"#;
    let before = wd
        .post(
            &format!("/session/{sid}/execute/sync"),
            json!({"script": first_label, "args": []}),
        )
        .await;
    let over = wd
        .post(
            &format!("/session/{sid}/element"),
            json!({"using": "css selector", "value": "#stack .u-over"}),
        )
        .await;
    wd.post(
        &format!("/session/{sid}/actions"),
        json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "origin": over, "x": 200, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0}
        ]}]}),
    )
    .await;
    let start = Instant::now();
    loop {
        let after = wd
            .post(
                &format!("/session/{sid}/execute/sync"),
                json!({"script": first_label, "args": []}),
            )
            .await;
        if after != before && !after.is_null() {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            failures.push(format!(
                "flow: clicking the chart did not move the waterfall ({before} → {after})"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
