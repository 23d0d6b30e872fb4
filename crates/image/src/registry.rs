//! A small client for the distribution API
//! (<https://github.com/opencontainers/distribution-spec/blob/main/spec.md>): GET
//! manifests and blobs, the bearer token dance of the `WWW-Authenticate` challenge
//! (<https://distribution.github.io/distribution/spec/auth/token/>), basic auth,
//! redirects to blob storage, and endpoints (mirrors, then the upstream).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{Credentials, ImageConfig};
use crate::digest::Digest;
use crate::manifest::MANIFEST_ACCEPT;
use crate::reference::{DEFAULT_REGISTRY, ImageRef, is_localhost};

/// containerd's limit on a manifest's size.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
const MAX_TOKEN_BYTES: usize = 1 << 20;
const MAX_REDIRECTS: usize = 5;
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {source}")]
    Http {
        method: Method,
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: reading body: {source}")]
    Body { url: String, source: hyper::Error },
    #[error("{url}: no response within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: unauthorized{hint}")]
    Unauthorized { url: String, hint: String },
    #[error("{url}: status {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: bad url: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: token server answer: {reason}")]
    Token { url: String, reason: String },
    #[error("{url}: too many redirects")]
    Redirects { url: String },
    #[error("tls setup: {0}")]
    Tls(std::io::Error),
    #[error("ca file {path}: {reason}")]
    CaFile {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl RegistryError {
    /// Worth trying the next endpoint (a mirror that lacks the image or is down).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Where to send requests for one image: a mirror or the upstream registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: &'static str,
    pub authority: String,
    /// `/v2` unless a mirror says otherwise.
    pub prefix: String,
    /// `?ns=<upstream>` on mirror requests, as containerd sends.
    pub namespace: Option<String>,
    pub is_mirror: bool,
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        let mut url = format!("{}://{}{}/{path}", self.scheme, self.authority, self.prefix);
        if let Some(ns) = &self.namespace {
            url.push_str("?ns=");
            url.push_str(&encode(ns));
        }
        url
    }

    pub fn describe(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// The endpoints to try for `image`, in order: its registry's mirrors, then the
/// registry itself unless the config forbids falling back.
pub fn endpoints(
    config: &ImageConfig,
    image: &ImageRef,
    auth: Option<&Credentials>,
) -> Vec<Endpoint> {
    let registry_config = config.registries.get(&image.registry);
    let mut endpoints = Vec::new();
    for mirror in registry_config.map(|c| c.mirrors.as_slice()).unwrap_or(&[]) {
        endpoints.push(mirror_endpoint(config, &image.registry, mirror));
    }
    if !registry_config.is_some_and(|c| c.no_upstream_fallback) {
        let authority = if image.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_HOST.to_owned()
        } else {
            image.registry.clone()
        };
        let credentials = auth
            .filter(|c| !c.is_empty())
            .cloned()
            .or_else(|| registry_config.and_then(|c| c.credentials()));
        endpoints.push(Endpoint {
            scheme: scheme_for(config, &image.registry),
            authority,
            prefix: "/v2".to_owned(),
            namespace: None,
            is_mirror: false,
            credentials,
        });
    }
    endpoints
}

fn mirror_endpoint(config: &ImageConfig, upstream: &str, mirror: &str) -> Endpoint {
    let (scheme, rest) = match mirror.split_once("://") {
        Some(("http", rest)) => (Some("http"), rest),
        Some((_, rest)) => (Some("https"), rest),
        None => (None, mirror),
    };
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) if !prefix.trim_matches('/').is_empty() => {
            (authority, format!("/{}", prefix.trim_matches('/')))
        }
        Some((authority, _)) => (authority, "/v2".to_owned()),
        None => (rest, "/v2".to_owned()),
    };
    Endpoint {
        scheme: scheme.unwrap_or_else(|| scheme_for(config, authority)),
        authority: authority.to_owned(),
        prefix,
        namespace: Some(upstream.to_owned()),
        is_mirror: true,
        credentials: config
            .registries
            .get(authority)
            .and_then(|c| c.credentials()),
    }
}

/// Plain HTTP for loopback registries (as containerd allows) and for hosts the
/// config names insecure; HTTPS otherwise.
fn scheme_for(config: &ImageConfig, host: &str) -> &'static str {
    if is_localhost(host) || config.registries.get(host).is_some_and(|c| c.insecure) {
        "http"
    } else {
        "https"
    }
}

/// A token is reused only for the same host, repository and credentials: a pull
/// with no or other credentials (another pod's pull secret) must not ride on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    authority: String,
    repository: String,
    credentials: Option<Digest>,
}

