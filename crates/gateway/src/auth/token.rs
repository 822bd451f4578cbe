//! JSON Web Tokens: checking one, and reading what it allows from its `switchboard` claim.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::pattern::TopicPattern;
use crate::error::{AppError, ErrorCode};

/// What the gateway needs to check tokens, made once from the settings.
pub struct TokenVerifier {
    /// The shared secret of HS256 tokens (`jwt_secret`).
    secret: Option<DecodingKey>,
    /// The public key of RS256 or ES256 tokens (`jwt_public_key`), with the one algorithm it
    /// verifies: a token cannot choose another, so an RSA key is never used as an HMAC secret.
    public: Option<(DecodingKey, Algorithm)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of every log and panic message.
        f.debug_struct("TokenVerifier")
            .field("hs256", &self.secret.is_some())
            .field("public", &self.public.as_ref().map(|(_, alg)| alg))
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// The claims the gateway reads; any others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    switchboard: Permissions,
}

/// What a token allows: the `switchboard` claim.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub subscribe: Vec<TopicPattern>,
    #[serde(default)]
    pub publish: Vec<TopicPattern>,
}

/// A checked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who the token names (`sub`), for logs and the admin API.
    pub subject: Option<String>,
    /// When it expires, in seconds since the Unix epoch (`exp`), if it does.
    pub expires: Option<u64>,
    pub permissions: Permissions,
}

impl TokenVerifier {
    /// A verifier for an HS256 `secret` and/or a PEM public key (RSA for RS256, EC P-256 for
    /// ES256); `None` when neither is given.
    pub fn new(
        secret: Option<&str>,
        public_pem: Option<&[u8]>,
        audience: Option<String>,
        issuer: Option<String>,
        leeway: Duration,
    ) -> Result<Option<TokenVerifier>, String> {
        let secret = match secret {
            Some("") => return Err("jwt_secret is empty".into()),
            Some(secret) => Some(
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| format!("jwt_secret: {e}"))?,
            ),
            None => None,
        };
        let public = match public_pem {
            Some(pem) => Some(public_key(pem)?),
            None => None,
        };
        if secret.is_none() && public.is_none() {
            return Ok(None);
        }
        Ok(Some(TokenVerifier {
            secret,
            public,
            audience,
            issuer,
            leeway,
        }))
    }

    /// How much a token's `exp` and `nbf` are stretched for clocks that disagree.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks `token` and returns what it allows: `token_expired` for an expired token,
    /// `unauthorized` for any other fault (bad signature, wrong audience or issuer, `alg`
    /// `none` or another algorithm than the key's, not yet valid, malformed).
    pub fn verify(&self, token: &str) -> Result<Verified, AppError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AppError::new(
                ErrorCode::Unauthorized,
                "the token is malformed, or its algorithm is not accepted (`none` never is)",
            )
        })?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            alg => self
                .public
                .as_ref()
                .filter(|(_, expected)| *expected == alg)
                .map(|(key, _)| key),
        }
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::Unauthorized,
                format!("tokens signed with {:?} are not accepted here", header.alg),
            )
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        // `exp` is checked when present, not required; `aud` and `iss` are required and
        // checked only when the gateway is told which to expect.
        let mut required = Vec::new();
        validation.validate_aud = self.audience.is_some();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| refused(e.kind()))?
            .claims;
        Ok(Verified {
            subject: claims.sub,
            expires: claims.exp,
            permissions: claims.switchboard,
        })
    }
}

/// The public key in `pem` and the algorithm it verifies.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err("jwt_public_key is neither an RSA nor an EC public key in PEM".into())
}

/// The error a client gets for a token refused for `kind`.
fn refused(kind: &ErrorKind) -> AppError {
    let (code, why) = match kind {
        ErrorKind::ExpiredSignature => (ErrorCode::TokenExpired, "the token has expired"),
        ErrorKind::ImmatureSignature => (ErrorCode::Unauthorized, "the token is not valid yet"),
        ErrorKind::InvalidSignature => (ErrorCode::Unauthorized, "the token's signature is wrong"),
        ErrorKind::InvalidAudience => {
            (ErrorCode::Unauthorized, "the token is for another audience")
        }
        ErrorKind::InvalidIssuer => (ErrorCode::Unauthorized, "the token is from another issuer"),
        ErrorKind::MissingRequiredClaim(_) => (
            ErrorCode::Unauthorized,
            "the token lacks its audience or issuer",
        ),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => (
            ErrorCode::Unauthorized,
            "the token's algorithm is not accepted",
        ),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => (
            ErrorCode::Unauthorized,
            "the token's claims are malformed (see the `switchboard` claim in docs/PROTOCOL.md)",
        ),
        _ => (ErrorCode::Unauthorized, "the token is malformed"),
    };
    AppError::new(code, why)
}
