//! Configuration of the image store: registries (mirrors, plain HTTP, credentials),
//! download concurrency and the progress timeout.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per registry host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Tried in order before the upstream: `host[:port]` or `scheme://host[:port][/prefix]`
    /// (the prefix defaults to `/v2`, as containerd's hosts.toml does).
    pub mirrors: Vec<String>,
    /// Plain HTTP for this host (when it is used as a mirror too).
    pub insecure: bool,
    /// Never fall back to the upstream when every mirror failed (air-gapped nodes).
    pub no_upstream_fallback: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM certificates trusted for this host on top of the system's (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    pub registries: HashMap<String, RegistryConfig>,
    pub max_concurrent_downloads: usize,
    /// A pull that receives no byte for this long is cancelled.
    #[serde(with = "duration_secs")]
    pub progress_timeout: Duration,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            registries: HashMap::new(),
            // containerd's max_concurrent_downloads default.
            max_concurrent_downloads: 3,
            // containerd CRI's image_pull_progress_timeout default.
            progress_timeout: Duration::from_secs(300),
        }
    }
}

/// Credentials for one pull, as CRI's `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`.
    pub auth: Option<String>,
    /// An OAuth2 refresh token for the registry's token server.
    pub identity_token: Option<String>,
    /// A bearer token sent as is.
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn basic(username: &str, password: &str) -> Self {
        Self {
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
            ..Self::default()
        }
    }

    /// `username:password`, from the explicit fields or from `auth`.
    pub fn user_pass(&self) -> Option<(String, String)> {
        if let (Some(user), Some(pass)) = (&self.username, &self.password) {
            if !user.is_empty() {
                return Some((user.clone(), pass.clone()));
            }
        }
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.as_deref()?.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some((user.to_owned(), pass.to_owned()))
    }

    pub fn is_empty(&self) -> bool {
        self.user_pass().is_none() && self.identity_token.is_none() && self.registry_token.is_none()
    }
}

impl RegistryConfig {
    pub fn credentials(&self) -> Option<Credentials> {
        match (&self.username, &self.password) {
            (Some(user), Some(pass)) => Some(Credentials::basic(user, pass)),
            _ => None,
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_decodes_to_user_and_password() {
        let creds = Credentials {
            auth: Some("dXNlcjpwYXNzOndvcmQ=".to_owned()),
            ..Credentials::default()
        };
        assert_eq!(creds.user_pass(), Some(("user".into(), "pass:word".into())));
        assert!(Credentials::default().is_empty());
        assert!(!format!("{:?}", Credentials::basic("u", "secret")).contains("secret"));
    }
}
