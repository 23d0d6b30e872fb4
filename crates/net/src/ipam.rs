//! Address management on the filesystem, safe across processes and restarts.
//!
//! Each subnet has a directory; an allocated address is a file named by the
//! address holding the pod id, created with `O_CREAT|O_EXCL`, so the kernel, not
//! a lock of ours, decides which of two racing allocations gets an address. The
//! last handed-out address is remembered so allocation goes round the subnet
//! instead of reusing a just-freed address (whose old conntrack and ARP entries
//! may still point at a dead pod).
//!
//! When the pod subnets change (kubelet's pod CIDR, or a new config), the pools
//! of the earlier subnets stay on disk while pods hold addresses in them: release
//! looks in every pool, and a new pool that overlaps an old one never hands out
//! an address (or the gateway) the old one still has.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::NetError;
use crate::subnet::Subnet;

const LAST_RESERVED: &str = "last_reserved";

/// Allocation gives up after this many taken addresses in a row: a nearly full
/// /64 must not make one attach walk 2^64 files.
const MAX_PROBES: u128 = 1 << 20;

/// The addresses of one subnet.
#[derive(Debug, Clone)]
pub struct SubnetPool {
    subnet: Subnet,
    dir: PathBuf,
    /// Pools of other subnets that share addresses with this one: what they
    /// hold, and their gateways, are taken here too.
    overlapping: Vec<(Subnet, PathBuf)>,
}

impl SubnetPool {
    /// Opens (creating if needed) the pool directory for `subnet` under `root`.
    pub fn open(root: &Path, subnet: Subnet) -> Result<Self, NetError> {
        let dir = root.join(pool_dir_name(subnet));
        fs::create_dir_all(&dir).map_err(|source| ipam_error(&dir, source))?;
        Ok(Self {
            subnet,
            dir,
            overlapping: Vec::new(),
        })
    }

    /// The pools already under `root`, in no particular order.
    fn existing(root: &Path) -> Result<Vec<Self>, NetError> {
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ipam_error(root, source)),
        };
        let mut pools = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ipam_error(root, source))?;
            let subnet = entry.file_name().to_str().and_then(subnet_of_pool_dir);
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            if let (Some(subnet), true) = (subnet, is_dir) {
                pools.push(Self {
                    subnet,
                    dir: entry.path(),
                    overlapping: Vec::new(),
                });
            }
        }
        Ok(pools)
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Reserves a free address for `pod_id`, starting after the last one handed out.
    pub fn allocate(&self, pod_id: &str) -> Result<IpAddr, NetError> {
        let (first, last) = self.subnet.pod_range();
        let start = self
            .last_reserved()
            .filter(|&value| (first..=last).contains(&value))
            .map_or(first, |value| next_in_range(value, first, last));
        let probes = (last - first + 1).min(MAX_PROBES);
        let mut candidate = start;
        for _ in 0..probes {
            let addr = self.subnet.address_at(candidate);
            if self.try_reserve(addr, pod_id)? {
                self.remember_last_reserved(addr)?;
                return Ok(addr);
            }
            candidate = next_in_range(candidate, first, last);
        }
        Err(NetError::SubnetFull {
            subnet: self.subnet.to_string(),
            pod_id: pod_id.to_owned(),
        })
    }

    /// Frees every address held by `pod_id`; freeing nothing is fine.
    pub fn release(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        let held = self.addresses_of(pod_id)?;
        for addr in &held {
            let path = self.dir.join(addr.to_string());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ipam_error(&path, source)),
            }
        }
        Ok(held)
    }

    /// The addresses `pod_id` holds in this subnet.
    pub fn addresses_of(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|(_, owner)| owner == pod_id)
            .map(|(addr, _)| addr)
            .collect())
    }

    /// Every allocated address with the pod holding it (empty if a crash cut the
    /// write short: such an address stays taken rather than risk a duplicate).
    /// A pool removed meanwhile (an earlier subnet retired) has none.
    pub fn leases(&self) -> Result<Vec<(IpAddr, String)>, NetError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ipam_error(&self.dir, source)),
        };
        let mut leases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ipam_error(&self.dir, source))?;
            let Some(addr) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(owner) => leases.push((addr, owner)),
                // Released meanwhile by another caller.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ipam_error(&entry.path(), source)),
            }
        }
        leases.sort();
        Ok(leases)
    }

    /// No pod holds an address here.
    pub fn is_unused(&self) -> Result<bool, NetError> {
        Ok(self.leases()?.is_empty())
    }

    /// Deletes the pool, for that of an earlier subnet once [`Self::is_unused`]
    /// (nothing allocates there any more, so it stays unused). Idempotent.
    pub fn remove(&self) -> Result<(), NetError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ipam_error(&self.dir, source)),
        }
    }

    /// Held in an overlapping pool: leased there, or its gateway while it exists.
    fn taken_elsewhere(&self, addr: IpAddr) -> bool {
        self.overlapping.iter().any(|(subnet, dir)| {
            dir.join(addr.to_string()).exists() || (subnet.gateway() == addr && dir.exists())
        })
    }

    /// Creates the address file; false when another pod holds the address.
    fn try_reserve(&self, addr: IpAddr, pod_id: &str) -> Result<bool, NetError> {
        if self.taken_elsewhere(addr) {
            return Ok(false);
        }
        let path = self.dir.join(addr.to_string());
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(ipam_error(&path, source)),
        };
        let written = file
            .write_all(pod_id.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            // Not reserved after all: leave no half-written lease behind.
            let _ = fs::remove_file(&path);
            return Err(ipam_error(&path, source));
        }
        Ok(true)
    }

    fn last_reserved(&self) -> Option<u128> {
        let text = fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?;
        let addr: IpAddr = text.trim().parse().ok()?;
        self.subnet.contains(addr).then(|| Subnet::value_of(addr))
    }

    /// Written to a temp file and renamed so a reader never sees half an address;
    /// the temp name carries the address just reserved, which no one else holds.
    fn remember_last_reserved(&self, addr: IpAddr) -> Result<(), NetError> {
        let temp = self.dir.join(format!(".{LAST_RESERVED}.{addr}"));
        let path = self.dir.join(LAST_RESERVED);
        let write = || -> io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(addr.to_string().as_bytes())?;
            fs::rename(&temp, &path)
        };
        write().map_err(|source| ipam_error(&path, source))
    }
}

