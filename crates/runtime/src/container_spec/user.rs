//! The process user: uid, gid and additional gids, resolved as containerd does
//! (`oci.WithUser`, `oci.WithAdditionalGIDs`, `WithSupplementalGroups` and
//! `util.GenerateUserString`), from the image's own `/etc/passwd` and `/etc/group`, read
//! inside the rootfs with pathrs so a symlinked file cannot point at the host's.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;
use pathrs::Root;
use pathrs::flags::OpenFlags;

use super::SpecError;
use crate::model::{ResolvedUser, SecuritySpec, SupplementalGroupsPolicy};

/// The largest uid/gid: 2^32 - 1 is `(uid_t) -1`, "no id", and cannot be used.
const MAX_ID: i64 = 4_294_967_294;

/// /etc/passwd or /etc/group larger than this is refused rather than read.
const MAX_DB_FILE: u64 = 16 << 20;

/// The resolved user plus what the environment needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ContainerUser {
    pub resolved: ResolvedUser,
    /// Home directory from the uid's passwd entry, if it has one.
    pub home: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The rootfs's user database; `None` when the file does not exist.
struct UserDb {
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl UserDb {
    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_deref()?.iter().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.as_deref()?.iter().find(|u| u.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.as_deref()?.iter().find(|g| g.name == name)
    }

    /// Groups listing `user` as a member, except the one named like the user (its own
    /// primary group, as containerd skips it).
    fn supplementary_gids(&self, user: &str) -> Vec<u32> {
        self.group
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|g| g.name != user && g.members.iter().any(|m| m == user))
            .map(|g| g.gid)
            .collect()
    }
}

/// A user or group as a string gives it: a number or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IdOrName {
    Id(u32),
    Name(String),
}

/// What the request (or image) asks the process to run as, before resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UserRequest {
    user: IdOrName,
    group: Option<IdOrName>,
    /// The field it came from, for errors.
    field: &'static str,
}

pub(super) fn resolve_user(
    root: &Root,
    rootfs: &Path,
    security: &SecuritySpec,
    image_user: &str,
) -> Result<ContainerUser, SpecError> {
    let request = requested_user(security, image_user)?;
    let db = UserDb {
        passwd: read_rootfs_file(root, rootfs, "etc/passwd")?.map(|s| parse_passwd(&s)),
        group: read_rootfs_file(root, rootfs, "etc/group")?.map(|s| parse_group(&s)),
    };
    let (uid, gid) = match &request {
        Some(r) => resolve_ids(r, &db)?,
        None => (0, 0),
    };
    let mut gids = BTreeSet::from([gid]);
    if security.supplemental_groups_policy == SupplementalGroupsPolicy::Merge {
        if let Some(name) = groups_user_name(security, image_user, &db) {
            gids.extend(db.supplementary_gids(&name));
        }
    }
    for g in &security.supplemental_groups {
        gids.insert(check_id(*g, "supplemental_groups")?);
    }
    Ok(ContainerUser {
        resolved: ResolvedUser {
            uid,
            gid,
            additional_gids: gids.into_iter().collect(),
        },
        home: db.user_by_uid(uid).map(|u| u.home.clone()),
    })
}

/// containerd's precedence: run_as_username, then run_as_user, then the image's USER;
/// run_as_group only with a user from the request ("user group is specified without user").
fn requested_user(
    security: &SecuritySpec,
    image_user: &str,
) -> Result<Option<UserRequest>, SpecError> {
    let group = security
        .run_as_group
        .map(|g| check_id(g, "run_as_group").map(IdOrName::Id))
        .transpose()?;
    let user = if !security.run_as_username.is_empty() {
        if security.run_as_username.contains(':') {
            return Err(SpecError::invalid(
                "run_as_username",
                format!("{:?} contains ':'", security.run_as_username),
            ));
        }
        Some((
            parse_id_or_name(&security.run_as_username, "run_as_username")?,
            "run_as_username",
        ))
    } else if let Some(uid) = security.run_as_user {
        Some((IdOrName::Id(check_id(uid, "run_as_user")?), "run_as_user"))
    } else {
        None
    };
    match (user, group) {
        (Some((user, field)), group) => Ok(Some(UserRequest { user, group, field })),
        (None, Some(_)) => Err(SpecError::invalid(
            "run_as_group",
            "a group is given without run_as_user or run_as_username",
        )),
        (None, None) if image_user.is_empty() => Ok(None),
        (None, None) => parse_image_user(image_user).map(Some),
    }
}

