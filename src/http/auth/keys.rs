//! Verifying tokens: the configured keys (HS256 secrets, PEM public keys, a
//! JWKS document) and the checks of `exp`, `nbf`, `iss` and `aud`.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{
    decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Header, Validation,
};
use sluice_actors::{cursor::now_ms, Expiry};

use super::{
    claims::{Claims, Grant},
    jwks::Jwks,
    key::Key,
};
use crate::config::AuthSettings;

/// Why a token is refused, in Sluice's words: never quoting the token.
pub type Invalid = &'static str;

const MALFORMED: Invalid = "the token is not a well-formed JWT";
const BAD_SIGNATURE: Invalid = "the token's signature does not verify with any configured key";
const UNKNOWN_KID: Invalid = "the token names a key (kid) this broker does not hold";
const EXPIRED: Invalid = "the token has expired";

/// What trying a set of keys came to.
enum Tried {
    Verified(Grant),
    Refused(Invalid),
    /// No key fits or verifies the signature.
    NoKey,
}

/// Verifies tokens against every configured key.
pub(super) struct Verifier {
    /// HS256 secrets and PEM public keys, fixed at start.
    fixed: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    /// Every check but the algorithm, which is the token's own.
    validation: Validation,
    leeway_ms: i64,
}

impl Verifier {
    /// Reads every key the settings name (a JWKS URL is fetched).
    pub async fn load(s: &AuthSettings) -> Result<Verifier, String> {
        let mut fixed = Vec::new();
        for secret in &s.hs256_secrets {
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|_| "auth.hs256_secrets: unusable secret".to_owned())?;
            fixed.push(Key {
                kid: None,
                alg: None,
                key,
            });
        }
        for path in &s.public_key_files {
            fixed.push(Key::from_pem(path)?);
        }
        let jwks = if s.jwks.is_empty() {
            None
        } else {
            let min = Duration::from_secs(s.jwks_refresh_min_secs);
            Some(Arc::new(Jwks::load(&s.jwks, min).await?))
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = s.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if !s.issuer.is_empty() {
            validation.set_issuer(&[&s.issuer]);
            required.push("iss");
        }
        if s.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&s.audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier {
            fixed,
            jwks,
            validation,
            leeway_ms: s.leeway_secs as i64 * 1000,
        })
    }

    /// The JWKS, to refresh in the background.
    pub fn jwks(&self) -> Option<Arc<Jwks>> {
        self.jwks.clone()
    }

    /// Verifies `token`: its signature by a configured key, then its
    /// claims. A `kid` no key holds makes the JWKS load again (bounded).
    pub async fn verify(&self, token: &str) -> Result<Grant, Invalid> {
        let header = decode_header(token).map_err(|_| MALFORMED)?;
        let jwks_keys = self.jwks.as_ref().map(|j| j.keys());
        match self.try_keys(token, &header, jwks_keys.as_deref()) {
            Tried::Verified(g) => return Ok(g),
            Tried::Refused(why) => return Err(why),
            Tried::NoKey => {}
        }
        let (Some(kid), Some(jwks)) = (&header.kid, &self.jwks) else {
            return Err(BAD_SIGNATURE);
        };
        if jwks.knows(kid) {
            return Err(BAD_SIGNATURE);
        }
        let Some(fresh) = jwks.refresh_for(kid).await else {
            return Err(UNKNOWN_KID);
        };
        match self.try_keys(token, &header, Some(&fresh)) {
            Tried::Verified(g) => Ok(g),
            Tried::Refused(why) => Err(why),
            Tried::NoKey if jwks.knows(kid) => Err(BAD_SIGNATURE),
            Tried::NoKey => Err(UNKNOWN_KID),
        }
    }

    fn try_keys(&self, token: &str, header: &Header, jwks: Option<&[Key]>) -> Tried {
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let keys = self.fixed.iter().chain(jwks.unwrap_or_default());
        for key in keys.filter(|k| k.fits(header)) {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return self.grant(data.claims),
                // Not this key's signature (or not a key for it): the next.
                Err(e) if is_key_mismatch(e.kind()) => continue,
                Err(e) => return Tried::Refused(refusal(e.kind())),
            }
        }
        Tried::NoKey
    }

    /// The grant of verified claims. The token is accepted up to `exp`
    /// plus the leeway, to the millisecond, and a stream opened with it
    /// ends at that same moment.
    fn grant(&self, claims: Claims) -> Tried {
        // Required by the validation; checked again rather than trusted.
        let Some(exp) = claims.exp else {
            return Tried::Refused("the token has no expiry (exp)");
        };
        let expired_at_ms = (exp * 1000.0) as i64;
        let ends_at_ms = expired_at_ms.saturating_add(self.leeway_ms);
        if now_ms() >= ends_at_ms {
            return Tried::Refused(EXPIRED);
        }
        Tried::Verified(Grant {
            rights: claims.sluice,
            expiry: Expiry {
                expired_at_ms,
                ends_at_ms,
            },
        })
    }
}

/// Errors that say the key did not verify the token, not that the token
/// is bad: another key may.
fn is_key_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
    )
}

/// Why a token whose signature verified is refused.
fn refusal(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::ExpiredSignature => EXPIRED,
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one configured",
        ErrorKind::InvalidAudience => "the token's audience (aud) is not the one configured",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "the token has no expiry (exp)",
            "iss" => "the token has no issuer (iss)",
            "aud" => "the token has no audience (aud)",
            _ => "the token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "the token's claims are malformed",
        _ => MALFORMED,
    }
}