/// `10.88.0.0_16`: the subnet with '_' for '/', which a file name cannot hold.
fn pool_dir_name(subnet: Subnet) -> String {
    format!("{}_{}", subnet.network(), subnet.prefix())
}

fn subnet_of_pool_dir(name: &str) -> Option<Subnet> {
    let (network, prefix) = name.rsplit_once('_')?;
    format!("{network}/{prefix}").parse().ok()
}

fn next_in_range(value: u128, first: u128, last: u128) -> u128 {
    if value >= last { first } else { value + 1 }
}

fn ipam_error(path: &Path, source: io::Error) -> NetError {
    NetError::Ipam {
        path: path.to_owned(),
        source,
    }
}

/// The pools new addresses come from (one subnet, or one per family for dual
/// stack), and those of earlier subnets still on disk under the same root.
#[derive(Debug, Clone)]
pub struct Ipam {
    root: PathBuf,
    pools: Vec<SubnetPool>,
}

impl Ipam {
    pub fn open(root: &Path, subnets: &[Subnet]) -> Result<Self, NetError> {
        let existing = SubnetPool::existing(root)?;
        let mut pools = Vec::with_capacity(subnets.len());
        for &subnet in subnets {
            let mut pool = SubnetPool::open(root, subnet)?;
            pool.overlapping = existing
                .iter()
                .filter(|other| other.subnet != subnet && other.subnet.overlaps(&subnet))
                .map(|other| (other.subnet, other.dir.clone()))
                .collect();
            pools.push(pool);
        }
        Ok(Self {
            root: root.to_owned(),
            pools,
        })
    }

    /// The pools addresses are allocated from.
    pub fn pools(&self) -> &[SubnetPool] {
        &self.pools
    }

    /// Every pool on disk: the current ones and those of earlier subnets.
    pub fn all_pools(&self) -> Result<Vec<SubnetPool>, NetError> {
        SubnetPool::existing(&self.root)
    }

    /// The pools on disk of subnets no longer allocated from.
    pub fn earlier_pools(&self) -> Result<Vec<SubnetPool>, NetError> {
        let mut pools = self.all_pools()?;
        pools.retain(|pool| !self.allocates_from(pool.subnet));
        Ok(pools)
    }

    /// One address per subnet for `pod_id`, all or none.
    pub fn allocate(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        let mut addrs = Vec::with_capacity(self.pools.len());
        for pool in &self.pools {
            match pool.allocate(pod_id) {
                Ok(addr) => addrs.push(addr),
                Err(err) => {
                    if let Err(cleanup) = self.release(pod_id) {
                        tracing::warn!(pod_id, %cleanup, "release after a failed allocation");
                    }
                    return Err(err);
                }
            }
        }
        Ok(addrs)
    }