/// The image's USER: `user`, `uid`, `user:group`, `uid:gid`, `uid:group`, `user:gid`.
fn parse_image_user(s: &str) -> Result<UserRequest, SpecError> {
    const FIELD: &str = "image config User";
    let mut parts = s.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if parts.next().is_some() || user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(SpecError::invalid(
            FIELD,
            format!("{s:?} is not user[:group]"),
        ));
    }
    Ok(UserRequest {
        user: parse_id_or_name(user, FIELD)?,
        group: group.map(|g| parse_id_or_name(g, FIELD)).transpose()?,
        field: FIELD,
    })
}

/// A string of digits (with an optional minus) is an id and must fit; anything else is a name.
fn parse_id_or_name(s: &str, field: &'static str) -> Result<IdOrName, SpecError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(IdOrName::Name(s.to_string()));
    }
    let id = s
        .parse::<i64>()
        .map_err(|_| SpecError::invalid(field, format!("id {s} is out of range 0..={MAX_ID}")))?;
    check_id(id, field).map(IdOrName::Id)
}

pub(super) fn check_id(id: i64, field: &'static str) -> Result<u32, SpecError> {
    if !(0..=MAX_ID).contains(&id) {
        return Err(SpecError::invalid(
            field,
            format!("id {id} is out of range 0..={MAX_ID}"),
        ));
    }
    u32::try_from(id).map_err(|_| SpecError::invalid(field, format!("id {id} does not fit")))
}

/// uid and gid as `oci.WithUser` finds them: a lone uid takes the gid of its passwd
/// entry (0 when it has none); a lone name must exist and takes its entry's gid; with a
/// group, names are looked up and numbers taken as they are.
fn resolve_ids(r: &UserRequest, db: &UserDb) -> Result<(u32, u32), SpecError> {
    let unknown_user = |name: &str| {
        SpecError::invalid(
            r.field,
            format!("no user {name:?} in the image's /etc/passwd"),
        )
    };
    match (&r.user, &r.group) {
        (IdOrName::Id(uid), None) => Ok((*uid, db.user_by_uid(*uid).map_or(0, |u| u.gid))),
        (IdOrName::Name(name), None) => db
            .user_by_name(name)
            .map(|u| (u.uid, u.gid))
            .ok_or_else(|| unknown_user(name)),
        (user, Some(group)) => {
            let uid = match user {
                IdOrName::Id(uid) => *uid,
                IdOrName::Name(name) => {
                    db.user_by_name(name).ok_or_else(|| unknown_user(name))?.uid
                }
            };
            let gid = match group {
                IdOrName::Id(gid) => *gid,
                IdOrName::Name(name) => {
                    db.group_by_name(name)
                        .ok_or_else(|| {
                            SpecError::invalid(
                                r.field,
                                format!("no group {name:?} in the image's /etc/group"),
                            )
                        })?
                        .gid
                }
            };
            Ok((uid, gid))
        }
    }
}

/// The user name whose /etc/group memberships are merged (containerd passes the user
/// part alone: username, else uid, else the image USER's user, else "0").
fn groups_user_name(security: &SecuritySpec, image_user: &str, db: &UserDb) -> Option<String> {
    let userstr = if !security.run_as_username.is_empty() {
        security.run_as_username.clone()
    } else if let Some(uid) = security.run_as_user {
        uid.to_string()
    } else {
        match image_user.split(':').next() {
            Some(u) if !u.is_empty() => u.to_string(),
            _ => "0".to_string(),
        }
    };
    match userstr.parse::<u32>() {
        Ok(uid) => db.user_by_uid(uid).map(|u| u.name.clone()),
        Err(_) => Some(userstr),
    }
}

/// `name:password:uid:gid:gecos:home:shell`; lines that do not parse are skipped (as
/// runc's and Go's parsers do).
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    db_lines(text)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
                home: f.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    db_lines(text)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn db_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
}

