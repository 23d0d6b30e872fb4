//! The daemon's configuration: one TOML file, every key with an embedded default.
//!
//! An unknown key or a bad value stops the start with an error naming the key: a
//! typo in a node's config must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/coracle/config.toml";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket kubelet and crictl connect to.
    pub socket_path: PathBuf,
    /// Persistent state: pod and container records, images, snapshots.
    pub root_dir: PathBuf,
    /// Volatile state (tmpfs): pinned namespaces, exit files, the socket lock.
    pub state_dir: PathBuf,
    /// How pod cgroups are managed; kubelet's `--cgroup-driver` must match.
    pub cgroup_driver: CgroupDriver,
    /// On SIGTERM/SIGINT, how long in-flight requests may still run.
    pub shutdown_timeout_seconds: u64,
    /// The `coracle-monitor` binary; empty: the one next to `coracled`.
    pub monitor_path: PathBuf,
    /// `host:port` of the Prometheus endpoint (`GET /metrics`); empty: no endpoint.
    pub metrics_address: String,
    pub log: LogConfig,
    pub network: NetworkConfig,
    /// The streaming server behind Exec, Attach and PortForward.
    pub streaming: StreamingConfig,
    /// Registries (mirrors, insecure, credentials), parallel downloads, pull timeout.
    pub image: coracle_image::ImageConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing filter such as
    /// `info,coracle_cri=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// The IP to listen on; it goes into the URLs, so clients must reach it.
    pub address: String,
    /// 0: a free port.
    pub port: u16,
    /// PEM certificate chain and key: both set, the server speaks HTTPS only.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 0,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl StreamingConfig {
    /// The streaming server's settings, checked.
    pub fn server_config(&self) -> Result<coracle_streaming::StreamingConfig, ConfigError> {
        let ip: std::net::IpAddr = self.address.parse().map_err(|err| ConfigError::Invalid {
            key: "streaming.address",
            reason: format!("{:?} is not an IP address: {err}", self.address),
        })?;
        if ip.is_unspecified() {
            return Err(ConfigError::Invalid {
                key: "streaming.address",
                reason: "goes into the URLs clients connect to: name a reachable address, not 0.0.0.0 or ::".into(),
            });
        }
        let tls = match (self.tls_cert_file.is_empty(), self.tls_key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some(coracle_streaming::TlsConfig {
                cert_file: PathBuf::from(&self.tls_cert_file),
                key_file: PathBuf::from(&self.tls_key_file),
            }),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "streaming.tls_cert_file",
                    reason: "tls_cert_file and tls_key_file go together: set both or neither"
                        .into(),
                });
            }
        };
        Ok(coracle_streaming::StreamingConfig {
            address: std::net::SocketAddr::new(ip, self.port),
            tls,
            ..Default::default()
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// `bridge`: Coracle's built-in bridge network. `cni`: CNI plugins.
    pub mode: NetworkMode,
    /// Where CNI network configurations are read from in `cni` mode.
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order, in `cni` mode.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The built-in network's bridge.
    pub bridge: String,
    /// The pod IPv4 range of the built-in network until kubelet sets the node's
    /// pod CIDR; empty for IPv6 only.
    pub subnet_v4: String,
    /// An IPv6 range for dual stack (or IPv6 only); empty for IPv4 only.
    pub subnet_v6: String,
    pub mtu: u32,
    /// Masquerade traffic leaving the pod ranges.
    pub masquerade: bool,
    /// Turn on the node's IP forwarding so pods reach beyond the node.
    pub enable_ip_forward: bool,
    /// Coracle's own nftables table (`table inet <name>`) for masquerade and hostPorts.
    pub nft_table: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Bridge,
    Cni,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from("/run/coracle/coracle.sock"),
            root_dir: PathBuf::from("/var/lib/coracle"),
            state_dir: PathBuf::from("/run/coracle"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            shutdown_timeout_seconds: 10,
            monitor_path: PathBuf::new(),
            metrics_address: String::new(),
            log: LogConfig::default(),
            network: NetworkConfig::default(),
            streaming: StreamingConfig::default(),
            image: coracle_image::ImageConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Bridge,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            bridge: "coracle0".to_owned(),
            subnet_v4: "10.88.0.0/16".to_owned(),
            subnet_v6: String::new(),
            mtu: 1500,
            masquerade: true,
            enable_ip_forward: true,
            nft_table: "coracle".to_owned(),
        }
    }
}

