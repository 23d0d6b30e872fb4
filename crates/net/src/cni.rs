//! CNI mode: pod networks made by CNI plugins, per the CNI 1.0 spec
//! (containernetworking/cni SPEC.md): network configuration lists from a directory,
//! plugins from a search path, ADD / CHECK / DEL with the previous result chained, the
//! `portMappings` capability passed as runtimeConfig, and the configuration and result
//! of each ADD cached so DEL can run with exactly what ADD used, even after a restart
//! and even when the pod's namespace is already gone.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// How long one plugin invocation may take; DEL gets a fresh one of its own.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
const CONFIG_EXTENSIONS: [&str; 3] = [".conflist", ".conf", ".json"];

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network config found in {0}")]
    NoConfig(PathBuf),
    #[error("read CNI config {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin} not found in {search_path}")]
    PluginNotFound { plugin: String, search_path: String },
    #[error("CNI plugin {plugin} {command}: {message}")]
    PluginFailed {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: Duration,
    },
    #[error("CNI cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A hostPort, as the `portMappings` capability carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniPortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    pub host_ip: String,
}

/// Who the attachment is for (CNI_ARGS, as kubelet's runtimes pass them).
#[derive(Clone, Debug, Default)]
pub struct CniPodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

pub struct CniNetwork {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
}

/// A network configuration list: name, version and plugins in order.
#[derive(Clone, Debug)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    pub source: PathBuf,
}

