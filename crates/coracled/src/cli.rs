//! Command-line flags. Each overrides its key in the config file.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "coracled",
    version,
    about = "Coracle: a Kubernetes CRI runtime"
)]
pub struct Cli {
    /// The TOML configuration file [default: /etc/coracle/config.toml, if it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The CRI socket to serve (config key `socket_path`)
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Persistent state directory (config key `root_dir`)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Volatile state directory (config key `state_dir`)
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Log level or tracing filter (config key `log.level`)
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format (config key `log.format`)
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
}

impl Cli {
    pub fn apply_overrides(&self, config: &mut Config) {
        if let Some(socket) = &self.socket {
            config.socket_path = socket.clone();
        }
        if let Some(root) = &self.root {
            config.root_dir = root.clone();
        }
        if let Some(state) = &self.state {
            config.state_dir = state.clone();
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from([
            "coracled",
            "--socket",
            "/tmp/x.sock",
            "--root",
            "/tmp/root",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ]);
        let mut config =
            Config::parse("root_dir = \"/srv/coracle\"\nstate_dir = \"/run/c\"\n").unwrap();
        cli.apply_overrides(&mut config);
        assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.root_dir, PathBuf::from("/tmp/root"));
        assert_eq!(config.state_dir, PathBuf::from("/run/c"));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "debug");
    }
}