fn fingerprint(credentials: Option<&Credentials>) -> Option<Digest> {
    let credentials = credentials?;
    let mut text = String::new();
    if let Some((user, pass)) = credentials.user_pass() {
        text.push_str(&format!("basic\0{user}\0{pass}\0"));
    }
    if let Some(token) = &credentials.identity_token {
        text.push_str(&format!("identity\0{token}\0"));
    }
    if let Some(token) = &credentials.registry_token {
        text.push_str(&format!("registry\0{token}\0"));
    }
    (!text.is_empty()).then(|| Digest::of(text.as_bytes()))
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct RegistryClient {
    http: HttpClient,
    /// Clients for hosts with their own CA file.
    per_host: HashMap<String, HttpClient>,
    /// Authorization values by host, repository and the credentials that got them.
    tokens: Mutex<HashMap<TokenKey, String>>,
    /// How many blob GETs were sent (tests check that concurrent pulls share work).
    blob_fetches: AtomicU64,
    /// Blob body bytes received, for the daemon's pull metrics.
    blob_bytes: AtomicU64,
    request_timeout: Duration,
}

/// A streamed blob response.
pub struct BlobResponse {
    pub url: String,
    pub body: Incoming,
}

impl RegistryClient {
    pub fn new(config: &ImageConfig) -> Result<Self, RegistryError> {
        let http = http_client(tls_config(None)?);
        let mut per_host = HashMap::new();
        for (host, registry) in &config.registries {
            if let Some(ca_file) = &registry.ca_file {
                per_host.insert(host.clone(), http_client(tls_config(Some(ca_file))?));
            }
        }
        Ok(Self {
            http,
            per_host,
            tokens: Mutex::new(HashMap::new()),
            blob_fetches: AtomicU64::new(0),
            blob_bytes: AtomicU64::new(0),
            request_timeout: config.progress_timeout,
        })
    }

    pub fn blob_fetches(&self) -> u64 {
        self.blob_fetches.load(Ordering::Relaxed)
    }

    pub fn blob_bytes(&self) -> u64 {
        self.blob_bytes.load(Ordering::Relaxed)
    }

    /// Counts blob body bytes as they arrive.
    pub(crate) fn count_blob_bytes(&self, n: usize) {
        self.blob_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// GET a manifest: its bytes and content type.
    pub async fn fetch_manifest(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        reference: &str,
    ) -> Result<(Bytes, Option<String>), RegistryError> {
        let url = endpoint.url(&format!("{repository}/manifests/{reference}"));
        let response = self
            .get(endpoint, repository, &url, Some(MANIFEST_ACCEPT))
            .await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let body = self
            .read_limited(&url, response.into_body(), MAX_MANIFEST_BYTES)
            .await?;
        Ok((body, content_type))
    }

    /// GET a blob, to be streamed by the caller.
    pub async fn fetch_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        digest: &Digest,
    ) -> Result<BlobResponse, RegistryError> {
        let url = endpoint.url(&format!("{repository}/blobs/{digest}"));
        self.blob_fetches.fetch_add(1, Ordering::Relaxed);
        let response = self.get(endpoint, repository, &url, None).await?;
        Ok(BlobResponse {
            url,
            body: response.into_body(),
        })
    }

    /// GET with auth (cached token, basic, or the challenge's token) and redirects.
    async fn get(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut url = url.to_owned();
        // Hosts whose challenge was answered once already in this request.
        let mut answered: Vec<String> = Vec::new();
        for _ in 0..MAX_REDIRECTS + 2 {
            let authority = authority_of(&url).unwrap_or_default();
            // Credentials go to the endpoint's host only; a host it redirects to
            // (registry.k8s.io -> *.pkg.dev, blob storage) gets an anonymous token
            // if it asks for one, and nothing otherwise.
            let credentials = if authority == endpoint.authority {
                endpoint.credentials.as_ref()
            } else {
                None
            };
            let key = TokenKey {
                authority: authority.clone(),
                repository: repository.to_owned(),
                credentials: fingerprint(credentials),
            };
            let authorization = self.cached_authorization(credentials, &key);
            let response = self
                .send(Method::GET, &url, accept, authorization.as_deref(), None)
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !answered.contains(&authority) {
                answered.push(authority);
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let value = self
                    .authorize(credentials, repository, &url, challenge.as_deref())
                    .await?;
                self.remember(key, value);
                continue;
            }
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| RegistryError::BadUrl {
                        url: url.clone(),
                        reason: "redirect without location".to_owned(),
                    })?;
                url = resolve_location(&url, location)?;
                continue;
            }
            return check_status(&url, response).await;
        }
        Err(RegistryError::Redirects { url })
    }

    fn cached_authorization(
        &self,
        credentials: Option<&Credentials>,
        key: &TokenKey,
    ) -> Option<String> {
        if let Some(token) = credentials.and_then(|c| c.registry_token.clone()) {
            return Some(format!("Bearer {token}"));
        }
        self.tokens
            .lock()
            .ok()
            .and_then(|tokens| tokens.get(key).cloned())
    }

    fn remember(&self, key: TokenKey, value: String) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(key, value);
        }
    }

    /// The Authorization value that answers `challenge`.
    async fn authorize(
        &self,
        credentials: Option<&Credentials>,
        repository: &str,
        url: &str,
        challenge: Option<&str>,
    ) -> Result<String, RegistryError> {
        let unauthorized = |hint: &str| RegistryError::Unauthorized {
            url: url.to_owned(),
            hint: hint.to_owned(),
        };
        let Some(challenge) = challenge.map(parse_challenge) else {
            return Err(unauthorized(" (no WWW-Authenticate challenge)"));
        };
        match challenge.scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let (user, pass) = credentials
                    .and_then(Credentials::user_pass)
                    .ok_or_else(|| unauthorized(" (basic auth required, no credentials)"))?;
                Ok(basic_header(&user, &pass))
            }
            "bearer" => {
                let token = self
                    .fetch_token(&challenge, repository, credentials, url)
                    .await?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(unauthorized(&format!(" (unsupported auth scheme {other})"))),
        }
    }

    async fn fetch_token(
        &self,
        challenge: &Challenge,
        repository: &str,
        credentials: Option<&Credentials>,
        url: &str,
    ) -> Result<String, RegistryError> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| RegistryError::Token {
                url: url.to_owned(),
                reason: "bearer challenge without realm".to_owned(),
            })?;
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{repository}:pull"));
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let response = if let Some(refresh) = credentials.and_then(|c| c.identity_token.as_ref()) {
            // OAuth2 refresh-token grant, as docker and containerd do for identity tokens.
            let form = format!(
                "grant_type=refresh_token&refresh_token={}&service={}&scope={}&client_id=coracle",
                encode(refresh),
                encode(&service),
                encode(&scope)
            );
            self.send(Method::POST, realm, None, None, Some(Bytes::from(form)))
                .await?
        } else {
            let token_url = format!(
                "{realm}{}service={}&scope={}",
                if realm.contains('?') { "&" } else { "?" },
                encode(&service),
                encode(&scope)
            );
            let basic = credentials
                .and_then(Credentials::user_pass)
                .map(|(u, p)| basic_header(&u, &p));
            self.send(Method::GET, &token_url, None, basic.as_deref(), None)
                .await?
        };
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                url: realm.clone(),
                hint: " (token server refused the credentials)".to_owned(),
            });
        }
        let response = check_status(realm, response).await?;
        let body = self
            .read_limited(realm, response.into_body(), MAX_TOKEN_BYTES)
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|err| RegistryError::Token {
                url: realm.clone(),
                reason: err.to_string(),
            })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Token {
                url: realm.clone(),
                reason: "no token in the answer".to_owned(),
            })
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
        form: Option<Bytes>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let uri: Uri = url
            .parse()
            .map_err(|err: http::uri::InvalidUri| RegistryError::BadUrl {
                url: url.to_owned(),
                reason: err.to_string(),
            })?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(http::header::USER_AGENT, "coracle");
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        if form.is_some() {
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(form.unwrap_or_default()))
            .map_err(|err| RegistryError::BadUrl {
                url: url.to_owned(),
                reason: err.to_string(),
            })?;
        let client = authority_of(url)
            .and_then(|authority| self.per_host.get(&authority))
            .unwrap_or(&self.http);
        match tokio::time::timeout(self.request_timeout, client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(RegistryError::Http {
                method,
                url: url.to_owned(),
                source,
            }),
            Err(_) => Err(RegistryError::Timeout {
                url: url.to_owned(),
                timeout: self.request_timeout,
            }),
        }
    }

    async fn read_limited(
        &self,
        url: &str,
        mut body: Incoming,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        let mut out = Vec::new();
        loop {
            let frame = tokio::time::timeout(self.request_timeout, body.frame())
                .await
                .map_err(|_| RegistryError::Timeout {
                    url: url.to_owned(),
                    timeout: self.request_timeout,
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|source| RegistryError::Body {
                url: url.to_owned(),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(RegistryError::TooLarge {
                        url: url.to_owned(),
                        limit,
                    });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(out))
    }
}

fn http_client(tls: rustls::ClientConfig) -> HttpClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// rustls with ring (no C toolchain beyond ring's own) and the node's CA store, as
/// containerd uses the system roots; plus `ca_file`'s certificates when given.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, RegistryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "loading system CA certificates");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no system CA certificates; HTTPS registries will fail");
    }
    if let Some(path) = ca_file {
        let ca_err = |reason: String| RegistryError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|err| ca_err(err.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ca_err(err.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("no certificate in the file".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|err| ca_err(err.to_string()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| RegistryError::Tls(std::io::Error::other(err)))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn check_status(
    url: &str,
    response: Response<Incoming>,
) -> Result<Response<Incoming>, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound {
            url: url.to_owned(),
        });
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(RegistryError::Unauthorized {
            url: url.to_owned(),
            hint: format!(" (status {status})"),
        });
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    Err(RegistryError::Status {
        url: url.to_owned(),
        status,
        body: text,
    })
}

fn basic_header(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {encoded}")
}

/// A parsed `WWW-Authenticate` value: `Bearer realm="...",service="...",scope="..."`.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Challenge {
        scheme: scheme.to_owned(),
        params,
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn authority_of(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
}

/// A redirect's `Location`, absolute or relative to `base`.
fn resolve_location(base: &str, location: &str) -> Result<String, RegistryError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let uri: Uri = base
        .parse()
        .map_err(|err: http::uri::InvalidUri| RegistryError::BadUrl {
            url: base.to_owned(),
            reason: err.to_string(),
        })?;
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if location.starts_with('/') {
        Ok(format!("{scheme}://{authority}{location}"))
    } else {
        Err(RegistryError::BadUrl {
            url: location.to_owned(),
            reason: "relative redirect".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryConfig;

    #[test]
    fn challenge_parses_quoted_params_with_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let basic = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(basic.scheme, "Basic");
    }

    #[test]
    fn endpoints_are_mirrors_then_upstream_with_the_right_scheme() {
        let mut config = ImageConfig::default();
        config.registries.insert(
            "docker.io".into(),
            RegistryConfig {
                mirrors: vec!["mirror.local:5000".into(), "http://10.0.0.1/v2/hub".into()],
                ..RegistryConfig::default()
            },
        );
        config.registries.insert(
            "mirror.local:5000".into(),
            RegistryConfig {
                insecure: true,
                ..RegistryConfig::default()
            },
        );
        let image = ImageRef::parse("busybox").expect("parse");
        let eps = endpoints(&config, &image, None);
        let urls: Vec<String> = eps
            .iter()
            .map(|e| e.url("library/busybox/manifests/latest"))
            .collect();
        assert_eq!(
            urls,
            vec![
                "http://mirror.local:5000/v2/library/busybox/manifests/latest?ns=docker.io",
                "http://10.0.0.1/v2/hub/library/busybox/manifests/latest?ns=docker.io",
                "https://registry-1.docker.io/v2/library/busybox/manifests/latest",
            ]
        );
        config
            .registries
            .get_mut("docker.io")
            .expect("entry")
            .no_upstream_fallback = true;
        assert_eq!(endpoints(&config, &image, None).len(), 2);
    }

    #[test]
    fn loopback_is_plain_http_and_others_https_unless_insecure() {
        let mut config = ImageConfig::default();
        let local = ImageRef::parse("127.0.0.1:5000/busybox").expect("parse");
        assert_eq!(endpoints(&config, &local, None)[0].scheme, "http");
        let remote = ImageRef::parse("registry.example.com/busybox").expect("parse");
        assert_eq!(endpoints(&config, &remote, None)[0].scheme, "https");
        config.registries.insert(
            "registry.example.com".into(),
            RegistryConfig {
                insecure: true,
                ..RegistryConfig::default()
            },
        );
        assert_eq!(endpoints(&config, &remote, None)[0].scheme, "http");
    }

    #[test]
    fn redirects_resolve_against_the_base() {
        assert_eq!(
            resolve_location("http://a:1/v2/x", "/blobs/y")
                .ok()
                .as_deref(),
            Some("http://a:1/blobs/y")
        );
        assert_eq!(
            resolve_location("http://a:1/v2/x", "https://s3/z")
                .ok()
                .as_deref(),
            Some("https://s3/z")
        );
    }
}
