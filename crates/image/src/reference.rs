//! Image references, normalized as docker and containerd do
//! (<https://github.com/distribution/reference/blob/main/normalize.go>):
//! `busybox` is `docker.io/library/busybox:latest`, a first component with a `.`
//! or `:` or equal to `localhost` is a registry host, a digest may follow a tag.

use std::fmt;
use std::net::IpAddr;

use crate::digest::{Digest, DigestError};

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("reference {0:?}: empty")]
    Empty(String),
    #[error("reference {reference:?}: invalid repository name {name:?}")]
    BadName { reference: String, name: String },
    #[error("reference {reference:?}: invalid tag {tag:?}")]
    BadTag { reference: String, tag: String },
    #[error("reference {reference:?}: invalid registry host {host:?}")]
    BadHost { reference: String, host: String },
    #[error("reference {reference:?}: {source}")]
    BadDigest {
        reference: String,
        source: DigestError,
    },
}

/// A normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalizes `text`. A reference without tag or digest gets `latest`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty(text.to_owned()));
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                let digest = Digest::parse(digest).map_err(|source| ReferenceError::BadDigest {
                    reference: text.to_owned(),
                    source,
                })?;
                (name, Some(digest))
            }
            None => (text, None),
        };
        let (name, tag) = split_tag(name_and_tag);
        let (registry, repository) = split_registry(name);
        validate_host(text, &registry)?;
        validate_repository(text, &repository)?;
        if let Some(tag) = tag {
            validate_tag(text, tag)?;
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, as repo tags and repo digests start.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `name:tag`, when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `name@digest`.
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest to ask the registry for: the digest wins when both are given,
    /// as containerd does (the tag is then only a name).
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A tag is after the last `:` that follows the last `/` (`host:5000/repo` has none).
fn split_tag(name: &str) -> (&str, Option<&str>) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (&name[..at], Some(&name[at + 1..]))
        }
        None => (name, None),
    }
}

fn split_registry(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (first.to_owned(), rest.to_owned()),
        _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
    };
    let registry = if registry == LEGACY_DEFAULT_REGISTRY {
        DEFAULT_REGISTRY.to_owned()
    } else {
        registry
    };
    let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (registry, path)
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn validate_host(reference: &str, host: &str) -> Result<(), ReferenceError> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::BadHost {
            reference: reference.to_owned(),
            host: host.to_owned(),
        })
    }
}

/// Path components: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(reference: &str, repository: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::BadName {
        reference: reference.to_owned(),
        name: repository.to_owned(),
    };
    if repository.is_empty() || repository.len() > MAX_NAME_LEN {
        return Err(bad());
    }
    for component in repository.split('/') {
        if !valid_path_component(component) {
            return Err(bad());
        }
    }
    Ok(())
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators: one `.`, one or two `_`, or any run of `-`.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(&b) {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|c| !alnum(c)).count();
        let sep = &component[i..i + run];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
        i += run;
    }
    true
}

fn validate_tag(reference: &str, tag: &str) -> Result<(), ReferenceError> {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && bytes.first().is_some_and(word)
        && bytes.iter().all(|b| word(b) || matches!(b, b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::BadTag {
            reference: reference.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// Registries on the loopback may be spoken to over plain HTTP without
/// configuration, as containerd allows (`docker.IsLocalhost`).
pub fn is_localhost(host_and_port: &str) -> bool {
    let host = strip_port(host_and_port);
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn strip_port(host_and_port: &str) -> &str {
    if let Some(rest) = host_and_port.strip_prefix('[') {
        // [::1]:5000
        return rest.split_once(']').map_or(host_and_port, |(host, _)| host);
    }
    match host_and_port.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => host_and_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        ImageRef::parse(text).expect(text).to_string()
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_get_docker_io_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.35"), "docker.io/library/busybox:1.35");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("someone/app"), "docker.io/someone/app:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn hosts_with_ports_are_registries_not_tags() {
        let r = ImageRef::parse("127.0.0.1:5000/busybox").expect("parse");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(norm("localhost/a/b:v1"), "localhost/a/b:v1");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("localhost:5000/x:y"), "localhost:5000/x:y");
    }

    #[test]
    fn digests_alone_and_with_tags() {
        let by_digest = ImageRef::parse(&format!("busybox@sha256:{HEX}")).expect("parse");
        assert_eq!(by_digest.tag, None);
        assert_eq!(by_digest.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        let both = ImageRef::parse(&format!("host:1/busybox:1.35@sha256:{HEX}")).expect("parse");
        assert_eq!(both.tag.as_deref(), Some("1.35"));
        assert_eq!(both.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(both.tagged().as_deref(), Some("host:1/busybox:1.35"));
    }

    #[test]
    fn bad_references_are_refused() {
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("BusyBox").is_err());
        assert!(ImageRef::parse("busybox:").is_err());
        assert!(ImageRef::parse("busybox:-x").is_err());
        assert!(ImageRef::parse("busybox@sha256:short").is_err());
        assert!(ImageRef::parse("busybox@md5:abc").is_err());
        assert!(ImageRef::parse("a//b").is_err());
        assert!(ImageRef::parse("a/b..c").is_err());
        assert!(ImageRef::parse("a/-b").is_err());
        assert!(ImageRef::parse("a/b___c").is_err());
        assert!(ImageRef::parse("a/b__c").is_ok());
        assert!(ImageRef::parse("a/b---c").is_ok());
    }

    #[test]
    fn loopback_registries_are_localhost() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("localhost:5000"));
        assert!(is_localhost("127.0.0.1:5000"));
        assert!(is_localhost("127.0.0.2"));
        assert!(is_localhost("[::1]:5000"));
        assert!(!is_localhost("docker.io"));
        assert!(!is_localhost("10.0.0.1:5000"));
        assert!(!is_localhost("localhost.example.com"));
    }
}
