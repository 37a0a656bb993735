//! Email: one message per delivery over SMTP, for people rather than programs (alert sinks
//! above all: `--alert-sinks 'smtp://…#critical'`).
//!
//! `smtp://[USER:PASS@]HOST[:PORT]?from=ADDRESS&to=ADDRESS[,ADDRESS…][&tls=starttls|tls|none][&ca_file=PATH]`.
//! `tls=starttls` (the default, port 587) upgrades the connection before anything else is
//! said and refuses a server that cannot; `tls=tls` speaks TLS from the start (port 465);
//! `tls=none` (port 25) sends in the clear and never sends credentials. Servers are checked
//! against the web's root certificates, or against the PEM certificate(s) in `ca_file`.
//! The subject is the event's `data.text` when it has one (an alert's line), else its type
//! and id; the body is that text and the delivered JSON. The `Message-ID` derives from the
//! `webhook-id`, so a retried delivery is recognisably the same mail. A refused login is
//! retried; any other permanent (5xx) answer fails the delivery at once.

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
};

use super::{
    options::{broker_url, credentials, host, Options, Password},
    router::{acked, permanent, retryable, BrokerSettings},
    Ack, Message, SendError,
};

/// Most recipients of one endpoint.
const MAX_RECIPIENTS: usize = 20;
/// Longest subject, in characters.
const MAX_SUBJECT: usize = 200;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    StartTls,
    Tls,
    None,
}

/// A parsed `smtp://` URL.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Password>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// The TLS setup, made once when the URL is parsed (with `ca_file`'s certificates).
    tls: Tls,
}

fn mailbox(option: &str, value: &str) -> Result<Mailbox, String> {
    value.trim().parse::<Mailbox>().map_err(|e| {
        format!("option {option:?} of smtp:// urls is not an email address ({value:?}): {e}")
    })
}

impl SmtpConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = broker_url(raw)?;
        let host = host(&url, "smtp:// url", "smtp://HOST:PORT?from=…&to=…")?
            .trim_matches(['[', ']'])
            .to_owned();
        if !matches!(url.path(), "" | "/") {
            return Err("smtp:// urls take no path; put the addresses in from= and to=".into());
        }
        let options = Options::parse("smtp", url.query(), &["from", "to", "tls", "ca_file"])?;
        let security = match options.string("tls").unwrap_or("starttls") {
            "starttls" => Security::StartTls,
            "tls" => Security::Tls,
            "none" => Security::None,
            other => {
                return Err(format!(
                    "option \"tls\" of smtp:// urls must be starttls, tls or none, got {other:?}"
                ))
            }
        };
        let from = mailbox(
            "from",
            options
                .string("from")
                .ok_or("smtp:// url needs from=ADDRESS (the sender)")?,
        )?;
        let to = options
            .string("to")
            .ok_or("smtp:// url needs to=ADDRESS[,ADDRESS…] (the recipients)")?
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| mailbox("to", a))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() || to.len() > MAX_RECIPIENTS {
            return Err(format!(
                "option \"to\" of smtp:// urls takes 1 to {MAX_RECIPIENTS} addresses, got {}",
                to.len()
            ));
        }
        let (user, password) = credentials(&url);
        if security == Security::None && user.is_some() {
            return Err(
                "smtp:// url with tls=none may not carry credentials: they would cross the network in the clear"
                    .into(),
            );
        }
        let ca = match options.string("ca_file") {
            None => None,
            Some(path) => {
                if !path.starts_with('/') {
                    return Err(format!(
                        "option \"ca_file\" of smtp:// urls must be an absolute path, got {path:?}"
                    ));
                }
                let pem = std::fs::read(path)
                    .map_err(|e| format!("option \"ca_file\": cannot read {path:?}: {e}"))?;
                Some(Certificate::from_pem(&pem).map_err(|e| {
                    format!("option \"ca_file\": {path:?} is not a PEM certificate: {e}")
                })?)
            }
        };
        let tls = tls_for(&host, security, ca)?;
        let port = url.port().unwrap_or(match security {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        });
        Ok(Self {
            host,
            port,
            user,
            password,
            from,
            to,
            tls,
        })
    }

    fn transport(&self, settings: &BrokerSettings) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .timeout(Some(settings.timeout))
            .tls(self.tls.clone());
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        builder.build()
    }
}

