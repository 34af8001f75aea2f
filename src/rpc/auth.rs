//! Bearer-token authentication for the DataAccess service: a tonic interceptor that admits a
//! call only with `authorization: Bearer <token>` naming one of the configured tokens, and
//! hands the handlers what that token may do (its [`Scopes`], in the request's extensions).
//! Health and reflection are not wrapped, so probes need no token.

use std::sync::Arc;

use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::{Request, Status};

use crate::config::{Scopes, Tokens};
use crate::error::Error;
use crate::proto::Priority;

/// Checks each call's bearer token. With no tokens configured it admits every call.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<[(Vec<u8>, u8)]>,
}

const WRITE: u8 = 1;
const CRITICAL: u8 = 2;

fn bits(scopes: Scopes) -> u8 {
    (u8::from(scopes.write) * WRITE) | (u8::from(scopes.critical) * CRITICAL)
}

/// What the call may do: its token's scopes, or everything when no token is asked for (or
/// the handler is called without the interceptor, as in-process callers do).
pub fn scopes<T>(request: &Request<T>) -> Scopes {
    request
        .extensions()
        .get::<Scopes>()
        .copied()
        .unwrap_or(Scopes::ALL)
}

/// What one call may do: the settings, narrowed by the call's token. Handlers read
/// read-only-ness here rather than from the settings, so a token can narrow it per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The call runs read-only: `PGSIDECAR_READ_ONLY`, or a token without `write`.
    pub(crate) read_only: bool,
    /// The call may ask for `PRIORITY_CRITICAL`.
    critical: bool,
}

impl Grant {
    /// The grant of a call under `read_only_mode` (`PGSIDECAR_READ_ONLY`).
    pub(crate) fn of<T>(request: &Request<T>, read_only_mode: bool) -> Grant {
        let scopes = scopes(request);
        Grant {
            read_only: read_only_mode || !scopes.write,
            critical: scopes.critical,
        }
    }

    /// The priority the call asked for, if it may have it. PRIORITY_CRITICAL without the
    /// `critical` scope is refused, not downgraded: a caller that asked for the reserve must
    /// hear that it may not have it.
    pub(crate) fn priority(&self, asked: i32) -> Result<Priority, Error> {
        match Priority::try_from(asked).unwrap_or(Priority::Unspecified) {
            Priority::Critical if !self.critical => Err(Error::PriorityNotAllowed),
            priority => Ok(priority),
        }
    }
}

impl BearerAuth {
    /// An interceptor accepting any of `tokens`.
    pub fn new(tokens: &Tokens) -> Self {
        let tokens = tokens
            .0
            .iter()
            .map(|t| (t.secret.as_bytes().to_vec(), bits(t.scopes)))
            .collect();
        BearerAuth { tokens }
    }

    /// Whether any token is required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The scopes of `presented`, if it is one of the tokens. Every token is compared, each
    /// in constant time, and the scopes picked without a branch, so the time taken says
    /// nothing about which token (or how much of one) matched; only a token's length can
    /// show.
    fn accepts(&self, presented: &[u8]) -> Option<Scopes> {
        let mut found = subtle::Choice::from(0);
        let mut granted = 0u8;
        for (token, scopes) in self.tokens.iter() {
            let same = token.as_slice().ct_eq(presented);
            granted = u8::conditional_select(&granted, scopes, same);
            found |= same;
        }
        bool::from(found).then_some(Scopes {
            write: granted & WRITE != 0,
            critical: granted & CRITICAL != 0,
        })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
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
        let Some(token) = token else {
            return Err(Error::Unauthenticated("authorization must be: Bearer <token>").into());
        };
        match self.accepts(token.as_bytes()) {
            Some(scopes) => {
                request.extensions_mut().insert(scopes);
                Ok(request)
            }
            None => Err(Error::Unauthenticated("the bearer token is not accepted").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Token;
    use tonic::service::Interceptor;

    fn call(auth: &mut BearerAuth, header: Option<&str>) -> Result<Scopes, tonic::Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(|r| scopes(&r)).map_err(|s| s.code())
    }

    fn tokens(list: &[(&str, bool, bool)]) -> Tokens {
        let token = |&(secret, write, critical): &(&str, bool, bool)| Token {
            secret: secret.to_owned(),
            scopes: Scopes { write, critical },
        };
        Tokens(list.iter().map(token).collect())
    }

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let mut auth = BearerAuth::new(&Tokens(vec![
            Token::full("new-token"),
            Token::full("old-token"),
        ]));
        assert_eq!(call(&mut auth, Some("Bearer new-token")), Ok(Scopes::ALL));
        assert_eq!(call(&mut auth, Some("bearer old-token")), Ok(Scopes::ALL));
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
        assert_eq!(call(&mut auth, None), Ok(Scopes::ALL));
    }

    #[test]
    fn a_grant_narrows_the_settings_by_the_token() {
        let with = |scopes: Option<Scopes>| {
            let mut request = Request::new(());
            if let Some(s) = scopes {
                request.extensions_mut().insert(s);
            }
            request
        };
        let (critical, normal) = (Priority::Critical as i32, Priority::Normal as i32);
        // No token asked for: everything, as before.
        let all = Grant::of(&with(None), false);
        assert!(!all.read_only);
        assert_eq!(all.priority(critical).ok(), Some(Priority::Critical));
        assert!(
            Grant::of(&with(None), true).read_only,
            "the setting still rules"
        );
        let reader = Grant::of(
            &with(Some(Scopes {
                write: false,
                critical: false,
            })),
            false,
        );
        assert!(reader.read_only);
        assert!(matches!(
            reader.priority(critical),
            Err(Error::PriorityNotAllowed)
        ));
        assert_eq!(reader.priority(normal).ok(), Some(Priority::Normal));
        assert_eq!(reader.priority(0).ok(), Some(Priority::Unspecified));
        assert_eq!(reader.priority(99).ok(), Some(Priority::Unspecified));
        let pager = Grant::of(
            &with(Some(Scopes {
                write: false,
                critical: true,
            })),
            false,
        );
        assert_eq!(pager.priority(critical).ok(), Some(Priority::Critical));
    }

    #[test]
    fn each_token_brings_its_own_scopes() {
        let mut auth = BearerAuth::new(&tokens(&[
            ("reader", false, false),
            ("pager", false, true),
            ("writer", true, false),
            ("admin", true, true),
        ]));
        let got = |auth: &mut BearerAuth, t: &str| call(auth, Some(&format!("Bearer {t}")));
        let s = |write, critical| Ok(Scopes { write, critical });
        assert_eq!(got(&mut auth, "reader"), s(false, false));
        assert_eq!(got(&mut auth, "pager"), s(false, true));
        assert_eq!(got(&mut auth, "writer"), s(true, false));
        assert_eq!(got(&mut auth, "admin"), s(true, true));
        assert_eq!(got(&mut auth, "read"), Err(tonic::Code::Unauthenticated));
    }
}