impl CniNetwork {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Self {
            conf_dir,
            bin_dirs,
            cache_dir,
        }
    }

    /// Where network configurations are read from.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// Why CNI cannot give pods a network, for NetworkReady; `None` when it can.
    pub fn problem(&self) -> Option<String> {
        self.load_network_list().err().map(|err| err.to_string())
    }

    /// The first configuration in lexical order, as containerd and CRI-O pick it.
    pub fn load_network_list(&self) -> Result<NetworkList, CniError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map_err(|_| CniError::NoConfig(self.conf_dir.clone()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                CONFIG_EXTENSIONS.iter().any(|ext| name.ends_with(ext))
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig(self.conf_dir.clone()))?;
        parse_network_list(&path)
    }

    /// ADD: runs every plugin in order and returns the pod's addresses.
    pub async fn add(
        &self,
        pod_id: &str,
        netns: &Path,
        ifname: &str,
        pod: &CniPodInfo,
        port_mappings: &[CniPortMapping],
    ) -> Result<Vec<IpAddr>, CniError> {
        let list = self.load_network_list()?;
        let invocation = Invocation {
            pod_id,
            netns: Some(netns),
            ifname,
            args: cni_args(pod, pod_id),
        };
        // Cached before the first plugin runs: if one fails halfway, the rollback's
        // DEL still finds the list and releases what the earlier plugins made.
        self.write_cache(pod_id, ifname, &list, &Value::Null, port_mappings)?;
        let mut prev_result: Option<Value> = None;
        for plugin in &list.plugins {
            let config = plugin_config(&list, plugin, prev_result.as_ref(), port_mappings);
            let output = self.run_plugin("ADD", &invocation, &config).await?;
            prev_result = Some(output);
        }
        let result = prev_result.unwrap_or_else(|| json!({}));
        self.write_cache(pod_id, ifname, &list, &result, port_mappings)?;
        Ok(result_ips(&result))
    }

    /// CHECK (CNI >= 0.4.0): every plugin verifies the attachment is as ADD left it.
    pub async fn check(
        &self,
        pod_id: &str,
        netns: &Path,
        ifname: &str,
        pod: &CniPodInfo,
    ) -> Result<(), CniError> {
        let Some((list, result, port_mappings)) = self.read_cache(pod_id, ifname)? else {
            return Err(CniError::PluginFailed {
                plugin: "cache".into(),
                command: "CHECK",
                message: format!("pod {pod_id} has no cached ADD result"),
            });
        };
        let invocation = Invocation {
            pod_id,
            netns: Some(netns),
            ifname,
            args: cni_args(pod, pod_id),
        };
        for plugin in &list.plugins {
            let config = plugin_config(&list, plugin, Some(&result), &port_mappings);
            self.run_plugin("CHECK", &invocation, &config).await?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order, with the config and result ADD cached.
    /// Idempotent; succeeds when the namespace is gone (plugins must tolerate it).
    pub async fn del(
        &self,
        pod_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        pod: &CniPodInfo,
    ) -> Result<(), CniError> {
        let (list, result, port_mappings) = match self.read_cache(pod_id, ifname)? {
            Some(cached) => cached,
            // Never added (or already deleted): nothing to undo.
            None => return Ok(()),
        };
        let netns = netns.filter(|path| is_namespace(path));
        let invocation = Invocation {
            pod_id,
            netns,
            ifname,
            args: cni_args(pod, pod_id),
        };
        for plugin in list.plugins.iter().rev() {
            let config = plugin_config(&list, plugin, Some(&result), &port_mappings);
            self.run_plugin("DEL", &invocation, &config).await?;
        }
        self.remove_cache(pod_id, ifname)
    }

    async fn run_plugin(
        &self,
        command: &'static str,
        invocation: &Invocation<'_>,
        config: &Value,
    ) -> Result<Value, CniError> {
        let plugin = config["type"].as_str().unwrap_or_default().to_owned();
        let binary = self.find_plugin(&plugin)?;
        let search_path = self.search_path();
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", invocation.pod_id)
            .env(
                "CNI_NETNS",
                invocation.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", invocation.ifname)
            .env("CNI_ARGS", &invocation.args)
            .env("CNI_PATH", &search_path)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| CniError::PluginFailed {
                plugin: plugin.clone(),
                command,
                message: format!("spawn {}: {err}", binary.display()),
            })?;
        let input = serde_json::to_vec(config).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits before reading its config reports that itself.
            let _ = stdin.write_all(&input).await;
        }
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| CniError::Timeout {
                plugin: plugin.clone(),
                command,
                timeout: PLUGIN_TIMEOUT,
            })?
            .map_err(|err| CniError::PluginFailed {
                plugin: plugin.clone(),
                command,
                message: err.to_string(),
            })?;
        if !output.status.success() {
            return Err(CniError::PluginFailed {
                plugin,
                command,
                message: plugin_error_message(&output.stdout, &output.stderr),
            });
        }
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|err| CniError::PluginFailed {
            plugin,
            command,
            message: format!("unparsable result: {err}"),
        })
    }

    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        let not_found = || CniError::PluginNotFound {
            plugin: plugin.to_owned(),
            search_path: self.search_path(),
        };
        // A plugin name is a file name, never a path.
        if plugin.is_empty() || plugin.contains('/') || plugin.starts_with('.') {
            return Err(not_found());
        }
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(not_found)
    }

    fn search_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|dir| dir.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn cache_path(&self, pod_id: &str, ifname: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_id}-{ifname}.json"))
    }

    fn write_cache(
        &self,
        pod_id: &str,
        ifname: &str,
        list: &NetworkList,
        result: &Value,
        port_mappings: &[CniPortMapping],
    ) -> Result<(), CniError> {
        let path = self.cache_path(pod_id, ifname);
        let cached = json!({
            "name": list.name,
            "cniVersion": list.cni_version,
            "plugins": list.plugins,
            "source": list.source,
            "result": result,
            "portMappings": port_mappings_json(port_mappings),
        });
        let cache_err = |source| CniError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(cache_err)?;
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, cached.to_string()).map_err(cache_err)?;
        std::fs::rename(&temp, &path).map_err(cache_err)
    }

    #[allow(clippy::type_complexity)]
    fn read_cache(
        &self,
        pod_id: &str,
        ifname: &str,
    ) -> Result<Option<(NetworkList, Value, Vec<CniPortMapping>)>, CniError> {
        let path = self.cache_path(pod_id, ifname);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CniError::Cache { path, source }),
        };
        let cached: Value = serde_json::from_str(&text).map_err(|err| CniError::BadConfig {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let list = NetworkList {
            name: cached["name"].as_str().unwrap_or_default().to_owned(),
            cni_version: cached["cniVersion"].as_str().unwrap_or_default().to_owned(),
            plugins: cached["plugins"].as_array().cloned().unwrap_or_default(),
            source: PathBuf::from(cached["source"].as_str().unwrap_or_default()),
        };
        let port_mappings = parse_port_mappings(&cached["portMappings"]);
        Ok(Some((list, cached["result"].clone(), port_mappings)))
    }

    fn remove_cache(&self, pod_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.cache_path(pod_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }
}

/// Whether `path` is a namespace (an nsfs bind mount), not the empty file a pin
/// leaves once its mount is gone.
fn is_namespace(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
}

struct Invocation<'a> {
    pod_id: &'a str,
    netns: Option<&'a Path>,
    ifname: &'a str,
    args: String,
}

fn cni_args(pod: &CniPodInfo, pod_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={pod_id};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.uid
    )
}

/// A `.conflist`, or a single-plugin `.conf` wrapped into a list.
pub fn parse_network_list(path: &Path) -> Result<NetworkList, CniError> {
    let bad = |reason: String| CniError::BadConfig {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| bad(err.to_string()))?;
    let value: Value = serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
    let name = value["name"]
        .as_str()
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_owned();
    let cni_version = value["cniVersion"].as_str().unwrap_or("1.0.0").to_owned();
    let plugins = match value.get("plugins") {
        Some(Value::Array(plugins)) => plugins.clone(),
        Some(_) => return Err(bad("\"plugins\" is not a list".into())),
        None if value.get("type").is_some() => vec![value.clone()],
        None => return Err(bad("neither \"plugins\" nor \"type\"".into())),
    };
    if plugins.is_empty() || plugins.iter().any(|p| p["type"].as_str().is_none()) {
        return Err(bad("every plugin needs a \"type\"".into()));
    }
    Ok(NetworkList {
        name,
        cni_version,
        plugins,
        source: path.to_owned(),
    })
}