impl NetworkConfig {
    pub fn bridge_config(&self) -> coracle_net::BridgeConfig {
        coracle_net::BridgeConfig {
            bridge: self.bridge.clone(),
            subnet_v4: (!self.subnet_v4.is_empty()).then(|| self.subnet_v4.clone()),
            subnet_v6: (!self.subnet_v6.is_empty()).then(|| self.subnet_v6.clone()),
            mtu: self.mtu,
            masquerade: self.masquerade,
            enable_ip_forward: self.enable_ip_forward,
            nft_table: self.nft_table.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Loads `path`; a missing file is an error only when the user named it.
    pub fn load(path: &Path, named_by_user: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !named_by_user => {
                Ok(Self::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("socket_path", &self.socket_path),
            ("root_dir", &self.root_dir),
            ("state_dir", &self.state_dir),
            ("network.cni_conf_dir", &self.network.cni_conf_dir),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        if self.root_dir == self.state_dir {
            return Err(ConfigError::Invalid {
                key: "state_dir",
                reason: "must differ from root_dir (one persists, the other must not)".into(),
            });
        }
        if self.shutdown_timeout_seconds > 3600 {
            return Err(ConfigError::Invalid {
                key: "shutdown_timeout_seconds",
                reason: format!("{} is more than an hour", self.shutdown_timeout_seconds),
            });
        }
        self.validate_network()?;
        self.metrics_socket_address()?;
        self.streaming.server_config()?;
        if self.image.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "image.max_concurrent_downloads",
                reason: "must be at least 1".into(),
            });
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: format!("{:?} is not a level or filter: {err}", self.log.level),
            });
        }
        Ok(())
    }

    /// The metrics endpoint's address; `None` when it is off.
    pub fn metrics_socket_address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.metrics_address.is_empty() {
            return Ok(None);
        }
        self.metrics_address
            .parse()
            .map(Some)
            .map_err(|err| ConfigError::Invalid {
                key: "metrics_address",
                reason: format!(
                    "{:?} is not an ip:port address: {err}",
                    self.metrics_address
                ),
            })
    }

    fn validate_network(&self) -> Result<(), ConfigError> {
        let network = &self.network;
        // Empty means that family is off; one of the two is needed.
        if network.subnet_v4.is_empty() && network.subnet_v6.is_empty() {
            return Err(ConfigError::Invalid {
                key: "network.subnet_v4",
                reason: "no pod range: set subnet_v4, subnet_v6 or both".into(),
            });
        }
        if !network.subnet_v4.is_empty() {
            validate_subnet("network.subnet_v4", &network.subnet_v4)?;
        }
        if !network.subnet_v6.is_empty() {
            validate_subnet("network.subnet_v6", &network.subnet_v6)?;
        }
        if network.bridge.is_empty() || network.bridge.len() > 15 {
            return Err(ConfigError::Invalid {
                key: "network.bridge",
                reason: "an interface name of 1 to 15 bytes".into(),
            });
        }
        if !(576..=65535).contains(&network.mtu) {
            return Err(ConfigError::Invalid {
                key: "network.mtu",
                reason: format!("{} is outside 576..=65535", network.mtu),
            });
        }
        // The rest of what the bridge network would refuse at start (a range of
        // the wrong family, an IPv6 range with an MTU under 1280, the table name).
        if network.mode == NetworkMode::Bridge {
            network
                .bridge_config()
                .validate()
                .map_err(|err| ConfigError::Invalid {
                    key: "network",
                    reason: err.to_string(),
                })?;
        }
        Ok(())
    }

    /// The configuration as TOML, as `--print-config` shows it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }
}

fn validate_subnet(key: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<coracle_net::Subnet>()
        .map(drop)
        .map_err(|err| ConfigError::Invalid {
            key,
            reason: format!("{value:?}: {err}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::parse("[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.root_dir, Config::default().root_dir);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::parse("root_dri = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("root_dri"), "{err}");
        let nested = Config::parse("[network]\nmod = \"cni\"\n")
            .unwrap_err()
            .to_string();
        assert!(nested.contains("mod"), "{nested}");
    }

    #[test]
    fn bad_value_is_named_in_the_error() {
        let err = Config::parse("cgroup_driver = \"cgroupv3\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cgroup_driver"), "{err}");
        assert!(err.contains("cgroupv3"), "{err}");
    }

    #[test]
    fn relative_path_is_refused_naming_the_key() {
        let config = Config {
            state_dir: PathBuf::from("run/coracle"),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`state_dir`"), "{err}");
    }

    #[test]
    fn bad_subnet_is_refused_naming_the_key() {
        let mut config = Config::default();
        config.network.subnet_v4 = "10.88.0.0/33".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("network.subnet_v4"), "{err}");
    }

    #[test]
    fn what_the_bridge_network_would_refuse_is_refused_at_load() {
        let mut config = Config::default();
        config.network.subnet_v4 = "fd00::/64".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("not an IPv4 subnet"), "{err}");
        let mut config = Config::default();
        config.network.subnet_v6 = "fd00:88::/64".into();
        config.network.mtu = 1000;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("mtu"), "{err}");
    }

    #[test]
    fn ipv6_only_is_allowed_but_no_range_at_all_is_not() {
        let mut config = Config::default();
        config.network.subnet_v4 = String::new();
        config.network.subnet_v6 = "fd00:88::/64".into();
        config.validate().unwrap();
        assert_eq!(config.network.bridge_config().subnet_v4, None);
        config.network.subnet_v6 = String::new();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("no pod range"), "{err}");
    }

    #[test]
    fn bad_log_filter_is_refused_naming_the_key() {
        let mut config = Config::default();
        config.log.level = "loud=,,=".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("log.level"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let defaults = Config::default();
        defaults.validate().unwrap();
        assert_eq!(Config::parse(&defaults.to_toml()).unwrap(), defaults);
    }

    #[test]
    fn missing_default_file_gives_defaults_but_a_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.toml");
        assert_eq!(Config::load(&missing, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(&missing, true),
            Err(ConfigError::Read { .. })
        ));
    }

    /// docs/configuration.md shows the defaults; this keeps it from drifting.
    #[test]
    fn configuration_reference_shows_the_real_defaults() {
        let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let doc = std::fs::read_to_string(&doc_path).unwrap();
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/configuration.md has a ```toml block with the defaults");
        let documented: toml::Value = toml::from_str(block).unwrap();
        let real = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            documented, real,
            "docs/configuration.md is out of date; paste `coracled --print-config --config /dev/null`"
        );
    }
}