/// Reads a small regular file inside the rootfs; `None` when it does not exist. The
/// path is resolved in the root (a symlink to `/etc/shadow` of the host stays inside),
/// and only a regular file is opened (a FIFO or device would block or do things).
fn read_rootfs_file(root: &Root, rootfs: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let path = PathBuf::from("/").join(rel);
    let rootfs_err = |op: &'static str| {
        let path = path.clone();
        move |source| SpecError::Rootfs {
            op,
            rootfs: rootfs.to_path_buf(),
            path,
            source,
        }
    };
    let handle = match root.resolve(rel) {
        Ok(h) => h,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(rootfs_err("resolve")(e)),
    };
    let st = nix::sys::stat::fstat(handle.as_fd())
        .map_err(|e| SpecError::io("stat", rootfs.join(rel))(e.into()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SpecError::invalid(
            "rootfs",
            format!("{} in the image is not a regular file", path.display()),
        ));
    }
    let file = handle
        .reopen(OpenFlags::O_RDONLY)
        .map_err(rootfs_err("open"))?;
    let mut bytes = Vec::new();
    file.take(MAX_DB_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(SpecError::io("read", rootfs.join(rel)))?;
    if bytes.len() as u64 > MAX_DB_FILE {
        return Err(SpecError::invalid(
            "rootfs",
            format!(
                "{} in the image is larger than {MAX_DB_FILE} bytes",
                path.display()
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn is_missing(e: &pathrs::error::Error) -> bool {
    matches!(
        e.kind(),
        pathrs::error::ErrorKind::OsError(Some(nix::libc::ENOENT | nix::libc::ENOTDIR))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nohome:x:1001:1001::\n\
        broken:x:notanumber:1\n";
    const GROUP: &str = "root:x:0:\n\
        app:x:1000:app\n\
        staff:x:50:app,other\n\
        video:x:44:other, app\n\
        nohome:x:1001:\n";

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    fn resolve(
        dir: &Path,
        sec: &SecuritySpec,
        image_user: &str,
    ) -> Result<ContainerUser, SpecError> {
        let root = Root::open(dir).unwrap();
        resolve_user(&root, dir, sec, image_user)
    }

    fn user(uid: u32, gid: u32, gids: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
        }
    }

    #[test]
    fn image_user_name_takes_uid_gid_home_and_merged_groups() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve(dir.path(), &SecuritySpec::default(), "app").unwrap();
        // staff and video list app; the group named "app" is its own and is the gid.
        assert_eq!(u.resolved, user(1000, 1000, &[44, 50, 1000]));
        assert_eq!(u.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn numeric_uid_gid_is_taken_as_given() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve(dir.path(), &SecuritySpec::default(), "1000:7").unwrap();
        assert_eq!(u.resolved, user(1000, 7, &[7, 44, 50]));
    }

    #[test]
    fn name_and_group_name_are_both_looked_up() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let u = resolve(dir.path(), &SecuritySpec::default(), "app:staff").unwrap();
        assert_eq!(u.resolved.uid, 1000);
        assert_eq!(u.resolved.gid, 50);
        let u = resolve(dir.path(), &SecuritySpec::default(), "1001:video").unwrap();
        assert_eq!((u.resolved.uid, u.resolved.gid), (1001, 44));
    }

    #[test]
    fn unknown_user_name_is_an_error() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let err = resolve(dir.path(), &SecuritySpec::default(), "nobody").unwrap_err();
        assert!(err.to_string().contains("no user \"nobody\""), "{err}");
        let sec = SecuritySpec {
            run_as_username: "ghost".into(),
            ..Default::default()
        };
        let err = resolve(dir.path(), &sec, "").unwrap_err();
        assert!(err.to_string().contains("run_as_username"), "{err}");
    }

    #[test]
    fn unknown_group_name_is_an_error() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let err = resolve(dir.path(), &SecuritySpec::default(), "app:wheel").unwrap_err();
        assert!(err.to_string().contains("no group \"wheel\""), "{err}");
    }

    #[test]
    fn uid_too_large_or_negative_is_an_error() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        for bad in [4_294_967_295, -1] {
            let sec = SecuritySpec {
                run_as_user: Some(bad),
                ..Default::default()
            };
            let err = resolve(dir.path(), &sec, "").unwrap_err();
            assert!(err.to_string().contains("run_as_user"), "{err}");
        }
        let err = resolve(dir.path(), &SecuritySpec::default(), "4294967295").unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let err = resolve(
            dir.path(),
            &SecuritySpec::default(),
            "1:99999999999999999999",
        )
        .unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let sec = SecuritySpec {
            run_as_user: Some(1),
            supplemental_groups: vec![-3],
            ..Default::default()
        };
        let err = resolve(dir.path(), &sec, "").unwrap_err();
        assert!(err.to_string().contains("supplemental_groups"), "{err}");
    }

    #[test]
    fn run_as_user_overrides_image_user_and_finds_its_gid() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_user: Some(1001),
            ..Default::default()
        };
        let u = resolve(dir.path(), &sec, "app").unwrap();
        assert_eq!(u.resolved, user(1001, 1001, &[1001]));
        assert_eq!(u.home.as_deref(), Some(""));
    }

    #[test]
    fn run_as_username_wins_over_run_as_user() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_user: Some(0),
            run_as_username: "app".into(),
            ..Default::default()
        };
        assert_eq!(resolve(dir.path(), &sec, "").unwrap().resolved.uid, 1000);
    }

    #[test]
    fn run_as_group_overrides_the_gid() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_username: "app".into(),
            run_as_group: Some(3000),
            ..Default::default()
        };
        let u = resolve(dir.path(), &sec, "").unwrap();
        assert_eq!(u.resolved, user(1000, 3000, &[44, 50, 3000]));
    }

    #[test]
    fn run_as_group_without_a_user_is_an_error() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_group: Some(3000),
            ..Default::default()
        };
        // Even when the image has a USER (containerd: "user group is specified without user").
        let err = resolve(dir.path(), &sec, "app").unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");
    }

    #[test]
    fn merge_policy_adds_image_groups_and_supplemental_groups() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_user: Some(1000),
            supplemental_groups: vec![2000, 50, 2000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Merge,
            ..Default::default()
        };
        let u = resolve(dir.path(), &sec, "").unwrap();
        assert_eq!(u.resolved.additional_gids, vec![44, 50, 1000, 2000]);
    }

    #[test]
    fn strict_policy_keeps_only_primary_and_supplemental_groups() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let sec = SecuritySpec {
            run_as_user: Some(1000),
            supplemental_groups: vec![2000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict,
            ..Default::default()
        };
        let u = resolve(dir.path(), &sec, "").unwrap();
        assert_eq!(u.resolved.additional_gids, vec![1000, 2000]);
    }

    #[test]
    fn no_passwd_means_numeric_ids_only() {
        let dir = rootfs(None, None);
        let u = resolve(dir.path(), &SecuritySpec::default(), "").unwrap();
        assert_eq!(
            u,
            ContainerUser {
                resolved: user(0, 0, &[0]),
                home: None,
            }
        );
        let u = resolve(dir.path(), &SecuritySpec::default(), "123").unwrap();
        assert_eq!(u.resolved, user(123, 0, &[0]));
        let err = resolve(dir.path(), &SecuritySpec::default(), "app").unwrap_err();
        assert!(err.is_invalid_argument(), "{err}");
    }

    #[test]
    fn passwd_symlink_to_host_file_stays_in_rootfs() {
        // /etc/passwd -> /etc/hostpasswd resolves inside the rootfs, never to the host's.
        let dir = rootfs(None, None);
        std::fs::write(
            dir.path().join("etc/hostpasswd"),
            "inside:x:4242:4242::/in:/bin/sh\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/hostpasswd", dir.path().join("etc/passwd")).unwrap();
        let u = resolve(dir.path(), &SecuritySpec::default(), "inside").unwrap();
        assert_eq!(u.resolved.uid, 4242);
        // A symlink climbing out with .. stops at the rootfs root.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(
            "../../../../../../etc/hostpasswd",
            dir.path().join("etc/passwd"),
        )
        .unwrap();
        let u = resolve(dir.path(), &SecuritySpec::default(), "inside").unwrap();
        assert_eq!(u.resolved.uid, 4242);
    }

    #[test]
    fn passwd_that_is_not_a_regular_file_is_refused() {
        let dir = rootfs(None, None);
        std::fs::create_dir(dir.path().join("etc/passwd")).unwrap();
        let err = resolve(dir.path(), &SecuritySpec::default(), "").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn malformed_image_user_is_an_error() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        for bad in ["a:b:c", ":0", "app:"] {
            let err = resolve(dir.path(), &SecuritySpec::default(), bad).unwrap_err();
            assert!(
                err.to_string().contains("image config User"),
                "{bad}: {err}"
            );
        }
    }
}
