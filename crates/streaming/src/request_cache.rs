//! Single-use, expiring tokens for the URLs the CRI calls return (kubelet's
//! `request_cache.go`): a token is consumed by its first use and dies after the TTL;
//! at most [`MAX_IN_FLIGHT_REQUESTS`](crate::config::MAX_IN_FLIGHT_REQUESTS) wait at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::StreamingError;
use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};

/// 24 random bytes: 192 bits, 32 URL-safe characters.
const TOKEN_BYTES: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

pub(crate) struct RequestCache {
    ttl: Duration,
    max_in_flight: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, CacheEntry>,
    /// Tokens in insertion order (so expiry order, the TTL being fixed).
    by_age: VecDeque<(String, Instant)>,
}

struct CacheEntry {
    request: CachedRequest,
    expires_at: Instant,
}

impl RequestCache {
    pub(crate) fn new(ttl: Duration, max_in_flight: usize) -> Self {
        Self {
            ttl,
            max_in_flight,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Stores the request and returns its fresh token.
    pub(crate) fn insert(&self, request: CachedRequest) -> Result<String, StreamingError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.remove_expired(now);
        if state.entries.len() >= self.max_in_flight {
            return Err(StreamingError::TooManyInFlight);
        }
        let token = loop {
            let candidate = random_token()?;
            if !state.entries.contains_key(&candidate) {
                break candidate;
            }
        };
        let expires_at = now + self.ttl;
        state.by_age.push_back((token.clone(), expires_at));
        state.entries.insert(
            token.clone(),
            CacheEntry {
                request,
                expires_at,
            },
        );
        Ok(token)
    }

    /// Takes the request behind `token`: `None` if the token is unknown, used or expired.
    pub(crate) fn consume(&self, token: &str) -> Option<CachedRequest> {
        let entry = self.lock().entries.remove(token)?;
        (Instant::now() <= entry.expires_at).then_some(entry.request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters (worst case a stale token), so a poisoned lock is still used.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CacheState {
    fn remove_expired(&mut self, now: Instant) {
        while let Some((token, expires_at)) = self.by_age.front() {
            if *expires_at >= now {
                break;
            }
            self.entries.remove(token);
            self.by_age.pop_front();
        }
    }
}

fn random_token() -> Result<String, StreamingError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| StreamingError::Token(err.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_forward() -> CachedRequest {
        CachedRequest::PortForward(PortForwardRequest {
            pod_sandbox_id: "pod".into(),
            port: vec![80],
        })
    }

    #[test]
    fn token_is_single_use() {
        let cache = RequestCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(port_forward()).expect("insert");
        assert_eq!(token.len(), 32);
        assert_eq!(cache.consume(&token), Some(port_forward()));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn unknown_token_is_refused() {
        let cache = RequestCache::new(Duration::from_secs(60), 10);
        assert_eq!(cache.consume("nope"), None);
    }

    #[test]
    fn expired_token_is_refused() {
        let cache = RequestCache::new(Duration::from_millis(1), 10);
        let token = cache.insert(port_forward()).expect("insert");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn in_flight_requests_are_capped_until_they_expire() {
        let cache = RequestCache::new(Duration::from_millis(30), 2);
        cache.insert(port_forward()).expect("first");
        let second = cache.insert(port_forward()).expect("second");
        assert!(matches!(
            cache.insert(port_forward()),
            Err(StreamingError::TooManyInFlight)
        ));
        // A used token frees its slot.
        cache.consume(&second);
        cache.insert(port_forward()).expect("after consume");
        std::thread::sleep(Duration::from_millis(60));
        cache.insert(port_forward()).expect("after expiry");
    }

    #[test]
    fn tokens_differ() {
        let cache = RequestCache::new(Duration::from_secs(60), 10);
        let a = cache.insert(port_forward()).expect("a");
        let b = cache.insert(port_forward()).expect("b");
        assert_ne!(a, b);
    }
}
