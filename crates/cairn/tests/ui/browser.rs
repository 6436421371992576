//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! installed by `scripts/setup.sh`), for the studio's browser tests: starts `chromedriver` on a
//! free port, opens a session, saves a screenshot of every page visited to
//! `target/ui-screenshots/NN-name.png`, and collects the browser console so that a test fails on
//! any SEVERE entry it did not expect.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a test waits for something the page does by itself (a redirect, a chart, a reply).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One browser session, its chromedriver, and what it has seen.
pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    session: String,
    /// The server the studio runs on (`http://127.0.0.1:PORT`).
    pub base: String,
    /// A name for this test's screenshots.
    test: String,
    http: reqwest::Client,
}

/// Screenshots of all tests of this binary share one sequence, so their order is the order taken.
static SHOT: AtomicUsize = AtomicUsize::new(1);

/// `target/ui-screenshots/`, next to the binaries cargo built (so it follows `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let bin = Path::new(crate::common::BIN);
    // target/<profile>/cairn → target/
    let target = bin.parent().and_then(Path::parent).expect("the cairn binary lives in target/<profile>/");
    target.join("ui-screenshots")
}

/// Whether a console entry is an error (the studio declares its icon, so even Chromium's own
/// icon request must succeed).
fn is_error(e: &ConsoleEntry) -> bool {
    e.level == "SEVERE"
}

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    pub level: String,
    pub message: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280×800. Panics with a pointer to
    /// `scripts/setup.sh` when either is missing: a browser test never skips silently.
    pub async fn start(base: &str, test: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the studio's browser tests need Debian's chromium and chromium-driver; \
                 run scripts/setup.sh (it installs them)"
            );
        }
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // "ChromeDriver was started successfully on port 40231."
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port);
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = driver.kill();
                panic!("chromedriver did not say which port it listens on within 30 s");
            }
        };
        let driver_url = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--window-size=1280,800",
                         "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let client = match builder.connect(&driver_url).await {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                panic!("could not open a Chromium session through chromedriver: {e}");
            }
        };
        let session = client.session_id().await.unwrap().expect("a WebDriver session id");
        std::fs::create_dir_all(screenshot_dir()).unwrap();
        Browser {
            client,
            driver,
            driver_url,
            session,
            base: base.trim_end_matches('/').to_string(),
            test: test.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// An absolute URL of the studio from a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Navigates to a studio path and saves a screenshot named `name`.
    pub async fn visit(&self, path: &str, name: &str) {
        self.client.goto(&self.url(path)).await.unwrap_or_else(|e| panic!("goto {path}: {e}"));
        self.shot(name).await;
    }

    /// Saves a screenshot as `target/ui-screenshots/NN-TEST-name.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let n = SHOT.fetch_add(1, Ordering::SeqCst);
        let file = screenshot_dir().join(format!("{n:02}-{}-{name}.png", self.test));
        std::fs::write(&file, png).unwrap();
    }

    /// The current URL's path and query (`/w/x/runs?order=…`).
    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Waits until the current path (with query) satisfies `ok`; returns it.
    pub async fn wait_path(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let p = self.path().await;
            if ok(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}; the browser is at {p}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await {
            Ok(el) => el,
            Err(e) => panic!("no element {css} on {} ({e})", self.path().await),
        }
    }

    /// All elements matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// Whether an element matching `css` exists now.
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// Waits until the element matching `css` has attribute `attr`; returns its value.
    pub async fn wait_attr(&self, css: &str, attr: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                if let Some(v) = el.attr(attr).await.unwrap() {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "{css} never got attribute {attr} on {}", self.path().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` is not empty; returns it.
    pub async fn wait_text(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                let t = el.text().await.unwrap();
                if !t.trim().is_empty() {
                    return t;
                }
            }
            assert!(Instant::now() < deadline, "{css} stayed empty on {}", self.path().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` contains `needle`.
    pub async fn wait_contains(&self, css: &str, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut text = String::new();
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                text = el.text().await.unwrap();
                if text.contains(needle) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?} on {}: {text:?}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs JavaScript in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed ({e}): {script}"))
    }

    /// Signs in through the form at `/login` (the browser must be on it).
    pub async fn sign_in(&self, token: &str) {
        let field = self.find("form#login-form input#token[name=token]").await;
        // The field has a label (accessibility) that points at it.
        assert!(self.exists("label[for=token]").await, "the token field has no <label for=token>");
        field.clear().await.unwrap();
        field.send_keys(token).await.unwrap();
        self.find("button#login-submit").await.click().await.unwrap();
    }

    /// Takes the console entries logged since the last call.
    pub async fn console(&self) -> Vec<ConsoleEntry> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        let resp: Value = self
            .http
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("read the browser log from chromedriver")
            .json()
            .await
            .unwrap();
        resp["value"]
            .as_array()
            .unwrap_or_else(|| panic!("chromedriver's log answer: {resp}"))
            .iter()
            .map(|e| ConsoleEntry {
                level: e["level"].as_str().unwrap_or("").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }

    /// Fails on any SEVERE console entry since the last check (script errors, failed requests,
    /// `console.error`), naming `step`.
    pub async fn no_console_errors(&self, step: &str) {
        let severe: Vec<_> = self.console().await.into_iter().filter(is_error).collect();
        assert!(severe.is_empty(), "console errors at {step} ({}): {severe:#?}", self.path().await);
    }

    /// Like `no_console_errors`, but the page was expected to answer with HTTP `status` (a 404
    /// page, a refused sign-in): Chromium logs that as "Failed to load resource … status of
    /// STATUS", which is the only SEVERE entry allowed.
    pub async fn only_expected_status(&self, step: &str, status: u16) {
        let expected = format!("the server responded with a status of {status}");
        let severe: Vec<_> = self
            .console()
            .await
            .into_iter()
            .filter(|e| is_error(e) && !e.message.contains(&expected))
            .collect();
        assert!(severe.is_empty(), "console errors at {step} ({}): {severe:#?}", self.path().await);
    }

    /// The `cairn_session` cookie's value, to check statuses with reqwest as this browser.
    pub async fn session_cookie(&self) -> String {
        let c = self.client.get_named_cookie("cairn_session").await.expect("a cairn_session cookie");
        format!("cairn_session={}", c.value())
    }

    /// GET a studio path with this browser's session cookie (no redirects followed): status, body.
    pub async fn get_as_me(&self, path: &str) -> (u16, String) {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = http.get(self.url(path)).header("cookie", self.session_cookie().await).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Sets the window's outer size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Presses Tab once (a real key event, so the browser moves the focus).
    pub async fn tab(&self) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        use fantoccini::key::Key;
        let keys = KeyActions::new("keyboard".to_string())
            .then(KeyAction::Down { value: Key::Tab.into() })
            .then(KeyAction::Up { value: Key::Tab.into() });
        self.client.perform_actions(keys).await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit its Chromium; killing chromedriver alone would
        // leave the browser running. Drop cannot await, so this is a plain blocking request.
        let req = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.session,
            crate::common::authority(&self.driver_url)
        );
        let _ = crate::common::raw_http(&self.driver_url, req.as_bytes());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
