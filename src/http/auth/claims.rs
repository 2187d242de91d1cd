//! What a token allows: the `sluice` claim, and the grant a verified token
//! gives a request.

use serde::Deserialize;
use sluice_actors::Expiry;

/// The `sluice` claim: `{"publish": [...], "subscribe": [...], "admin": bool}`.
/// A pattern is a topic name, or a prefix ending in `*` (`*` alone matches
/// every topic). Absent lists allow nothing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Rights {
    /// Topics the token may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topics the token may read (stream, history, information).
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Operations beyond topics (`/v1/connections`, deleting a topic).
    #[serde(default)]
    pub admin: bool,
}

/// Whether any of `patterns` matches `topic`.
fn matches(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => p == topic,
    })
}

impl Rights {
    /// May publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        matches(&self.publish, topic)
    }

    /// May read `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        matches(&self.subscribe, topic)
    }
}

/// The claims Sluice reads from a verified token (`exp`, `nbf`, `iss` and
/// `aud` are checked by the verifier).
#[derive(Deserialize)]
pub(super) struct Claims {
    /// Seconds since the epoch; required (an `Option` so that a token
    /// without it is refused for that, not as malformed).
    pub exp: Option<f64>,
    /// No claim: no right.
    #[serde(default)]
    pub sluice: Rights,
}

/// What a request's verified token grants; in the request's extensions for
/// the handlers that need more than the route's check (the topic list, a
/// stream's end).
#[derive(Clone, Debug)]
pub struct Grant {
    /// The token's rights.
    pub rights: Rights,
    /// When the token stops being accepted.
    pub expiry: Expiry,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(subscribe: &[&str]) -> Rights {
        Rights {
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            ..Rights::default()
        }
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        let r = rights(&["orders.*", "billing"]);
        assert!(r.may_subscribe("orders.eu"));
        assert!(r.may_subscribe("orders."));
        assert!(!r.may_subscribe("orders"));
        assert!(r.may_subscribe("billing"));
        assert!(!r.may_subscribe("billing.eu"));
        assert!(!r.may_publish("billing"));
        assert!(rights(&["*"]).may_subscribe("anything"));
        assert!(!rights(&[]).may_subscribe("anything"));
        // A star inside a pattern is no wildcard.
        assert!(!rights(&["or*ers"]).may_subscribe("orders"));
    }

    #[test]
    fn a_missing_claim_allows_nothing() {
        let c: Claims = serde_json::from_str(r#"{"exp": 1}"#).unwrap();
        assert_eq!(c.sluice, Rights::default());
        let c: Claims =
            serde_json::from_str(r#"{"exp": 1, "sluice": {"publish": ["a"], "admin": true}}"#)
                .unwrap();
        assert!(c.sluice.admin && c.sluice.may_publish("a") && !c.sluice.may_subscribe("a"));
    }
}
