//! Bearer-token (JWT) authentication of the publisher, as Walrus's publisher does it: reads
//! need none; a write must carry a token signed with the configured secret (HS256) that has
//! not expired. A `max_size` claim caps the body the token may upload.

use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::ApiError;

/// The claims the publisher reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub exp: Option<u64>,
    /// Largest body this token may upload, in bytes.
    #[serde(default)]
    pub max_size: Option<u64>,
}

/// How writes are authenticated.
#[derive(Clone)]
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(HS256)")
    }
}

impl Auth {
    /// HS256 with this shared secret; `exp` is required.
    pub fn hs256(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        Ok(Self {
            key: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// The claims of the request's bearer token, or 401 saying what is wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let unauth = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m);
        let h = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauth("this publisher needs an Authorization: Bearer token".into()))?;
        let token = h
            .to_str()
            .ok()
            .and_then(|s| {
                s.strip_prefix("Bearer ")
                    .or_else(|| s.strip_prefix("bearer "))
            })
            .ok_or_else(|| unauth("the Authorization header is not a Bearer token".into()))?;
        jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| unauth(format!("the bearer token was refused: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(secret: &[u8], exp: u64) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": exp, "max_size": 10}),
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn good_token_passes_and_bad_ones_do_not() {
        let auth = Auth::hs256(b"secret").unwrap();
        let later = jsonwebtoken::get_current_timestamp() + 600;
        let c = auth
            .check(&headers(&format!("Bearer {}", token(b"secret", later))))
            .unwrap();
        assert_eq!(c.max_size, Some(10));
        for bad in [
            format!("Bearer {}", token(b"other", later)),
            format!("Bearer {}", token(b"secret", 1000)),
            "Bearer not.a.jwt".into(),
            format!("Basic {}", token(b"secret", later)),
        ] {
            let e = auth.check(&headers(&bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert_eq!(
            auth.check(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
