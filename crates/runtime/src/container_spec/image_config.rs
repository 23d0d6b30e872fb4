//! The part of an OCI image config (`application/vnd.oci.image.config.v1+json`, the
//! `config` object) that decides how a container runs.
//! <https://github.com/opencontainers/image-spec/blob/main/config.md>

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SpecError;

/// `config.{Entrypoint,Cmd,Env,WorkingDir,User,StopSignal,Volumes}` of an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid`, ... (empty: root).
    pub user: String,
    /// A signal name or number, empty for the default.
    pub stop_signal: String,
    /// Volume paths, sorted.
    pub volumes: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<RawConfig>,
}

/// The JSON shape: every field may be absent or null.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
    #[serde(rename = "Volumes", default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
}

impl ImageRuntimeConfig {
    /// Parses a whole image config document (the blob the manifest's `config` names).
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let file: ImageConfigFile =
            serde_json::from_slice(bytes).map_err(SpecError::ImageConfig)?;
        let Some(c) = file.config else {
            return Ok(Self::default());
        };
        Ok(Self {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            stop_signal: c.stop_signal.unwrap_or_default(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_runtime_fields_of_an_image_config() {
        let json = br#"{
            "architecture": "amd64", "os": "linux",
            "config": {
                "User": "app:staff",
                "Env": ["PATH=/bin", "A=1"],
                "Entrypoint": ["/entry"],
                "Cmd": ["serve", "--port=80"],
                "WorkingDir": "/srv",
                "StopSignal": "SIGQUIT",
                "Volumes": {"/var/lib/data": {}, "/cache": {}},
                "Labels": {"x": "y"}
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }"#;
        let c = ImageRuntimeConfig::from_json(json).unwrap();
        assert_eq!(c.user, "app:staff");
        assert_eq!(c.env, vec!["PATH=/bin", "A=1"]);
        assert_eq!(c.entrypoint, vec!["/entry"]);
        assert_eq!(c.cmd, vec!["serve", "--port=80"]);
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(c.volumes, vec!["/cache", "/var/lib/data"]);
    }

    #[test]
    fn null_and_missing_fields_are_empty() {
        let c = ImageRuntimeConfig::from_json(br#"{"config": {"Entrypoint": null, "Cmd": null}}"#)
            .unwrap();
        assert_eq!(c, ImageRuntimeConfig::default());
        let c = ImageRuntimeConfig::from_json(br#"{"architecture": "amd64"}"#).unwrap();
        assert_eq!(c, ImageRuntimeConfig::default());
    }

    #[test]
    fn malformed_image_config_is_an_error() {
        let err = ImageRuntimeConfig::from_json(br#"{"config": {"Cmd": "sh"}}"#).unwrap_err();
        assert!(matches!(err, SpecError::ImageConfig(_)), "{err}");
    }
}
