//! coracle-oci: a runc-compatible command line over the `coracle_oci` library, so OCI
//! conformance tools (and people used to runc) can drive Coracle's executor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coracle_oci::{Container, CreateOptions, ExecOptions, parse_signal};
use oci_spec::runtime::{LinuxResources, Process};

#[derive(Parser)]
#[command(
    name = "coracle-oci",
    version,
    about = "Coracle's OCI runtime (runc-compatible CLI)"
)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/coracle-oci")]
    root: PathBuf,
    /// Append errors to this file instead of only printing them.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility (cgroups are driven by cgroupsPath).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        id: String,
    },
    /// Print the OCI state JSON.
    State {
        id: String,
    },
    /// Send a signal (name or number; default SIGTERM).
    Kill {
        id: String,
        signal: Option<String>,
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Delete a stopped container (--force: kill it first).
    Delete {
        id: String,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Create and start; without --detach, wait for it, delete it, exit with its status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Run a process in a running container.
    Exec {
        id: String,
        /// Path to a process.json (runtime spec Process).
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long, short = 'e')]
        env: Vec<String>,
        /// uid[:gid]
        #[arg(long, short = 'u')]
        user: Option<String>,
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// List the container's processes.
    Ps {
        id: String,
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Update resources from a JSON LinuxResources file ("-" for stdin).
    Update {
        id: String,
        #[arg(long, short = 'r')]
        resources: PathBuf,
    },
    /// Print the features this runtime supports (runc's JSON).
    Features,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&cli, &e.to_string());
            ExitCode::from(1)
        }
    }
}

fn report(cli: &Cli, msg: &str) {
    eprintln!("coracle-oci: {msg}");
    let Some(path) = &cli.log else { return };
    let line = if cli.log_format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": coracle_oci::state::now_rfc3339()})
            .to_string()
    } else {
        format!(
            "time=\"{}\" level=error msg=\"{msg}\"",
            coracle_oci::state::now_rfc3339()
        )
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn create(cli: &Cli, a: &CreateArgs) -> Result<Container> {
    let mut opts = CreateOptions::new(&cli.root);
    opts.pid_file = a.pid_file.clone();
    opts.console_socket = a.console_socket.clone();
    Ok(Container::create(&a.id, &a.bundle, opts)?)
}

fn run(cli: &Cli) -> Result<u8> {
    let root = cli.root.as_path();
    match &cli.cmd {
        Cmd::Create(a) => {
            create(cli, a)?;
        }
        Cmd::Start { id } => Container::load(root, id)?.start()?,
        Cmd::State { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Container::load(root, id)?.oci_state())?
            );
        }
        Cmd::Kill { id, signal, all } => {
            let name = signal.as_deref().unwrap_or("SIGTERM");
            let sig = parse_signal(name).ok_or_else(|| format!("unknown signal {name:?}"))?;
            Container::load(root, id)?.kill(sig, *all)?;
        }
        Cmd::Delete { id, force } => Container::load(root, id)?.delete(*force)?,
        Cmd::Run { create: a, detach } => {
            let mut c = create(cli, a)?;
            let ran = c.start().and_then(|()| {
                if *detach {
                    Ok(None)
                } else {
                    c.wait().map(Some)
                }
            });
            match ran {
                Ok(None) => {}
                Ok(Some(code)) => {
                    c.delete(true)?;
                    return Ok(u8::try_from(code).unwrap_or(255));
                }
                Err(err) => {
                    // As runc: a run that failed leaves no container behind.
                    let _ = c.delete(true);
                    return Err(err.into());
                }
            }
        }
        Cmd::Exec {
            id,
            process,
            tty,
            pid_file,
            console_socket,
            detach,
            cwd,
            env,
            user,
            args,
        } => {
            let c = Container::load(root, id)?;
            let mut p = match process {
                Some(path) => serde_json::from_slice::<Process>(&std::fs::read(path)?)?,
                None => {
                    exec_process_from_args(&c, args, *tty, cwd.as_deref(), env, user.as_deref())?
                }
            };
            if *tty {
                p.set_terminal(Some(true));
            }
            let opts = ExecOptions {
                console_socket: console_socket.clone(),
                pid_file: pid_file.clone(),
                ..Default::default()
            };
            let proc = c.exec(p, opts)?;
            if !detach {
                return Ok(u8::try_from(proc.wait()?).unwrap_or(255));
            }
        }
        Cmd::Ps { id, format } => {
            let pids = Container::load(root, id)?.pids()?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
        }
        Cmd::Pause { id } => Container::load(root, id)?.pause()?,
        Cmd::Resume { id } => Container::load(root, id)?.resume()?,
        Cmd::Update { id, resources } => {
            let bytes = if resources == Path::new("-") {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                v
            } else {
                std::fs::read(resources)?
            };
            let r: LinuxResources = serde_json::from_slice(&bytes)?;
            Container::load(root, id)?.update(&r)?;
        }
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&features())?),
    }
    Ok(0)
}

/// `exec <id> args...`: the container's own process settings with these overrides.
fn exec_process_from_args(
    c: &Container,
    args: &[String],
    tty: bool,
    cwd: Option<&Path>,
    env: &[String],
    user: Option<&str>,
) -> Result<Process> {
    if args.is_empty() {
        return Err("exec needs a command or --process".into());
    }
    let mut p = c.config().process().clone().unwrap_or_default();
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(tty));
    if let Some(cwd) = cwd {
        p.set_cwd(cwd.to_path_buf());
    }
    let mut all_env = p.env().clone().unwrap_or_default();
    all_env.extend(env.iter().cloned());
    p.set_env(Some(all_env));
    if let Some(u) = user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut usr = p.user().clone();
        usr.set_uid(uid.parse()?);
        usr.set_gid(gid.parse()?);
        p.set_user(usr);
    }
    Ok(p)
}

fn features() -> serde_json::Value {
    let mount_options = [
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "dirsync",
        "exec",
        "mand",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "nomand",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "private",
        "rbind",
        "relatime",
        "remount",
        "ro",
        "rprivate",
        "rshared",
        "rslave",
        "runbindable",
        "rw",
        "shared",
        "slave",
        "strictatime",
        "suid",
        "sync",
        "unbindable",
    ];
    let caps: Vec<String> = caps::all()
        .iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mount_options.to_vec(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {"org.opencontainers.runc.version": "coracle-oci"},
    })
}
