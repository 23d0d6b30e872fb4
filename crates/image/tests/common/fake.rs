//! A tiny scriptable registry for what the real one cannot be made to do: serve a
//! corrupt blob, stall mid-blob, lack an image (a mirror), demand auth.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic {
        user: String,
        pass: String,
    },
    /// Token server at `/token`, which wants basic credentials.
    Bearer {
        user: String,
        pass: String,
        token: String,
    },
}

#[derive(Clone, Default)]
pub struct Route {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Send this many body bytes, then hang.
    pub stall_after: Option<usize>,
    /// Answer 307 with this `Location`.
    pub redirect: Option<String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    requests: Vec<String>,
}

pub struct FakeRegistry {
    address: String,
    state: Arc<Mutex<State>>,
}

impl FakeRegistry {
    pub fn start(auth: Auth) -> Self {
        Self::start_with(auth, None)
    }

    /// The same over TLS with this certificate chain and key (PEM files).
    pub fn start_tls(auth: Auth, cert: &Path, key: &Path) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .expect("read cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse cert");
        let key = PrivateKeyDer::from_pem_file(key).expect("read key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Self::start_with(auth, Some(Arc::new(config)))
    }

    fn start_with(auth: Auth, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let realm = format!("{scheme}://{address}/token");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                let auth = auth.clone();
                let realm = realm.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let mut stream = rustls::StreamOwned::new(conn, stream);
                        serve(&mut stream, &state, &auth, &realm);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => {
                        let mut stream = stream;
                        serve(&mut stream, &state, &auth, &realm);
                    }
                });
            }
        });
        Self { address, state }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn add(&self, path: &str, route: Route) {
        self.state
            .lock()
            .expect("state")
            .routes
            .insert(path.to_owned(), route);
    }

    /// Redirects every route of `other` whose path starts with `prefix` to it.
    pub fn redirect_to(&self, other: &FakeRegistry, prefix: &str) {
        let paths: Vec<String> = other
            .state
            .lock()
            .expect("state")
            .routes
            .keys()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        for path in paths {
            let location = format!("http://{}{path}", other.address());
            self.add(
                &path,
                Route {
                    redirect: Some(location),
                    ..Route::default()
                },
            );
        }
    }

    /// Keeps only the routes whose path passes `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.state
            .lock()
            .expect("state")
            .routes
            .retain(|path, _| keep(path));
    }

    /// Request targets seen so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Serves `layout` (an OCI layout of `hack/test-images`) as `repo:tag`;
    /// `edit_layer` may change the layer bytes (not their length).
    pub fn serve_image(
        &self,
        repo: &str,
        tag: &str,
        layout: &Path,
        edit_layer: impl Fn(&mut Vec<u8>),
        stall_layer_after: Option<usize>,
    ) {
        let blob = |digest: &str| {
            std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .expect("read blob")
        };
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
                .expect("parse index");
        let desc = &index["manifests"][0];
        let manifest_digest = desc["digest"].as_str().expect("digest").to_owned();
        let media_type = desc["mediaType"].as_str().expect("media type").to_owned();
        let manifest_bytes = blob(&manifest_digest);
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest_bytes).expect("manifest");
        let manifest_route = Route {
            content_type: Some(media_type),
            body: manifest_bytes,
            stall_after: None,
            redirect: None,
        };
        self.add(
            &format!("/v2/{repo}/manifests/{tag}"),
            manifest_route.clone(),
        );
        self.add(
            &format!("/v2/{repo}/manifests/{manifest_digest}"),
            manifest_route,
        );
        let config = manifest["config"]["digest"]
            .as_str()
            .expect("config")
            .to_owned();
        self.add(
            &format!("/v2/{repo}/blobs/{config}"),
            Route {
                body: blob(&config),
                ..Route::default()
            },
        );
        for layer in manifest["layers"].as_array().expect("layers") {
            let digest = layer["digest"].as_str().expect("layer digest");
            let mut body = blob(digest);
            edit_layer(&mut body);
            self.add(
                &format!("/v2/{repo}/blobs/{digest}"),
                Route {
                    body,
                    stall_after: stall_layer_after,
                    ..Route::default()
                },
            );
        }
    }
}

fn serve(stream: &mut (impl Read + Write), state: &Mutex<State>, auth: &Auth, realm: &str) {
    let Some((method, target, headers, body)) = read_full_request(stream) else {
        return;
    };
    state.lock().expect("state").requests.push(target.clone());
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let authorization = headers.get("authorization").cloned().unwrap_or_default();
    let basic = |user: &str, pass: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    match auth {
        Auth::None => {}
        Auth::Basic { user, pass } => {
            if authorization != basic(user, pass) {
                return respond(
                    stream,
                    401,
                    &[("WWW-Authenticate", "Basic realm=\"fake\"")],
                    b"",
                    None,
                );
            }
        }
        Auth::Bearer { user, pass, token } => {
            if path == "/token" && method == "POST" {
                // OAuth2 refresh-token grant: the password doubles as the refresh token.
                let form = String::from_utf8_lossy(&body);
                if !form.contains("grant_type=refresh_token")
                    || !form.contains(&format!("refresh_token={pass}"))
                {
                    return respond(stream, 401, &[], b"", None);
                }
                let answer = format!("{{\"access_token\":\"{token}\"}}");
                return respond(
                    stream,
                    200,
                    &[("Content-Type", "application/json")],
                    answer.as_bytes(),
                    None,
                );
            }
            if path == "/token" {
                // An empty user means anonymous tokens, as public registries give.
                if !user.is_empty() && authorization != basic(user, pass) {
                    return respond(stream, 401, &[], b"", None);
                }
                let body = format!("{{\"token\":\"{token}\"}}");
                return respond(
                    stream,
                    200,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                    None,
                );
            }
            if authorization != format!("Bearer {token}") {
                let challenge = format!(
                    "Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:busybox:pull\""
                );
                return respond(stream, 401, &[("WWW-Authenticate", &challenge)], b"", None);
            }
        }
    }
    if path == "/v2/" {
        return respond(stream, 200, &[], b"{}", None);
    }
    let route = state.lock().expect("state").routes.get(&path).cloned();
    match route {
        Some(Route {
            redirect: Some(location),
            ..
        }) => respond(stream, 307, &[("Location", &location)], b"", None),
        Some(route) => {
            let content_type = route
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            respond(
                stream,
                200,
                &[("Content-Type", &content_type)],
                &route.body,
                route.stall_after,
            )
        }
        None => respond(
            stream,
            404,
            &[],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
            None,
        ),
    }
}

/// Method, target, lowercase headers and body.
type Request = (String, String, HashMap<String, String>, Vec<u8>);

fn read_full_request(stream: &mut impl Read) -> Option<Request> {
    // One request per connection: what the buffer reads past it is never needed.
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let method = line.split_whitespace().next()?.to_owned();
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            let key = key.trim().to_ascii_lowercase();
            if key == "content-length" {
                content_length = value.trim().parse().unwrap_or(0);
            }
            headers.insert(key, value.trim().to_owned());
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, headers, body))
}

fn respond(
    stream: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    stall_after: Option<usize>,
) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    match stall_after {
        Some(n) => {
            let _ = stream.write_all(&body[..n.min(body.len())]);
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(120));
        }
        None => {
            let _ = stream.write_all(body);
        }
    }
}