    /// Frees all of `pod_id`'s addresses, in every pool on disk. Idempotent.
    pub fn release(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        Ok(self
            .release_by_subnet(pod_id)?
            .into_iter()
            .map(|(_, addr)| addr)
            .collect())
    }

    /// [`Self::release`], each address with the subnet of the pool it was in.
    pub fn release_by_subnet(&self, pod_id: &str) -> Result<Vec<(Subnet, IpAddr)>, NetError> {
        let mut freed = Vec::new();
        for pool in self.all_pools()? {
            let subnet = pool.subnet();
            freed.extend(pool.release(pod_id)?.into_iter().map(|addr| (subnet, addr)));
        }
        Ok(freed)
    }

    /// Whether new addresses come from `subnet`.
    pub fn allocates_from(&self, subnet: Subnet) -> bool {
        self.pools.iter().any(|pool| pool.subnet == subnet)
    }

    /// The addresses `pod_id` holds in any pool on disk, current pools first.
    pub fn addresses_of(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        let mut addrs = Vec::new();
        for pool in &self.pools {
            addrs.extend(pool.addresses_of(pod_id)?);
        }
        for pool in self.earlier_pools()? {
            addrs.extend(pool.addresses_of(pod_id)?);
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &Path, subnet: &str) -> SubnetPool {
        SubnetPool::open(dir, subnet.parse().unwrap()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn allocation_starts_after_the_gateway_and_never_repeats() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/24");
        assert_eq!(pool.allocate("a").unwrap(), ip("10.1.0.2"));
        assert_eq!(pool.allocate("b").unwrap(), ip("10.1.0.3"));
        assert_eq!(pool.addresses_of("b").unwrap(), [ip("10.1.0.3")]);
        let owner = fs::read_to_string(pool.dir.join("10.1.0.2")).unwrap();
        assert_eq!(owner, "a");
    }

    #[test]
    fn freed_address_is_not_reused_at_once() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/24");
        let a = pool.allocate("a").unwrap();
        pool.release("a").unwrap();
        let b = pool.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(b, ip("10.1.0.3"));
    }

    #[test]
    fn allocation_wraps_around_and_skips_taken_addresses() {
        let temp = tempfile::tempdir().unwrap();
        // 10.1.0.0/29: gateway .1, pods .2-.6, .7 is broadcast.
        let pool = pool(temp.path(), "10.1.0.0/29");
        let got: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|pod| pool.allocate(pod).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"].map(ip)
        );
        pool.release("b").unwrap();
        pool.release("d").unwrap();
        // The next after .6 wraps to .2 (taken), then .3 (free).
        assert_eq!(pool.allocate("f").unwrap(), ip("10.1.0.3"));
        assert_eq!(pool.allocate("g").unwrap(), ip("10.1.0.5"));
    }

