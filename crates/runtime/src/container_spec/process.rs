//! `process`: args, env, cwd, terminal and user, as containerd's `WithProcessArgs`,
//! `WithDefaultPathEnv`/`WithEnv` and `WithProcessCwd` make them.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxCapabilities, Process, User};

use super::SpecError;
use super::image_config::ImageRuntimeConfig;
use super::user::ContainerUser;
use crate::model::ContainerSpec;

/// containerd's `defaultUnixEnv`.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) struct ProcessParts<'a> {
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageRuntimeConfig,
    pub user: &'a ContainerUser,
    pub hostname: &'a str,
    pub capabilities: &'a LinuxCapabilities,
    pub oom_score_adj: i32,
}

pub(super) fn build_process(p: &ProcessParts<'_>) -> Result<Process, SpecError> {
    let spec = p.spec;
    let args = process_args(spec, p.image)?;
    let env = process_env(&p.image.env, &spec.envs, p.hostname, p.user.home.as_deref())?;
    let cwd = working_dir(spec, p.image)?;

    let mut user = User::default();
    user.set_uid(p.user.resolved.uid);
    user.set_gid(p.user.resolved.gid);
    user.set_additional_gids(Some(p.user.resolved.additional_gids.clone()));
    user.set_umask(None);
    user.set_username(None);

    let mut process = Process::default();
    process.set_terminal(Some(spec.tty));
    process.set_console_size(None);
    process.set_user(user);
    process.set_args(Some(args));
    process.set_command_line(None);
    process.set_env(Some(env));
    process.set_cwd(cwd);
    process.set_capabilities(Some(p.capabilities.clone()));
    // containerd drops the default rlimits (containerd/cri#515): the runtime's own apply.
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(spec.security.no_new_privs));
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(Some(p.oom_score_adj));
    process.set_selinux_label(None);
    process.set_io_priority(None);
    process.set_scheduler(None);
    process.set_exec_cpu_affinity(None);
    Ok(process)
}

/// The command line (Docker's rules, as containerd's `WithProcessArgs`): a CRI command
/// replaces the image's entrypoint *and* its cmd; CRI args alone replace the image cmd
/// and keep the entrypoint. An entrypoint of `[""]` means none.
fn process_args(
    spec: &ContainerSpec,
    image: &ImageRuntimeConfig,
) -> Result<Vec<String>, SpecError> {
    let mut command = spec.command.clone();
    let mut args = spec.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        let empty_entrypoint = image.entrypoint.len() == 1 && image.entrypoint[0].is_empty();
        if !empty_entrypoint {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::invalid("command", "no command specified"));
    }
    if let Some(bad) = command.iter().find(|a| a.contains('\0')) {
        return Err(SpecError::invalid(
            "command",
            format!("{bad:?} contains a NUL byte"),
        ));
    }
    Ok(command)
}

/// PATH default, HOSTNAME, the image's env, then the request's: a later entry with the
/// same key replaces the earlier one where it stands (containerd's
/// `replaceOrAppendEnvValues`; an image entry without `=` unsets the key). HOME comes
/// last, from the user's passwd entry, when nothing set it (as runc does).
fn process_env(
    image_env: &[String],
    cri_env: &[(String, String)],
    hostname: &str,
    home: Option<&str>,
) -> Result<Vec<String>, SpecError> {
    let mut env = EnvList::default();
    env.apply(DEFAULT_PATH);
    env.apply(&format!("HOSTNAME={hostname}"));
    for e in image_env {
        env.apply(e);
    }
    for (key, value) in cri_env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(SpecError::invalid(
                "envs",
                format!("{key:?} is not a valid environment variable name or value"),
            ));
        }
        env.apply(&format!("{key}={value}"));
    }
    if !env.has("HOME") {
        let home = home.filter(|h| !h.is_empty()).unwrap_or("/");
        env.apply(&format!("HOME={home}"));
    }
    let env = env.0;
    if let Some(bad) = env.iter().find(|e| e.contains('\0')) {
        return Err(SpecError::invalid(
            "image config Env",
            format!("{bad:?} contains a NUL byte"),
        ));
    }
    Ok(env)
}

#[derive(Default)]
struct EnvList(Vec<String>);

impl EnvList {
    fn position(&self, key: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    }

