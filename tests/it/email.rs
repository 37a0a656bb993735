//! Email: the `smtp://` destination and email alert sinks, against a real SMTP server
//! (aiosmtpd from PyPI, started by `scripts/smtp-server.py`) that requires STARTTLS and
//! AUTH, with a certificate from a CA of its own that hookrelay is told to trust.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::{
    destinations::{binary, free_port, venv, Server},
    helpers::*,
    ops::{announcements, fail_three_events, hold_four_deliveries, wait_announced},
};

const WAIT: Duration = Duration::from_secs(30);

/// The SMTP server, and the directory where it keeps what it accepted (and its `ca.pem`).
async fn smtp_server() -> (Server, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let python = binary("HOOKRELAY_TEST_PYTHON", venv().join("bin/python"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp-server.py");
    let port = free_port();
    let out = path.clone();
    let server = Server::start("aiosmtpd", port, Some(dir), move || {
        let mut c = Command::new(&python);
        c.arg(&script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&out);
        c
    })
    .await;
    (server, path)
}

/// An accepted mail: the server's note of the session and of the decoded message.
struct Mail {
    meta: Value,
}

impl Mail {
    fn subject(&self) -> &str {
        self.meta["subject"].as_str().unwrap_or_default()
    }

    fn body(&self) -> &str {
        self.meta["body"].as_str().unwrap_or_default()
    }
}

fn mails(dir: &Path) -> Vec<Mail> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|meta| {
            let meta = serde_json::from_str(&std::fs::read_to_string(&meta).ok()?).ok()?;
            Some(Mail { meta })
        })
        .collect()
}

async fn wait_mail(dir: &Path, what: &str, found: impl Fn(&Mail) -> bool) -> Mail {
    eventually(WAIT, || async { mails(dir).into_iter().find(|m| found(m)) })
        .await
        .unwrap_or_else(|| panic!("no mail {what}"))
}

fn smtp_url(server: &Server, dir: &Path, password: &str) -> String {
    format!(
        "smtp://alerts:{password}@127.0.0.1:{}?from=hookrelay%40example.com\
         &to=ops%40example.com,oncall%40example.com&ca_file={}",
        server.port,
        dir.join("ca.pem").display()
    )
}

#[tokio::test]
async fn an_smtp_endpoint_mails_each_event_over_starttls_with_auth() {
    let (server, dir) = smtp_server().await;
    let app = spawn_app().await;
    app.endpoint(json!({"url": smtp_url(&server, &dir, "s3cret"), "event_types": ["order.*"]}))
        .await;
    let ev = app.event("order.paid", json!({"order": 7})).await;
    let event_id = ev["id"].as_str().unwrap().to_owned();
    let d = app
        .wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    assert!(
        d["attempts"][0]["response"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{d}"
    );
    let mail = wait_mail(&dir, "for the event", |m| m.body().contains(&event_id)).await;
    assert_eq!(mail.meta["tls"], true, "sent after STARTTLS");
    assert_eq!(mail.meta["user"], "alerts", "authenticated");
    assert_eq!(mail.meta["from"], "hookrelay@example.com");
    assert_eq!(
        mail.meta["to"],
        json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(mail.meta["subject"], format!("order.paid {event_id}"));
    assert_eq!(mail.meta["message_id"], format!("<{event_id}@hookrelay>"));
    let sent: Value = serde_json::from_str(mail.body().trim()).unwrap();
    assert_eq!(sent["data"], json!({"order": 7}));

    // A wrong password is refused by the server: the delivery fails for good, nothing is mailed.
    app.endpoint(
        json!({"url": smtp_url(&server, &dir, "wrong"), "event_types": ["bad.*"], "max_attempts": 1}),
    )
    .await;
    let ev = app.event("bad.x", json!({"n": 1})).await;
    let d = app
        .wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "failed")
        .await;
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("535"), "{d}");
    assert!(
        !error.contains("wrong"),
        "the password stays out of the log: {d}"
    );
    assert_eq!(mails(&dir).len(), 1);

    // Bad URLs are refused with a 400 naming the url, and create nothing.
    let (_, before) = app.get("/v1/tenants/default/endpoints").await;
    for (bad, says) in [
        ("smtp://127.0.0.1?to=ops%40example.com", "from="),
        ("smtp://127.0.0.1?from=nobody&to=ops%40example.com", "from"),
        (
            "smtp://127.0.0.1?from=a%40b.c&to=ops%40example.com&tls=maybe",
            "tls",
        ),
        (
            "smtp://u:p@127.0.0.1?from=a%40b.c&to=d%40e.f&tls=none",
            "clear",
        ),
        ("smtp://", "host"),
    ] {
        let (s, body) = app
            .post("/v1/tenants/default/endpoints", json!({"url": bad}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let message = body.to_string();
        assert!(
            message.contains("url") && message.contains(says),
            "{bad}: {body}"
        );
    }
    let (_, after) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(before["data"], after["data"]);
    app.stop().await;
}

/// Alerts carry their rule's severity; a sink whose URL ends in `#critical` (here the email
/// one) gets the critical alerts only, while a plain sink gets every alert.
#[tokio::test]
async fn a_critical_only_email_sink_gets_critical_alerts_only() {
    let (server, dir) = smtp_server().await;
    let sink = Receiver::ok().await;
    let email: url::Url = format!("{}#critical", smtp_url(&server, &dir, "s3cret"))
        .parse()
        .unwrap();
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.alerts.sinks = vec![sink.url.parse().unwrap(), email];
        c.alerts.interval = Duration::from_millis(100);
        c.alerts.thresholds.pending = 3;
        c.alerts.thresholds.min_attempts = 1000;
        c.alerts.thresholds.stall = Duration::from_secs(60);
        c.breaker.threshold = 3;
        c.breaker.cooldown = Duration::from_secs(60);
    })
    .await;

    // breaker_open (a warning): every sink but the critical-only one.
    let (flaky_id, _flaky, _) = fail_three_events(&app).await;
    wait_announced(&sink, "hookrelay.alert.fired", "breaker_open", &flaky_id).await;
    let warning = sink
        .requests()
        .into_iter()
        .find(|r| r.json()["data"]["rule"] == "breaker_open")
        .unwrap();
    assert_eq!(warning.json()["data"]["severity"], "warning");

    // pending (critical): four deliveries due in an hour reach both sinks.
    let _parked = hold_four_deliveries(&app).await;
    wait_announced(&sink, "hookrelay.alert.fired", "pending", "global").await;
    let mail = wait_mail(&dir, "for the pending alert", |m| {
        m.subject().starts_with("[hookrelay] ALERT pending:")
    })
    .await;
    assert_eq!(mail.meta["tls"], true);
    assert!(
        mail.body().contains("\"severity\": \"critical\""),
        "{}",
        mail.body()
    );
    // The breaker alert was announced before, and never became a mail.
    let subjects: Vec<String> = mails(&dir).iter().map(|m| m.subject().to_owned()).collect();
    assert!(
        subjects
            .iter()
            .all(|s| s.starts_with("[hookrelay] ALERT pending:")),
        "{subjects:?} / every alert: {:?}",
        announcements(&sink)
    );
    app.stop().await;
}