    #[test]
    fn full_subnet_is_a_clear_error_and_never_hands_out_reserved_addresses() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/30");
        assert_eq!(pool.allocate("a").unwrap(), ip("10.1.0.2"));
        let err = pool.allocate("b").unwrap_err();
        assert!(matches!(err, NetError::SubnetFull { .. }), "{err}");
        assert!(err.to_string().contains("10.1.0.0/30 is full"), "{err}");
        for reserved in ["10.1.0.0", "10.1.0.1", "10.1.0.3"] {
            assert!(!pool.dir.join(reserved).exists(), "{reserved} handed out");
        }
    }

    #[test]
    fn release_is_idempotent_and_frees_only_that_pod() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/24");
        pool.allocate("a").unwrap();
        let b = pool.allocate("b").unwrap();
        assert_eq!(pool.release("a").unwrap().len(), 1);
        assert!(pool.release("a").unwrap().is_empty());
        assert!(pool.release("never-seen").unwrap().is_empty());
        assert_eq!(pool.leases().unwrap(), [(b, "b".to_owned())]);
    }

    #[test]
    fn state_survives_a_restart() {
        let temp = tempfile::tempdir().unwrap();
        let first = pool(temp.path(), "10.1.0.0/24");
        let a = first.allocate("a").unwrap();
        drop(first);
        let second = pool(temp.path(), "10.1.0.0/24");
        let b = second.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(second.addresses_of("a").unwrap(), [a]);
    }

    #[test]
    fn a_lease_file_created_elsewhere_is_respected() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/24");
        // Another process took .2 between our scans.
        fs::write(pool.dir.join("10.1.0.2"), "other").unwrap();
        assert_eq!(pool.allocate("a").unwrap(), ip("10.1.0.3"));
    }

    #[test]
    fn concurrent_allocations_get_distinct_addresses() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_owned();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    // Each thread opens its own pool, like separate processes would.
                    let pool = pool(&root, "10.1.0.0/24");
                    (0..10)
                        .map(|j| pool.allocate(&format!("pod-{i}-{j}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<IpAddr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "an address was handed out twice");
    }

    #[test]
    fn dual_stack_allocates_one_per_family_or_none() {
        let temp = tempfile::tempdir().unwrap();
        let subnets = [
            "10.1.0.0/30".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        let ipam = Ipam::open(temp.path(), &subnets).unwrap();
        let addrs = ipam.allocate("a").unwrap();
        assert_eq!(addrs, [ip("10.1.0.2"), ip("fd00:1::2")]);
        // v4 is now full: b gets nothing, not a dangling v6 address.
        assert!(ipam.allocate("b").is_err());
        assert!(ipam.addresses_of("b").unwrap().is_empty());
        assert_eq!(ipam.release("a").unwrap().len(), 2);
        assert!(ipam.addresses_of("a").unwrap().is_empty());
    }

    #[test]
    fn addresses_of_an_earlier_subnet_are_released_and_never_handed_out_twice() {
        let temp = tempfile::tempdir().unwrap();
        let old = Ipam::open(temp.path(), &["10.1.0.0/16".parse().unwrap()]).unwrap();
        // A pod of the old range holds 10.1.4.2, inside the new range.
        fs::write(temp.path().join("10.1.0.0_16/10.1.4.2"), "old-pod").unwrap();
        assert_eq!(old.addresses_of("old-pod").unwrap(), [ip("10.1.4.2")]);
        let new = Ipam::open(temp.path(), &["10.1.4.0/24".parse().unwrap()]).unwrap();
        assert_eq!(new.allocate("a").unwrap(), [ip("10.1.4.3")]);
        assert_eq!(new.addresses_of("old-pod").unwrap(), [ip("10.1.4.2")]);
        let earlier: Vec<_> = new
            .earlier_pools()
            .unwrap()
            .iter()
            .map(|pool| pool.subnet().to_string())
            .collect();
        assert_eq!(earlier, ["10.1.0.0/16"]);
        assert!(!new.earlier_pools().unwrap()[0].is_unused().unwrap());
        assert_eq!(new.release("old-pod").unwrap(), [ip("10.1.4.2")]);
        let old_pool = &new.earlier_pools().unwrap()[0];
        assert!(old_pool.is_unused().unwrap());
        old_pool.remove().unwrap();
        // Removed under a scan that listed it: it simply holds nothing.
        assert!(old_pool.leases().unwrap().is_empty());
        assert!(new.release("old-pod").unwrap().is_empty());
        assert!(new.earlier_pools().unwrap().is_empty());
        assert!(!temp.path().join("10.1.0.0_16").exists());
    }

    #[test]
    fn a_new_subnet_skips_the_gateway_of_an_earlier_one_it_covers() {
        let temp = tempfile::tempdir().unwrap();
        Ipam::open(temp.path(), &["10.1.4.0/24".parse().unwrap()]).unwrap();
        // 10.0.0.0/8 covers 10.1.4.1, the old bridge address; start the scan just before it.
        let new = Ipam::open(temp.path(), &["10.0.0.0/8".parse().unwrap()]).unwrap();
        fs::write(new.pools()[0].dir.join(LAST_RESERVED), "10.1.4.0").unwrap();
        assert_eq!(new.allocate("a").unwrap(), [ip("10.1.4.2")]);
    }

    #[test]
    fn a_corrupt_last_reserved_file_falls_back_to_the_start() {
        let temp = tempfile::tempdir().unwrap();
        let pool = pool(temp.path(), "10.1.0.0/24");
        fs::write(pool.dir.join(LAST_RESERVED), "garbage").unwrap();
        assert_eq!(pool.allocate("a").unwrap(), ip("10.1.0.2"));
        fs::write(pool.dir.join(LAST_RESERVED), "192.168.0.1").unwrap();
        assert_eq!(pool.allocate("b").unwrap(), ip("10.1.0.3"));
    }
}
