//! Shared pieces of broker URL parsing: query options, credentials, message keys and
//! redaction. Each adapter's `parse` uses them; so do endpoint validation and sending.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// The query options of a destination URL, each allowed at most once and checked against
/// the scheme's known names.
#[derive(Debug, Default)]
pub struct Options {
    scheme: &'static str,
    values: BTreeMap<String, String>,
}

impl Options {
    /// Reads `query` (without the `?`), refusing names not in `known` and repeated names.
    pub fn parse(
        scheme: &'static str,
        query: Option<&str>,
        known: &[&str],
    ) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !known.contains(&name.as_ref()) {
                return Err(if known.is_empty() {
                    format!("{scheme}:// urls take no options, got {name:?}")
                } else {
                    format!(
                        "unknown option {name:?} for {scheme}:// urls; known options: {}",
                        known.join(", ")
                    )
                });
            }
            if values
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                return Err(format!("option {name:?} is given more than once"));
            }
        }
        Ok(Self { scheme, values })
    }

    /// A string option; empty counts as absent.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An integer option within `range`.
    pub fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, String> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "option {name:?} of {}:// urls must be a whole number from {} to {}, got {v:?}",
                    self.scheme,
                    range.start(),
                    range.end()
                )),
            },
        }
    }

    /// A message key option (`event_id`, `actor`, `data.FIELD[.FIELD…]`).
    pub fn key(&self, name: &str) -> Result<Option<KeySpec>, String> {
        self.string(name)
            .map(|v| KeySpec::parse(v).map_err(|e| format!("option {name:?}: {e}")))
            .transpose()
    }
}

/// Where a message key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// The event id (`webhook-id`).
    EventId,
    /// The event's actor; no key when the event has none.
    Actor,
    /// A field of the event data, by path; no key when it is missing.
    Data(Vec<String>),
}

impl KeySpec {
    pub fn parse(v: &str) -> Result<Self, String> {
        match v {
            "event_id" | "id" => Ok(Self::EventId),
            "actor" => Ok(Self::Actor),
            _ => match v.strip_prefix("data.") {
                Some(path) if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => {
                    Ok(Self::Data(path.split('.').map(str::to_owned).collect()))
                }
                _ => Err(format!(
                    "{v:?} is not a key: use event_id, actor or data.FIELD (a field of the event data)"
                )),
            },
        }
    }

    /// The key of `message`: read from its body for the actor and data fields.
    pub fn extract(&self, message: &super::Message) -> Option<String> {
        match self {
            Self::EventId => Some(message.id.clone()),
            Self::Actor | Self::Data(_) => {
                let body: serde_json::Value = serde_json::from_slice(&message.body).ok()?;
                let mut v = match self {
                    Self::Actor => body.get("actor")?,
                    _ => body.get("data")?,
                };
                if let Self::Data(path) = self {
                    for p in path {
                        v = v.get(p)?;
                    }
                }
                match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                }
            }
        }
    }
}

/// The percent-decoded user name and password of a URL, if any.
pub fn credentials(url: &url::Url) -> (Option<String>, Option<Password>) {
    let user = (!url.username().is_empty()).then(|| decode(url.username()));
    let pass = url.password().map(|p| Password(decode(p)));
    (user, pass)
}

/// A broker's password: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A broker's connection URL, which may hold a password: `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(pub String);

impl std::ops::Deref for ConnectionUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for ConnectionUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::secrets::redact_url(&self.0))
    }
}

/// Parses a broker URL (`kind://…`).
pub fn broker_url(raw: &str) -> Result<url::Url, String> {
    url::Url::parse(raw).map_err(|e| format!("url is not a valid URL: {e}"))
}

/// The URL's host, or an error that shows the URL's `form` (`what` names it, e.g.
/// `nats:// source url`).
pub fn host<'a>(url: &'a url::Url, what: &str, form: &str) -> Result<&'a str, String> {
    url.host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{what} has no host; the form is {form}"))
}

