//! Mutual TLS: an endpoint presents its client certificate to a receiver that requires one
//! (a rustls server on loopback), trusts the receiver's own CA, and raises an alert before
//! the certificate expires.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{http::StatusCode, routing::post, Router};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;

use crate::helpers::{eventually, send, spawn_app_on, Backend};

/// A certificate authority for the tests.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A certificate for `names` (IP addresses or host names), valid until `days` from now.
    fn issue(&self, common_name: &str, names: &[&str], days: i64) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let until = chrono::Utc::now() + chrono::Duration::days(days);
        use chrono::Datelike;
        params.not_after =
            rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// An HTTPS receiver on loopback that requires a client certificate from `client_ca`.
struct TlsReceiver {
    url: String,
    received: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    refused: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, addr),
                // No certificate, or one the client CA did not issue.
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl TlsReceiver {
    async fn start(server: &Issued, client_ca: &Ca) -> Self {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(client_ca.pem().as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(server.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            refused: refused.clone(),
        };
        let seen = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |body: String| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("https://127.0.0.1:{port}/hook"),
            received,
            refused,
        }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

#[tokio::test]
async fn deliveries_present_the_client_certificate_and_others_are_refused() {
    let (server_ca, client_ca, other_ca) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("other CA"),
    );
    let server = server_ca.issue("receiver", &["127.0.0.1"], 30);
    let receiver = TlsReceiver::start(&server, &client_ca).await;
    let good = client_ca.issue("hookrelay client", &[], 365);
    let stranger = other_ca.issue("stranger", &[], 365);
    let app = spawn_app_on(Backend::Sqlite, |c| c.retry.max_attempts = 1).await;

    let tls = |issued: &Issued| json!({"certificate": issued.cert, "key": issued.key, "ca": server_ca.pem()});
    let with_cert = app
        .endpoint(json!({"url": receiver.url, "event_types": ["good.cert"], "tls": tls(&good)}))
        .await;
    assert_eq!(
        with_cert["tls"]["subject"], "CN=hookrelay client",
        "{with_cert}"
    );
    assert_eq!(with_cert["tls"]["key_set"], true);
    assert!(with_cert["tls"]["expires_at"].is_string());
    assert!(
        !with_cert.to_string().contains("PRIVATE KEY"),
        "{with_cert}"
    );
    app.endpoint(
        json!({"url": receiver.url, "event_types": ["other.cert"], "tls": tls(&stranger)}),
    )
    .await;
    // The receiver's CA but no certificate: the receiver refuses the handshake.
    app.endpoint(json!({"url": receiver.url, "event_types": ["no.cert"],
                        "tls": {"ca": server_ca.pem()}}))
        .await;
    // The right certificate, but not the receiver's CA: hookrelay does not trust its server.
    app.endpoint(json!({"url": receiver.url, "event_types": ["no.ca"],
                        "tls": {"certificate": good.cert, "key": good.key}}))
        .await;

    let delivered = app.event("good.cert", json!({})).await;
    let id = delivered["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_delivery(&id, "delivered").await;
    assert_eq!(receiver.count(), 1);

    for (kind, says) in [
        ("other.cert", "the receiver refused the TLS handshake"),
        ("no.cert", "the receiver refused the TLS handshake"),
        ("no.ca", "UnknownIssuer"),
    ] {
        let ev = app.event(kind, json!({})).await;
        let id = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
        let failed = app.wait_delivery(&id, "failed").await;
        let error = failed["attempts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{kind}: {failed}");
    }
    // The receiver really asks for a certificate: a client trusting it, without one, fails.
    let bare = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(bare.post(&receiver.url).body("{}").send().await.is_err());
    assert_eq!(receiver.count(), 1, "nothing else got through");
    assert!(
        receiver.refused.load(Ordering::SeqCst) >= 1,
        "the stranger's handshake was refused"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_near_its_expiry_raises_an_alert() {
    let client_ca = Ca::new("client CA");
    let soon = client_ca.issue("expiring client", &[], 3);
    let later = client_ca.issue("fresh client", &[], 365);
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.alerts.interval = Duration::from_millis(200)
    })
    .await;
    let expiring = app
        .endpoint(json!({"url": "https://127.0.0.1:9/hook",
                         "tls": {"certificate": soon.cert, "key": soon.key}}))
        .await;
    app.endpoint(json!({"url": "https://127.0.0.1:9/other",
                        "tls": {"certificate": later.cert, "key": later.key}}))
        .await;
    let id = expiring["id"].as_str().unwrap().to_owned();
    let alerts = eventually(Duration::from_secs(20), || async {
        let (_, health) = app.get("/v1/health").await;
        let alerts = health["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .iter()
            .any(|a| a["rule"] == "certificate_expiring")
            .then_some(alerts)
    })
    .await
    .expect("the certificate_expiring alert fires");
    let expiring_alerts: Vec<_> = alerts
        .iter()
        .filter(|a| a["rule"] == "certificate_expiring")
        .collect();
    assert_eq!(expiring_alerts.len(), 1, "{alerts:?}");
    assert_eq!(expiring_alerts[0]["subject"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn bad_certificates_and_keys_are_refused_naming_the_field() {
    let ca = Ca::new("client CA");
    let (a, b) = (ca.issue("a", &[], 30), ca.issue("b", &[], 30));
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    for (tls, url, says) in [
        (
            json!({"certificate": "not pem", "key": a.key}),
            "https://127.0.0.1:9/",
            "tls.certificate",
        ),
        (
            json!({"certificate": a.cert, "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
            "https://127.0.0.1:9/",
            "tls.key",
        ),
        (
            json!({"certificate": a.cert, "key": b.key}),
            "https://127.0.0.1:9/",
            "tls.key does not belong",
        ),
        (
            json!({"certificate": a.cert}),
            "https://127.0.0.1:9/",
            "tls.key is required",
        ),
        (
            json!({"key": a.key}),
            "https://127.0.0.1:9/",
            "tls.certificate is required",
        ),
        (
            json!({}),
            "https://127.0.0.1:9/",
            "tls.certificate or ca is needed",
        ),
        (
            json!({"certificate": a.cert, "key": a.key, "ca": "junk"}),
            "https://127.0.0.1:9/",
            "tls.ca",
        ),
        (
            json!({"certificate": a.cert, "key": a.key}),
            "http://127.0.0.1:9/",
            "https://",
        ),
    ] {
        let body = json!({"url": url, "tls": tls});
        let (status, answer) = app.post("/v1/tenants/default/endpoints", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{says}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{says}: {answer}");
    }
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");

    // A change without a key keeps the stored one, which must belong to the new certificate.
    let ep = app
        .endpoint(
            json!({"url": "https://127.0.0.1:9/", "tls": {"certificate": a.cert, "key": a.key}}),
        )
        .await;
    let path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let patch = |body: serde_json::Value| app.req(reqwest::Method::PATCH, &path).json(&body);
    let (status, answer) = send(patch(json!({"tls": {"certificate": b.cert}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (_, still) = app.get(&path).await;
    assert_eq!(still["tls"]["subject"], "CN=a");
    let (status, cleared) = send(patch(json!({"tls": null}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cleared.get("tls").is_none(), "{cleared}");
    app.stop().await;
}

#[tokio::test]
async fn https_deliveries_tunnel_through_the_egress_proxy_with_their_certificate() {
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let server = server_ca.issue("receiver", &["127.0.0.1"], 30);
    let receiver = TlsReceiver::start(&server, &client_ca).await;
    let good = client_ca.issue("hookrelay client", &[], 365);
    let proxy = crate::egress::Tinyproxy::start().await;
    let proxy_url = proxy.url.clone();
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.egress_proxy = Some(proxy_url.as_str().into());
    })
    .await;
    app.endpoint(json!({"url": receiver.url,
                        "tls": {"certificate": good.cert, "key": good.key, "ca": server_ca.pem()}}))
        .await;
    let ev = app.event("a.b", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    app.wait_delivery(&id, "delivered").await;
    assert_eq!(receiver.count(), 1);
    let port = receiver
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/hook")
        .to_owned();
    let asked = proxy.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT 127.0.0.1:{port}"))),
        "the TLS session went through a CONNECT tunnel: {asked:?}"
    );
    app.stop().await;
}