    fn has(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    fn apply(&mut self, entry: &str) {
        match entry.split_once('=') {
            None => {
                if let Some(i) = self.position(entry) {
                    self.0.remove(i);
                }
            }
            Some((key, _)) => match self.position(key) {
                Some(i) => self.0[i] = entry.to_string(),
                None => self.0.push(entry.to_string()),
            },
        }
    }
}

/// The request's working dir, else the image's, else `/`; it must be absolute.
fn working_dir(spec: &ContainerSpec, image: &ImageRuntimeConfig) -> Result<PathBuf, SpecError> {
    let (dir, field) = if !spec.working_dir.is_empty() {
        (spec.working_dir.as_str(), "working_dir")
    } else if !image.working_dir.is_empty() {
        (image.working_dir.as_str(), "image config WorkingDir")
    } else {
        ("/", "working_dir")
    };
    if !dir.starts_with('/') || dir.contains('\0') {
        return Err(SpecError::invalid(
            field,
            format!("{dir:?} is not an absolute path"),
        ));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageRuntimeConfig {
        ImageRuntimeConfig {
            entrypoint: s(entrypoint),
            cmd: s(cmd),
            ..Default::default()
        }
    }

    fn container(command: &[&str], args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            command: s(command),
            args: s(args),
            ..Default::default()
        }
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_image_cmd() {
        let a = process_args(
            &container(&["/bin/app"], &[]),
            &image(&["/entry"], &["serve"]),
        );
        assert_eq!(a.unwrap(), s(&["/bin/app"]));
        let a = process_args(
            &container(&["/bin/app"], &["-v"]),
            &image(&["/entry"], &["serve"]),
        );
        assert_eq!(a.unwrap(), s(&["/bin/app", "-v"]));
    }

    #[test]
    fn args_replace_image_cmd_and_keep_entrypoint() {
        let a = process_args(&container(&[], &["-x"]), &image(&["/entry"], &["serve"]));
        assert_eq!(a.unwrap(), s(&["/entry", "-x"]));
    }

    #[test]
    fn image_entrypoint_then_cmd_by_default() {
        let a = process_args(&container(&[], &[]), &image(&["/entry"], &["serve", "-p"]));
        assert_eq!(a.unwrap(), s(&["/entry", "serve", "-p"]));
        let a = process_args(&container(&[], &[]), &image(&[], &["sh"]));
        assert_eq!(a.unwrap(), s(&["sh"]));
    }

    #[test]
    fn empty_string_entrypoint_means_no_entrypoint() {
        let a = process_args(&container(&[], &[]), &image(&[""], &["sh"]));
        assert_eq!(a.unwrap(), s(&["sh"]));
    }

    #[test]
    fn no_command_anywhere_is_an_error() {
        let err = process_args(&container(&[], &[]), &image(&[], &[])).unwrap_err();
        assert!(err.to_string().contains("no command specified"), "{err}");
        let err = process_args(&container(&["a\0b"], &[]), &image(&[], &[])).unwrap_err();
        assert!(err.is_invalid_argument(), "{err}");
    }

    #[test]
    fn env_defaults_path_and_hostname_then_image_then_request_override_in_place() {
        let env = process_env(
            &s(&["A=image", "B=image"]),
            &[("A".into(), "cri".into()), ("C".into(), "cri".into())],
            "pod-1",
            Some("/home/app"),
        )
        .unwrap();
        assert_eq!(
            env,
            s(&[
                DEFAULT_PATH,
                "HOSTNAME=pod-1",
                "A=cri",
                "B=image",
                "C=cri",
                "HOME=/home/app"
            ])
        );
    }

    #[test]
    fn image_path_replaces_the_default_path() {
        let env = process_env(&s(&["PATH=/opt/bin"]), &[], "h", None).unwrap();
        assert_eq!(env, s(&["PATH=/opt/bin", "HOSTNAME=h", "HOME=/"]));
    }

    #[test]
    fn repeated_request_env_keeps_the_last_value_once() {
        let env = process_env(
            &[],
            &[("X".into(), "1".into()), ("X".into(), "2".into())],
            "h",
            None,
        )
        .unwrap();
        assert_eq!(env.iter().filter(|e| e.starts_with("X=")).count(), 1);
        assert!(env.contains(&"X=2".to_string()));
    }

    #[test]
    fn home_is_kept_when_set_and_slash_when_unknown() {
        let env = process_env(&s(&["HOME=/data"]), &[], "h", Some("/home/app")).unwrap();
        assert!(env.contains(&"HOME=/data".to_string()));
        let env = process_env(&[], &[], "h", Some("")).unwrap();
        assert!(env.contains(&"HOME=/".to_string()));
    }

    #[test]
    fn image_env_without_equals_unsets_the_key() {
        let env = process_env(&s(&["PATH"]), &[], "h", None).unwrap();
        assert!(!env.iter().any(|e| e.starts_with("PATH")), "{env:?}");
    }

    #[test]
    fn bad_env_name_is_an_error() {
        for key in ["", "A=B", "A\0"] {
            let err = process_env(&[], &[(key.into(), "v".into())], "h", None).unwrap_err();
            assert!(err.to_string().contains("envs"), "{err}");
        }
    }

    #[test]
    fn working_dir_request_then_image_then_root() {
        let mut c = container(&[], &[]);
        let mut i = image(&[], &[]);
        assert_eq!(working_dir(&c, &i).unwrap(), PathBuf::from("/"));
        i.working_dir = "/srv".into();
        assert_eq!(working_dir(&c, &i).unwrap(), PathBuf::from("/srv"));
        c.working_dir = "/work".into();
        assert_eq!(working_dir(&c, &i).unwrap(), PathBuf::from("/work"));
        c.working_dir = "relative".into();
        assert!(working_dir(&c, &i).unwrap_err().is_invalid_argument());
    }
}