/// What a plugin gets on stdin: its own config plus the list's name and version, the
/// previous plugin's result, and the capabilities it declared.
fn plugin_config(
    list: &NetworkList,
    plugin: &Value,
    prev_result: Option<&Value>,
    port_mappings: &[CniPortMapping],
) -> Value {
    let mut config = plugin.clone();
    config["name"] = json!(list.name);
    config["cniVersion"] = json!(list.cni_version);
    if let Some(prev) = prev_result.filter(|v| !v.is_null()) {
        config["prevResult"] = prev.clone();
    }
    let wants_ports = plugin["capabilities"]["portMappings"].as_bool() == Some(true);
    if wants_ports && !port_mappings.is_empty() {
        config["runtimeConfig"] = json!({ "portMappings": port_mappings_json(port_mappings) });
    }
    if let Some(object) = config.as_object_mut() {
        object.remove("capabilities");
    }
    config
}

fn port_mappings_json(port_mappings: &[CniPortMapping]) -> Value {
    Value::Array(
        port_mappings
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol,
                });
                if !m.host_ip.is_empty() {
                    entry["hostIP"] = json!(m.host_ip);
                }
                entry
            })
            .collect(),
    )
}

fn parse_port_mappings(value: &Value) -> Vec<CniPortMapping> {
    value
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|m| {
                    Some(CniPortMapping {
                        host_port: u16::try_from(m["hostPort"].as_u64()?).ok()?,
                        container_port: u16::try_from(m["containerPort"].as_u64()?).ok()?,
                        protocol: m["protocol"].as_str().unwrap_or("tcp").to_owned(),
                        host_ip: m["hostIP"].as_str().unwrap_or_default().to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Addresses of a result: 0.3.x / 0.4.0 / 1.0.0 (`ips[].address`) or 0.2.0
/// (`ip4.ip`, `ip6.ip`). IPv4 first.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    let mut cidrs: Vec<&str> = result["ips"]
        .as_array()
        .map(|ips| ips.iter().filter_map(|ip| ip["address"].as_str()).collect())
        .unwrap_or_default();
    for legacy in ["ip4", "ip6"] {
        if let Some(ip) = result[legacy]["ip"].as_str() {
            cidrs.push(ip);
        }
    }
    let mut ips: Vec<IpAddr> = cidrs
        .into_iter()
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

/// The spec's error object (`{"code","msg","details"}`), or whatever was printed.
fn plugin_error_message(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(error) = serde_json::from_slice::<BTreeMap<String, Value>>(stdout) {
        let msg = error.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = error
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let code = error
            .get("code")
            .map(ToString::to_string)
            .unwrap_or_default();
        return format!("code {code}: {msg} {details}").trim().to_owned();
    }
    let text = String::from_utf8_lossy(if stderr.is_empty() { stdout } else { stderr });
    text.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_ips_of_every_version() {
        let v1 = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "fd00::5/64"}, {"address": "10.22.0.5/16", "gateway": "10.22.0.1"}]});
        assert_eq!(
            result_ips(&v1),
            vec![
                "10.22.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        let v020 = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.2.3/24"}});
        assert_eq!(
            result_ips(&v020),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn plugin_config_chains_and_passes_declared_capabilities_only() {
        let list = NetworkList {
            name: "net".into(),
            cni_version: "1.0.0".into(),
            plugins: vec![],
            source: PathBuf::new(),
        };
        let ports = [CniPortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        let config = plugin_config(&list, &portmap, Some(&prev), &ports);
        assert_eq!(config["name"], "net");
        assert_eq!(config["prevResult"], prev);
        assert_eq!(config["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(config.get("capabilities").is_none());
        let bridge = json!({"type": "bridge"});
        assert!(
            plugin_config(&list, &bridge, None, &ports)
                .get("runtimeConfig")
                .is_none()
        );
    }

    #[test]
    fn single_plugin_conf_is_wrapped_into_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-net.conf");
        std::fs::write(
            &path,
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        let list = parse_network_list(&path).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.cni_version, "0.4.0");
    }

    #[test]
    fn first_config_in_lexical_order_wins_and_missing_dir_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let cni = CniNetwork::new(dir.path().to_owned(), vec![], dir.path().join("cache"));
        assert!(cni.problem().is_some());
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"name":"b","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"name":"a","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(cni.load_network_list().unwrap().name, "a");
        assert!(cni.problem().is_none());
    }

    #[test]
    fn plugin_type_cannot_be_a_path() {
        let cni = CniNetwork::new(
            PathBuf::from("/x"),
            vec![PathBuf::from("/usr/lib/cni")],
            PathBuf::from("/tmp"),
        );
        assert!(matches!(
            cni.find_plugin("../../bin/sh"),
            Err(CniError::PluginNotFound { .. })
        ));
    }
}
