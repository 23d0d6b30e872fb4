//! A pod network of its own for each test daemon: a bridge, a /24 and an nftables
//! table no other test (or process on this machine) uses, removed when dropped.
//!
//! Leases are files under /run/coracle-e2e/net created with O_EXCL, so parallel test
//! processes never share a subnet; a lease whose holder died is taken over.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const LEASE_DIR: &str = "/run/coracle-e2e/net";
const SLOTS: u32 = 4096;

pub struct TestNetwork {
    slot: u32,
    lease: PathBuf,
}

impl TestNetwork {
    pub fn acquire() -> anyhow::Result<Self> {
        fs::create_dir_all(LEASE_DIR).with_context(|| format!("create {LEASE_DIR}"))?;
        let start = std::process::id() % SLOTS;
        for offset in 0..SLOTS {
            let slot = (start + offset) % SLOTS;
            let lease = PathBuf::from(LEASE_DIR).join(slot.to_string());
            if take_lease(&lease)? {
                return Ok(Self { slot, lease });
            }
        }
        bail!("no free test network slot in {LEASE_DIR}")
    }

    pub fn bridge(&self) -> String {
        format!("coe2e{}", self.slot)
    }

    pub fn subnet_v4(&self) -> String {
        format!("10.{}.{}.0/24", 200 + self.slot / 256, self.slot % 256)
    }

    /// The IPv6 range of this slot, for dual-stack tests.
    pub fn subnet_v6(&self) -> String {
        format!("fd00:e2e:{:x}::/64", self.slot)
    }

    /// A second pair of ranges, as kubelet would send in UpdateRuntimeConfig.
    pub fn kubelet_subnets(&self) -> (String, String) {
        (
            format!("10.{}.{}.0/24", 216 + self.slot / 256, self.slot % 256),
            format!("fd00:e2f:{:x}::/64", self.slot),
        )
    }

    pub fn nft_table(&self) -> String {
        format!("coracle_e2e_{}", self.slot)
    }

    /// The `[network]` table of a daemon config: never enables forwarding on the host.
    pub fn config(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert("bridge".into(), self.bridge().into());
        table.insert("subnet_v4".into(), self.subnet_v4().into());
        table.insert("nft_table".into(), self.nft_table().into());
        table.insert("enable_ip_forward".into(), false.into());
        table
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // Only what this lease names: our bridge and our table.
        quiet(Command::new("ip").args(["link", "del", &self.bridge()]));
        quiet(Command::new("nft").args(["delete", "table", "inet", &self.nft_table()]));
        let _ = fs::remove_file(&self.lease);
    }
}

fn quiet(command: &mut Command) {
    let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Creates the lease file, or takes it over when the process that holds it is gone.
fn take_lease(path: &PathBuf) -> anyhow::Result<bool> {
    for _ in 0..2 {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                writeln!(file, "{}", std::process::id())?;
                return Ok(true);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = fs::read_to_string(path).unwrap_or_default();
                let alive = holder
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
                if alive || holder.trim().is_empty() {
                    return Ok(false);
                }
                let _ = fs::remove_file(path);
            }
            Err(err) => return Err(err).with_context(|| format!("create {}", path.display())),
        }
    }
    Ok(false)
}
