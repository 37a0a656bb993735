//! The command line, run as a user would.

use std::process::Command;

use serde_json::json;

use crate::helpers::*;

fn hookrelay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookrelay"))
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["migrate"],
        &["send"],
        &["tenant"],
        &["tenant", "create"],
        &["endpoint"],
        &["endpoint", "create"],
        &["endpoint", "update"],
        &["event-type"],
        &["event-type", "load"],
        &["events", "list"],
        &["deliveries"],
        &["deliveries", "retry"],
        &["verify"],
        &["health"],
        &["inbox", "tail"],
        &["portal-link", "create"],
    ];
    for args in commands {
        let out = hookrelay().args(*args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = hookrelay().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--database-url",
        "--admin-token",
        "--allow-network",
        "--role",
        "HOOKRELAY_DATABASE_URL",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn verify_accepts_a_valid_signature_and_refuses_tampering() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let now = chrono::Utc::now().timestamp();
    let sig = hookrelay::signing::sign(&[secret], "msg_1", now, body);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let run = |ts: i64, sig: &str| {
        hookrelay()
            .args(["verify", "--secret", secret, "--id", "msg_1"])
            .args(["--timestamp", &ts.to_string(), "--signature", sig])
            .arg("--body-file")
            .arg(&file)
            .output()
            .unwrap()
    };
    let ok = run(now, &sig);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "valid");
    let bad = run(now, "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("verification failed"));
    let old = run(
        now - 3600,
        &hookrelay::signing::sign(&[secret], "msg_1", now - 3600, body),
    );
    assert!(!old.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_loads_and_send_works_against_a_running_server() {
    let app = spawn_app().await;
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/community.json");
    let base = app.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                hookrelay()
                    .args(&args)
                    .env("HOOKRELAY_SERVER", &base)
                    .env("HOOKRELAY_TOKEN", ADMIN)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(vec!["event-type".into(), "load".into(), catalog.into()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("9 event types created"));
    let out = run(vec!["event-type".into(), "load".into(), catalog.into()]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 event types created, 9 already present")
    );
    let (_, types) = app.get("/v1/event-types").await;
    assert_eq!(types["data"].as_array().unwrap().len(), 9);

    let r = Receiver::ok().await;
    let out = run(vec![
        "endpoint".into(),
        "create".into(),
        r.url.clone(),
        "--event-type".into(),
        "user.*".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = json!({"user_id": "u1", "community_id": "c1"}).to_string();
    let out = run(vec!["send".into(), "user.joined_community".into(), data]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = r.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["data"]["community_id"], "c1");
    // The catalog's schema applies: a payload without community_id is refused.
    let out = run(vec![
        "send".into(),
        "user.joined_community".into(),
        "{}".into(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
    app.stop().await;
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = hookrelay()
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("m.db").exists());
    let bad = hookrelay()
        .args(["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
