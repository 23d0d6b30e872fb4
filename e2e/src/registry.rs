//! A real registry (Debian's `docker-registry`, distribution 2.8) on a free
//! 127.0.0.1 port, loaded with the deterministic images of `hack/test-images`.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::workspace_root;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;

/// Every manifest type: distribution 2.8 answers 404 for an OCI manifest or index
/// unless asked for it, and converts a schema2 manifest to schema1 unless asked.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// One image of `images.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestImage {
    pub repo: String,
    pub tag: String,
    /// Digest of the manifest, or of the index for a multi-platform image.
    pub digest: String,
    pub media_type: String,
}

/// The built test images: `$CORACLE_TEST_IMAGES`, or `target/test-images`, built
/// by `hack/test-images/build.py` the first time it is needed.
pub fn test_images_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CORACLE_TEST_IMAGES") {
        return Ok(PathBuf::from(dir));
    }
    let dir = workspace_root().join("target/test-images");
    if !dir.join("images.json").exists() {
        build_test_images(&dir)?;
    }
    Ok(dir)
}

/// Builds into a temp dir and renames it into place, so concurrent test processes
/// never see a half-built directory.
fn build_test_images(dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().context("test images dir has a parent")?;
    fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".test-images-")
        .tempdir_in(parent)?;
    let out = staging.path().join("out");
    run_checked(
        Command::new("python3")
            .arg(workspace_root().join("hack/test-images/build.py"))
            .arg(&out),
    )?;
    match fs::rename(&out, dir) {
        Ok(()) => Ok(()),
        // Another test process finished first; its build is byte-identical.
        Err(_) if dir.join("images.json").exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("move test images into {}", dir.display())),
    }
}

pub fn load_test_images(dir: &Path) -> anyhow::Result<Vec<TestImage>> {
    let path = dir.join("images.json");
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    entries
        .iter()
        .map(|entry| {
            let field = |name: &str| {
                entry[name]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{} lacks {name}: {entry}", path.display()))
            };
            Ok(TestImage {
                repo: field("repo")?,
                tag: field("tag")?,
                digest: field("digest")?,
                media_type: field("mediaType")?,
            })
        })
        .collect()
}

/// A running registry holding every test image. Dropping it kills the process.
pub struct Registry {
    dir: TempDir,
    child: Child,
    address: String,
    images: Vec<TestImage>,
}

impl Registry {
    /// A registry holding the `hack/test-images` images.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_images(&test_images_dir()?)
    }

    /// A registry holding the images of `images_dir` (an `images.json` and its OCI
    /// layouts, as `hack/test-images/build.py` writes them).
    pub fn start_with_images(images_dir: &Path) -> anyhow::Result<Self> {
        let images_dir = images_dir.to_owned();
        let images = load_test_images(&images_dir)?;
        let dir = tempfile::Builder::new()
            .prefix("coracle-registry-")
            .tempdir()?;
        let (child, address) = start_on_free_port(dir.path())?;
        let registry = Self {
            dir,
            child,
            address,
            images,
        };
        run_checked(
            Command::new("python3")
                .arg(workspace_root().join("hack/test-images/push.py"))
                .arg(&images_dir)
                .arg(&registry.address),
        )?;
        Ok(registry)
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn images(&self) -> &[TestImage] {
        &self.images
    }

    pub fn image(&self, repo: &str, tag: &str) -> anyhow::Result<&TestImage> {
        self.images
            .iter()
            .find(|image| image.repo == repo && image.tag == tag)
            .with_context(|| format!("no test image {repo}:{tag}"))
    }

    /// `127.0.0.1:PORT/repo:tag`, as a pod spec would name it.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.address)
    }

    /// The digest the registry serves for `repo` at `reference` (a tag or digest).
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> anyhow::Result<String> {
        let response = http_request(
            &self.address,
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", MANIFEST_ACCEPT)],
        )?;
        if response.status != 200 {
            bail!("HEAD {repo}:{reference}: status {}", response.status);
        }
        response
            .header("docker-content-digest")
            .map(str::to_owned)
            .context("no Docker-Content-Digest header")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Restarts the registry on the same port and storage with htpasswd basic auth:
    /// `user` with the bcrypt `hash` of its password. The images stay.
    pub fn require_basic_auth(&mut self, user: &str, bcrypt_hash: &str) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let htpasswd = self.dir.path().join("htpasswd");
        fs::write(&htpasswd, format!("{user}:{bcrypt_hash}\n"))?;
        let config_path = self.dir.path().join("config.yml");
        let mut config = fs::read_to_string(&config_path)?;
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: coracle-test\n    path: {}\n",
            htpasswd.display()
        ));
        fs::write(&config_path, config)?;
        let log = fs::File::create(self.dir.path().join("registry.log"))?;
        self.child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        // Up once /v2/ asks for credentials.
        while !http_request(&self.address, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 401) {
            if Instant::now() > deadline {
                bail!("registry with auth did not start; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_on_free_port(dir: &Path) -> anyhow::Result<(Child, String)> {
    let template =
        fs::read_to_string(workspace_root().join("hack/test-images/registry-config.yml.in"))
            .context("read registry config template")?;
    let storage = dir.join("storage");
    fs::create_dir_all(&storage)?;
    let mut last_error = None;
    // Another process may take the port between our probe and the registry's bind.
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let config = template
            .replace("@PORT@", &port.to_string())
            .replace("@ROOT@", &storage.to_string_lossy());
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config)?;
        let log = fs::File::create(dir.join("registry.log"))?;
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {REGISTRY_BIN} (apt-get install docker-registry)"))?;
        let address = format!("127.0.0.1:{port}");
        match wait_until_ready(&mut child, &address) {
            Ok(()) => return Ok((child, address)),
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = Some(err);
            }
        }
    }
    let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    Err(last_error
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
        .context(format!("registry did not start; log:\n{log}")))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until_ready(child: &mut Child, address: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("registry exited with {status}");
        }
        if http_request(address, "GET", "/v2/", &[]).is_ok_and(|r| r.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("registry at {address} not ready within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A minimal HTTP/1.1 client for probing the registry (no body sent, connection
/// closed after one request).
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty HTTP response")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
