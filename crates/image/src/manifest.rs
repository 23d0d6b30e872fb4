//! Manifests, indexes and image configs (OCI image spec and Docker schema2), and
//! the choice of the node's platform from an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest type we read: distribution answers 404 for an OCI manifest unless
/// asked for it, and converts schema2 to schema1 unless asked for schema2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest}: {source}")]
    Parse {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("manifest {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("index {digest}: no manifest for platform {platform}")]
    NoMatchingPlatform { digest: Digest, platform: String },
    #[error("image config {digest}: {source}")]
    Config {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("image config {digest}: {layers} layers but {diff_ids} diff ids")]
    LayerCountMismatch {
        digest: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {digest}: unsupported media type {media_type:?}")]
    UnsupportedLayer { digest: Digest, media_type: String },
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The node's platform in OCI names (Go's GOARCH values), from Rust's
    /// `std::env::consts::ARCH`.
    pub fn host() -> Self {
        let (architecture, variant) = oci_arch(std::env::consts::ARCH);
        Self {
            architecture: architecture.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// <https://github.com/opencontainers/image-spec/blob/main/image-index.md#platform-variants>
pub fn oci_arch(rust_arch: &str) -> (&str, Option<&str>) {
    match rust_arch {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A fetched manifest, by what it turned out to be.
pub enum Fetched {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
struct MediaTypeProbe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or an index. The body's `mediaType` wins over the HTTP
/// content type (some registries send `application/json`); without either, the
/// presence of `manifests` marks an index.
pub fn parse_manifest(
    digest: &Digest,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Fetched, ManifestError> {
    let parse_err = |source| ManifestError::Parse {
        digest: digest.clone(),
        source,
    };
    let probe: MediaTypeProbe = serde_json::from_slice(body).map_err(parse_err)?;
    let media_type = probe
        .media_type
        .or_else(|| content_type.map(str::to_owned))
        .unwrap_or_default();
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Fetched::Index(
            serde_json::from_slice(body).map_err(parse_err)?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Fetched::Manifest(
            serde_json::from_slice(body).map_err(parse_err)?,
        )),
        _ if probe.manifests.is_some() => Ok(Fetched::Index(
            serde_json::from_slice(body).map_err(parse_err)?,
        )),
        "" | "application/json" => Ok(Fetched::Manifest(
            serde_json::from_slice(body).map_err(parse_err)?,
        )),
        other => Err(ManifestError::UnsupportedMediaType {
            digest: digest.clone(),
            media_type: other.to_owned(),
        }),
    }
}

/// Picks the manifest for `want` from an index: os and architecture must match; an
/// exact variant wins, then an entry without variant, then (arm64 only) any. As
/// containerd's default platform matcher, `arm64` treats `v8` and no variant alike.
pub fn choose_platform<'a>(
    index_digest: &Digest,
    index: &'a Index,
    want: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .collect();
    let variant_of = |d: &Descriptor| d.platform.as_ref().and_then(|p| p.variant.clone());
    let exact = candidates
        .iter()
        .find(|d| variant_of(d) == want.variant)
        .or_else(|| candidates.iter().find(|d| variant_of(d).is_none()))
        .or_else(|| {
            if want.architecture == "arm64" {
                candidates.first()
            } else {
                None
            }
        });
    exact
        .copied()
        .ok_or_else(|| ManifestError::NoMatchingPlatform {
            digest: index_digest.clone(),
            platform: want.to_string(),
        })
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn layer_compression(layer: &Descriptor) -> Result<Compression, ManifestError> {
    let mt = layer.media_type.as_str();
    let compression = match mt {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        _ => {
            return Err(ManifestError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: mt.to_owned(),
            });
        }
    };
    Ok(compression)
}

/// The parts of an image config a runtime needs
/// (<https://github.com/opencontainers/image-spec/blob/main/config.md>).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// The image config document, as far as we read it.
#[derive(Debug, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub config: Option<RawRunConfig>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub created: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    pub diff_ids: Vec<Digest>,
}

/// The config's `config` object; Go's JSON null for empty lists is accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawRunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
}

impl From<RawRunConfig> for RunConfig {
    fn from(raw: RawRunConfig) -> Self {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Self {
            user: non_empty(raw.user),
            env: raw.env.unwrap_or_default(),
            entrypoint: raw.entrypoint.unwrap_or_default(),
            cmd: raw.cmd.unwrap_or_default(),
            working_dir: non_empty(raw.working_dir),
            stop_signal: non_empty(raw.stop_signal),
            labels: raw.labels.unwrap_or_default(),
            exposed_ports: raw.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: raw.volumes.unwrap_or_default().into_keys().collect(),
        }
    }
}

pub fn parse_config(
    digest: &Digest,
    manifest: &Manifest,
    body: &[u8],
) -> Result<ConfigFile, ManifestError> {
    let config: ConfigFile =
        serde_json::from_slice(body).map_err(|source| ManifestError::Config {
            digest: digest.clone(),
            source,
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ManifestError::LayerCountMismatch {
            digest: digest.clone(),
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn entry(n: u8, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: d(n),
            size: 1,
            platform: Some(Platform {
                architecture: arch.to_owned(),
                os: "linux".to_owned(),
                variant: variant.map(str::to_owned),
            }),
        }
    }

    fn want(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    #[test]
    fn host_platform_is_linux_amd64_on_x86_64() {
        assert_eq!(oci_arch("x86_64"), ("amd64", None));
        assert_eq!(oci_arch("aarch64"), ("arm64", Some("v8")));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Platform::host().to_string(), "linux/amd64");
        }
    }

    #[test]
    fn index_picks_the_node_platform() {
        let index = Index {
            manifests: vec![
                entry(1, "arm64", None),
                entry(2, "amd64", None),
                entry(3, "arm", Some("v7")),
            ],
        };
        let pick = |p| choose_platform(&d(0), &index, &p).map(|m| m.digest.clone());
        assert_eq!(pick(want("amd64", None)).ok(), Some(d(2)));
        assert_eq!(pick(want("arm64", Some("v8"))).ok(), Some(d(1)));
        assert_eq!(pick(want("arm", Some("v7"))).ok(), Some(d(3)));
        assert!(matches!(
            pick(want("s390x", None)),
            Err(ManifestError::NoMatchingPlatform { .. })
        ));
        assert!(pick(want("arm", Some("v6"))).is_err());
    }

    #[test]
    fn manifest_kind_comes_from_body_media_type_or_shape() {
        let digest = d(9);
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest(&digest, Some("application/json"), index),
            Ok(Fetched::Index(_))
        ));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{digest}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(&digest, None, manifest.as_bytes()),
            Ok(Fetched::Manifest(_))
        ));
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(matches!(
            parse_manifest(&digest, None, schema1),
            Err(ManifestError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn config_with_go_nulls_parses() {
        let raw: RawRunConfig = serde_json::from_str(
            r#"{"User":"","Env":null,"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}},"Labels":null}"#,
        )
        .expect("parse");
        let config = RunConfig::from(raw);
        assert_eq!(config.user, None);
        assert_eq!(config.cmd, vec!["sh"]);
        assert_eq!(config.exposed_ports, vec!["80/tcp"]);
    }
}
