//! API-key authentication of the `stance.v1.Stance` RPCs and the HTTP `/v1/` routes
//! (`--api-key`): a bearer token in the `authorization` metadata or header, compared in
//! constant time. Health, reflection and the page's static files stay open, so that probes
//! and tools need no key.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// An interceptor that lets a request through when it carries `authorization: Bearer KEY`,
/// or every request when there is no key.
#[derive(Clone)]
pub struct ApiKey(Option<Arc<[u8]>>);

impl ApiKey {
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|k| k.as_bytes().into()))
    }

    pub(crate) fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(key) = &self.0 else { return true };
        let Some(token) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
        // The length may leak (ct_eq of different lengths is false at once), the key does not.
        bool::from(token.ct_eq(key))
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.accepts(req.metadata().get("authorization").map(|v| v.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong API key: send the metadata `authorization: Bearer KEY` (the CLI: --api-key or STANCE_API_KEY)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(ApiKey::new(None).accepts(None));
        let k = ApiKey::new(Some("s3cret"));
        assert!(k.accepts(Some(b"Bearer s3cret")));
        assert!(!k.accepts(Some(b"Bearer s3cre")));
        assert!(!k.accepts(Some(b"Bearer s3cret2")));
        assert!(!k.accepts(Some(b"bearer s3cret")));
        assert!(!k.accepts(Some(b"s3cret")));
        assert!(!k.accepts(None));
    }
}