/// Percent-decodes a URL component.
pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Removes the URL's secrets from an error text, for attempt records and logs: its password
/// (raw and decoded), and for HTTP(S) URLs the path and query, which capability URLs
/// (`https://hooks.example.com/services/T0/B0/XXXX`, `…?token=…`) use as the credential.
/// Short paths and queries (under 8 and 4 bytes) are left alone: they carry no secret and
/// would match ordinary words of the message.
pub fn scrub(text: String, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return text;
    };
    let mut text = text;
    if let Some(raw) = parsed.password().filter(|p| p.len() >= 2) {
        let decoded = decode(raw);
        text = text.replace(raw, "***");
        if decoded.len() >= 2 {
            text = text.replace(&decoded, "***");
        }
    }
    if matches!(parsed.scheme(), "http" | "https") {
        let path = parsed.path();
        let query = parsed.query().unwrap_or_default();
        let mut secrets = vec![];
        if path.len() >= 8 {
            secrets.push((path.to_owned(), "/***"));
            let decoded = decode(path);
            if decoded != path {
                secrets.push((decoded, "/***"));
            }
        }
        if query.len() >= 4 {
            secrets.push((query.to_owned(), "***"));
        }
        for (secret, mask) in secrets {
            text = text.replace(&secret, mask);
        }
    }
    text
}

/// Asserts that `parse` refuses each `(input, why)` with an error that contains `why`.
#[cfg(test)]
pub(crate) fn refuses<T>(parse: impl Fn(&str) -> Result<T, String>, cases: &[(&str, &str)]) {
    for (bad, why) in cases {
        match parse(bad) {
            Ok(_) => panic!("{bad} was accepted"),
            Err(e) => assert!(e.contains(why), "{bad}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::redact_url as redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://user:s3cret@host:5672/vh?exchange=x"),
            "amqp://user:***@host:5672/vh?exchange=x"
        );
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379/0?stream=s"),
            "redis://:***@127.0.0.1:6379/0?stream=s"
        );
        assert_eq!(redact("nats://user@h/s"), "nats://user@h/s");
        assert_eq!(redact("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(redact("kafka://h:1,h:2/t"), "kafka://h:1,h:2/t");
        assert_eq!(
            scrub("auth failed for s3cret".into(), "amqp://u:s3cret@h/"),
            "auth failed for ***"
        );
    }

    #[test]
    fn capability_urls_are_scrubbed_from_errors() {
        let url = "https://hooks.example.com/services/T0/B0/XXXXsecret?token=abcd1234";
        let err = format!("error sending request for url ({url}): connection refused");
        let out = scrub(err, url);
        assert!(
            !out.contains("XXXXsecret") && !out.contains("abcd1234"),
            "{out}"
        );
        assert!(out.contains("hooks.example.com") && out.contains("connection refused"));
        // Percent-encoded paths too, and short ordinary paths are left as they are.
        let enc = "http://h.example/in/s%20cret-token";
        assert_eq!(
            scrub("failed at /in/s cret-token".into(), enc),
            "failed at /***"
        );
        assert_eq!(
            scrub("HTTP 500 /hook".into(), "http://h/hook"),
            "HTTP 500 /hook"
        );
    }

    #[test]
    fn options_are_strict() {
        let o = Options::parse("redis", Some("stream=s&maxlen=10"), &["stream", "maxlen"]).unwrap();
        assert_eq!(o.string("stream"), Some("s"));
        assert_eq!(o.number("maxlen", 1..=100).unwrap(), Some(10));
        assert!(o.number("maxlen", 20..=100).is_err());
        let e = Options::parse("redis", Some("steam=s"), &["stream"]).unwrap_err();
        assert!(e.contains("unknown option \"steam\""), "{e}");
        assert!(Options::parse("redis", Some("stream=a&stream=b"), &["stream"]).is_err());
    }

    #[test]
    fn keys_come_from_the_message() {
        let m = super::super::Message {
            id: "evt_1".into(),
            body: br#"{"id":"evt_1","actor":"u_7","data":{"user":{"id":42},"c":"x"}}"#.to_vec(),
            headers: Default::default(),
            ordering_key: None,
        };
        assert_eq!(
            KeySpec::parse("event_id").unwrap().extract(&m).as_deref(),
            Some("evt_1")
        );
        assert_eq!(
            KeySpec::parse("actor").unwrap().extract(&m).as_deref(),
            Some("u_7")
        );
        assert_eq!(
            KeySpec::parse("data.user.id")
                .unwrap()
                .extract(&m)
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            KeySpec::parse("data.c").unwrap().extract(&m).as_deref(),
            Some("x")
        );
        assert_eq!(KeySpec::parse("data.nope").unwrap().extract(&m), None);
        assert!(KeySpec::parse("data.").is_err());
        assert!(KeySpec::parse("user").is_err());
    }
}