/// The TLS setup of a connection to `host`: required after STARTTLS, from the start, or none;
/// checked against `ca` when given, else against the web's roots.
fn tls_for(host: &str, security: Security, ca: Option<Certificate>) -> Result<Tls, String> {
    if security == Security::None {
        return Ok(Tls::None);
    }
    let mut params = TlsParameters::builder(host.to_owned());
    if let Some(cert) = ca {
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS for {host}: {e}"))?;
    Ok(match security {
        Security::StartTls => Tls::Required(params),
        _ => Tls::Wrapper(params),
    })
}

/// The subject and text of the mail for a delivered JSON body.
fn compose(message: &Message) -> (String, String) {
    let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap_or_default();
    let pretty = serde_json::to_string_pretty(&body)
        .unwrap_or_else(|_| String::from_utf8_lossy(&message.body).into_owned());
    let text = body
        .pointer("/data/text")
        .or_else(|| body.get("text"))
        .and_then(|t| t.as_str());
    let subject = match text {
        Some(t) => t.to_owned(),
        None => format!(
            "{} {}",
            body.get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("hookrelay event"),
            message.id
        ),
    };
    // One line, and not endless.
    let subject: String = subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SUBJECT)
        .collect();
    let text = match text {
        Some(t) => format!("{t}\n\n{pretty}\n"),
        None => format!("{pretty}\n"),
    };
    (subject, text)
}

fn login_refused(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535"))
}

/// The SMTP destination: a connection per delivery (mail is rare next to webhooks).
pub struct Smtp {
    settings: BrokerSettings,
}

impl Smtp {
    pub fn new(settings: BrokerSettings) -> Self {
        Self { settings }
    }

    pub async fn send(&self, config: &SmtpConfig, message: &Message) -> Result<Ack, SendError> {
        let (subject, text) = compose(message);
        let mut mail = lettre::Message::builder()
            .from(config.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{}@hookrelay>", message.id)))
            .header(ContentType::TEXT_PLAIN);
        for to in &config.to {
            mail = mail.to(to.clone());
        }
        let mail = mail
            .body(text)
            .map_err(|e| permanent(format!("cannot build the mail: {e}")))?;
        let transport = config.transport(&self.settings);
        match transport.send(mail).await {
            Ok(response) => Ok(acked(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            ))),
            // A refused login (530, 534, 535) is retried like any broker's: the operator
            // may fix the password meanwhile. Other 5xx answers are final.
            Err(e) if e.is_permanent() && !login_refused(&e) => {
                Err(permanent(format!("smtp server refused: {e}")))
            }
            Err(e) => Err(retryable(format!("smtp: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms_and_refuses_the_rest() {
        let c = SmtpConfig::parse(
            "smtp://alerts:s3cret@mail.example.com?from=hookrelay%40example.com&to=ops%40example.com,oncall%40example.com",
        )
        .unwrap();
        assert_eq!((c.port, c.to.len()), (587, 2));
        assert!(matches!(c.tls, Tls::Required(_)));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = SmtpConfig::parse("smtp://m:2525?from=a@b.c&to=d@e.f&tls=tls").unwrap();
        assert_eq!(c.port, 2525);
        assert!(matches!(c.tls, Tls::Wrapper(_)));
        crate::destinations::options::refuses(
            SmtpConfig::parse,
            &[
                ("smtp://m?to=d@e.f", "from="),
                ("smtp://m?from=a@b.c", "to="),
                ("smtp://m?from=nobody&to=d@e.f", "\"from\""),
                ("smtp://m?from=a@b.c&to=d@e.f&tls=maybe", "\"tls\""),
                ("smtp://u:p@m?from=a@b.c&to=d@e.f&tls=none", "in the clear"),
                ("smtp://m/x?from=a@b.c&to=d@e.f", "no path"),
                ("smtp://m?from=a@b.c&to=d@e.f&ca_file=rel.pem", "absolute"),
                (
                    "smtp://m?from=a@b.c&to=d@e.f&ca_file=/nonexistent.pem",
                    "cannot read",
                ),
                ("smtp://m?from=a@b.c&to=d@e.f&bcc=x", "unknown option"),
            ],
        );
    }

    #[test]
    fn an_alerts_text_is_its_subject() {
        let m = |body: serde_json::Value| Message {
            id: "evt_1".into(),
            body: serde_json::to_vec(&body).unwrap(),
            headers: Default::default(),
            ordering_key: None,
        };
        let (subject, text) = compose(&m(
            serde_json::json!({"type": "hookrelay.alert.fired", "data": {"text": "[hookrelay] CRITICAL pending\nx"}}),
        ));
        assert_eq!(subject, "[hookrelay] CRITICAL pending x");
        assert!(text.starts_with("[hookrelay] CRITICAL pending\nx\n\n{"));
        let (subject, _) = compose(&m(serde_json::json!({"type": "order.paid", "data": {}})));
        assert_eq!(subject, "order.paid evt_1");
    }
}
