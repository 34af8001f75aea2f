//! Bearer-token authentication for the DataAccess service: a tonic interceptor that admits a
//! call only with `authorization: Bearer <token>` naming one of the configured tokens.
//! Health and reflection are not wrapped, so probes need no token.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::config::Tokens;
use crate::error::Error;

/// Checks each call's bearer token. With no tokens configured it admits every call.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<[Vec<u8>]>,
}

impl BearerAuth {
    /// An interceptor accepting any of `tokens`.
    pub fn new(tokens: &Tokens) -> Self {
        let tokens = tokens.0.iter().map(|t| t.as_bytes().to_vec()).collect();
        BearerAuth { tokens }
    }

    /// Whether any token is required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared, each in constant
    /// time, so the time taken says nothing about which token (or how much of one) matched;
    /// only a token's length can show.
    fn accepts(&self, presented: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for token in self.tokens.iter() {
            found |= token.as_slice().ct_eq(presented);
        }
        found.into()
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.enabled() {
            return Ok(request);
        }
        let header = request.metadata().get("authorization");
        let Some(value) = header.and_then(|v| v.to_str().ok()) else {
            let e = Error::Unauthenticated("missing authorization: Bearer <token> metadata");
            return Err(e.into());
        };
        // The scheme is case-insensitive (RFC 7235); the token is not.
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match token {
            Some(token) if self.accepts(token.as_bytes()) => Ok(request),
            Some(_) => Err(Error::Unauthenticated("the bearer token is not accepted").into()),
            None => Err(Error::Unauthenticated("authorization must be: Bearer <token>").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let mut auth = BearerAuth::new(&Tokens(vec!["new-token".into(), "old-token".into()]));
        assert_eq!(call(&mut auth, Some("Bearer new-token")), Ok(()));
        assert_eq!(call(&mut auth, Some("bearer old-token")), Ok(()));
        let unauthenticated = Err(tonic::Code::Unauthenticated);
        for bad in [
            "Bearer new-toke",
            "Bearer new-token2",
            "Bearer ",
            "new-token",
            "Basic x",
        ] {
            assert_eq!(call(&mut auth, Some(bad)), unauthenticated, "{bad}");
        }
        assert_eq!(call(&mut auth, None), unauthenticated);
    }

    #[test]
    fn no_tokens_means_no_check() {
        let mut auth = BearerAuth::new(&Tokens::default());
        assert!(!auth.enabled());
        assert_eq!(call(&mut auth, None), Ok(()));
    }
}
