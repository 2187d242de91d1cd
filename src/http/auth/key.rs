//! One verification key (an HS256 secret, a PEM public key, a JWK): what
//! the verifier and the JWKS document both hold.

use std::str::FromStr;

use jsonwebtoken::{
    jwk::{Jwk, PublicKeyUse},
    Algorithm, DecodingKey, Header,
};

/// One verification key.
pub(super) struct Key {
    /// `kid`: a token that names one is verified only by keys with it (or
    /// with none).
    pub kid: Option<String>,
    /// The one algorithm the key is for, when it says (a JWK's `alg`).
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl Key {
    /// A key from a JWKS document; `Err` for one that cannot sign tokens
    /// (encryption keys, unknown types).
    pub fn from_jwk(jwk: &Jwk) -> Result<Key, &'static str> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err("an encryption key (use = enc)");
        }
        let alg = match &jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(
                Algorithm::from_str(&a.to_string())
                    .map_err(|_| "its alg is not a signature algorithm")?,
            ),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "unsupported or malformed key")?;
        Ok(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        })
    }

    /// A public key from a PEM file: RSA, EC or Ed25519, whichever it is.
    pub fn from_pem(path: &std::path::Path) -> Result<Key, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("auth.public_key_files: cannot read {}: {e}", path.display()))?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
            .map_err(|_| {
                format!(
                    "auth.public_key_files: {} holds no RSA, EC or Ed25519 public key in PEM",
                    path.display()
                )
            })?;
        Ok(Key {
            kid: None,
            alg: None,
            key,
        })
    }

    /// Whether this key may verify a token with `header`.
    pub fn fits(&self, header: &Header) -> bool {
        self.key.family() == header.alg.family()
            && self.alg.is_none_or(|a| a == header.alg)
            && match (&self.kid, &header.kid) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }
}
