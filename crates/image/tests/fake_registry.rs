//! Pulls from a scripted registry: corrupt blobs, stalls, mirrors, auth.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::fake::{Auth, FakeRegistry};
use common::{config, names, require_root, temp_root};
use coracle_image::{Credentials, ImageError, ImageStore, RegistryConfig};

fn busybox_layout() -> PathBuf {
    coracle_e2e::registry::test_images_dir()
        .expect("test images")
        .join("busybox")
}

fn serving_busybox(auth: Auth) -> FakeRegistry {
    let fake = FakeRegistry::start(auth);
    fake.serve_image("busybox", "latest", &busybox_layout(), |_| {}, None);
    fake
}

/// Nothing of a failed pull is left: no record, blob, snapshot or staging dir.
/// (An unpack thread may still be winding down for a moment after a cancel.)
fn assert_store_empty(root: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leftovers: Vec<Vec<String>> = ["images", "blobs/sha256", "snapshots", "tmp"]
            .iter()
            .map(|dir| names(&root.join(dir)))
            .collect();
        if leftovers.iter().all(Vec::is_empty) {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {leftovers:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_layer_blob_fails_and_leaves_nothing() {
    require_root();
    let fake = FakeRegistry::start(Auth::None);
    fake.serve_image(
        "busybox",
        "latest",
        &busybox_layout(),
        |layer| {
            let middle = layer.len() / 2;
            layer[middle] ^= 0xff;
        },
        None,
    );
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let err = store
        .pull(&format!("{}/busybox:latest", fake.address()), None)
        .await
        .expect_err("a corrupt blob must fail the pull");
    assert!(
        matches!(err, ImageError::DigestMismatch { what: "layer", .. }),
        "{err}"
    );
    assert!(store.list().is_empty());
    assert_store_empty(root.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_leaves_the_old_image_by_digest_only() {
    require_root();
    let images = coracle_e2e::registry::test_images_dir().expect("test images");
    let fake = FakeRegistry::start(Auth::None);
    fake.serve_image("app", "v1", &images.join("busybox"), |_| {}, None);
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let reference = format!("{}/app:v1", fake.address());
    let old = store.pull(&reference, None).await.expect("pull v1");
    fake.serve_image("app", "v1", &images.join("whiteout"), |_| {}, None);
    let new = store.pull(&reference, None).await.expect("pull moved v1");
    assert_ne!(old.id, new.id);
    assert_eq!(store.status(&reference).map(|i| i.id), Some(new.id.clone()));
    let old_now = store.status(&old.id.to_string()).expect("old image kept");
    assert!(old_now.repo_tags.is_empty(), "{old_now:?}");
    assert_eq!(old_now.repo_digests, old.repo_digests);

    // tag + digest: fetched by digest, named by both.
    let pinned = format!(
        "{reference}@{}",
        new.repo_digests[0].split_once('@').expect("digest").1
    );
    let again = store.pull(&pinned, None).await.expect("pull tag+digest");
    assert_eq!(again.id, new.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_to_a_host_wanting_an_anonymous_token_is_followed() {
    require_root();
    // As registry.k8s.io sends clients to a *.pkg.dev registry with its own realm.
    let backend = serving_busybox(Auth::Bearer {
        user: String::new(),
        pass: String::new(),
        token: "anon".into(),
    });
    let front = FakeRegistry::start(Auth::Basic {
        user: "carol".into(),
        pass: "front-only".into(),
    });
    front.redirect_to(&backend, "/v2/");
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    store
        .pull(
            &format!("{}/busybox:latest", front.address()),
            Some(Credentials::basic("carol", "front-only")),
        )
        .await
        .expect("pull through the redirect");
    assert!(backend.requests().iter().any(|r| r.starts_with("/token?")));
}

/// A throwaway CA and a certificate it signed for 127.0.0.1, made with the openssl
/// CLI: (ca.pem, cert.pem, key.pem).
fn test_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-days",
            "1",
            "-subj",
            "/CN=coracle-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_mirror_is_verified_against_its_ca_file() {
    require_root();
    let certs = temp_root();
    let (ca, cert, key) = test_pki(certs.path());
    let mirror = FakeRegistry::start_tls(Auth::None, &cert, &key);
    mirror.serve_image("library/busybox", "latest", &busybox_layout(), |_| {}, None);
    let registry_config = |ca_file: Option<PathBuf>| {
        let mut config = config();
        config.registries.insert(
            "docker.io".to_owned(),
            RegistryConfig {
                mirrors: vec![format!("https://{}", mirror.address())],
                no_upstream_fallback: true,
                ..RegistryConfig::default()
            },
        );
        config.registries.insert(
            mirror.address().to_owned(),
            RegistryConfig {
                ca_file,
                ..RegistryConfig::default()
            },
        );
        config
    };

    // Without the CA the certificate is refused.
    let root = temp_root();
    let store = ImageStore::open(root.path(), registry_config(None)).expect("open");
    let err = store
        .pull("busybox", None)
        .await
        .expect_err("untrusted certificate");
    assert!(
        matches!(err.kind(), coracle_image::ErrorKind::Unavailable),
        "{err}"
    );

    let root = temp_root();
    let store = ImageStore::open(root.path(), registry_config(Some(ca))).expect("open");
    let image = store.pull("busybox", None).await.expect("pull over https");
    assert_eq!(image.repo_tags, vec!["docker.io/library/busybox:latest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_pull_is_cancelled_after_the_progress_timeout() {
    require_root();
    let fake = FakeRegistry::start(Auth::None);
    fake.serve_image("busybox", "latest", &busybox_layout(), |_| {}, Some(4096));
    let root = temp_root();
    let mut config = config();
    config.progress_timeout = Duration::from_secs(1);
    let store = ImageStore::open(root.path(), config).expect("open");
    let started = Instant::now();
    let err = store
        .pull(&format!("{}/busybox:latest", fake.address()), None)
        .await
        .expect_err("a stalled pull must fail");
    assert!(matches!(err, ImageError::ProgressTimeout { .. }), "{err}");
    assert!(err.to_string().contains("no progress"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_store_empty(root.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_without_the_image_falls_back_to_upstream() {
    require_root();
    let upstream = serving_busybox(Auth::None);
    let mirror = FakeRegistry::start(Auth::None);
    let mut config = config();
    config.registries.insert(
        upstream.address().to_owned(),
        RegistryConfig {
            mirrors: vec![mirror.address().to_owned()],
            ..RegistryConfig::default()
        },
    );
    let root = temp_root();
    let store = ImageStore::open(root.path(), config).expect("open");
    let image = store
        .pull(&format!("{}/busybox:latest", upstream.address()), None)
        .await
        .expect("pull through fallback");
    assert_eq!(
        image.repo_tags,
        vec![format!("{}/busybox:latest", upstream.address())]
    );
    assert_eq!(
        mirror.requests(),
        vec![format!(
            "/v2/busybox/manifests/latest?ns={}",
            upstream.address().replace(':', "%3A")
        )],
        "the mirror was asked first, with ns="
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_missing_on_the_mirror_come_from_upstream() {
    require_root();
    let upstream = serving_busybox(Auth::None);
    let mirror = serving_busybox(Auth::None);
    mirror.retain(|path| !path.contains("/blobs/"));
    let mut config = config();
    config.registries.insert(
        upstream.address().to_owned(),
        RegistryConfig {
            mirrors: vec![mirror.address().to_owned()],
            ..RegistryConfig::default()
        },
    );
    let root = temp_root();
    let store = ImageStore::open(root.path(), config).expect("open");
    store
        .pull(&format!("{}/busybox:latest", upstream.address()), None)
        .await
        .expect("manifest from the mirror, blobs from upstream");
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.contains("/manifests/latest"))
    );
    let upstream_requests = upstream.requests();
    assert!(
        upstream_requests.iter().all(|r| r.contains("/blobs/")),
        "{upstream_requests:?}"
    );
    assert_eq!(upstream_requests.len(), 2, "config and layer");
}

#[tokio::test(flavor = "multi_thread")]
async fn air_gapped_registry_is_served_wholly_by_its_mirror() {
    require_root();
    let mirror = FakeRegistry::start(Auth::None);
    mirror.serve_image("pause", "3.10", &busybox_layout(), |_| {}, None);
    let mut config = config();
    config.registries.insert(
        "registry.k8s.io".to_owned(),
        RegistryConfig {
            mirrors: vec![format!("http://{}", mirror.address())],
            no_upstream_fallback: true,
            ..RegistryConfig::default()
        },
    );
    let root = temp_root();
    let store = ImageStore::open(root.path(), config).expect("open");
    let image = store
        .pull("registry.k8s.io/pause:3.10", None)
        .await
        .expect("pull from the mirror");
    assert_eq!(image.repo_tags, vec!["registry.k8s.io/pause:3.10"]);
    // Missing on the mirror and no fallback: the mirror's answer is the error.
    let err = store
        .pull("registry.k8s.io/missing:1", None)
        .await
        .expect_err("no fallback");
    assert!(err.to_string().contains(mirror.address()), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_from_the_request_or_the_config() {
    require_root();
    let fake = serving_busybox(Auth::Basic {
        user: "alice".into(),
        pass: "s3cret".into(),
    });
    let reference = format!("{}/busybox:latest", fake.address());
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let err = store
        .pull(&reference, None)
        .await
        .expect_err("no credentials");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    store
        .pull(&reference, Some(Credentials::basic("alice", "s3cret")))
        .await
        .expect("pull with request credentials");

    let mut config = config();
    config.registries.insert(
        fake.address().to_owned(),
        RegistryConfig {
            username: Some("alice".into()),
            password: Some("s3cret".into()),
            ..RegistryConfig::default()
        },
    );
    let root = temp_root();
    let store = ImageStore::open(root.path(), config).expect("open");
    store
        .pull(&reference, None)
        .await
        .expect("pull with config credentials");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_from_the_challenge_realm() {
    require_root();
    let fake = serving_busybox(Auth::Bearer {
        user: "bob".into(),
        pass: "pw".into(),
        token: "tok-123".into(),
    });
    let reference = format!("{}/busybox:latest", fake.address());
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let err = store
        .pull(&reference, Some(Credentials::basic("bob", "wrong")))
        .await
        .expect_err("token server refuses");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    store
        .pull(&reference, Some(Credentials::basic("bob", "pw")))
        .await
        .expect("pull with a token");
    let token_requests = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/token?"))
        .collect::<Vec<_>>();
    assert!(
        token_requests
            .iter()
            .any(|r| r.contains("service=fake") && r.contains("scope=repository%3Abusybox%3Apull")),
        "{token_requests:?}"
    );

    // A token got with credentials is not reused by a pull without them.
    let err = store
        .pull(&reference, None)
        .await
        .expect_err("no credentials, no token");
    assert!(err.to_string().contains("unauthorized"), "{err}");

    // CRI's identity_token: an OAuth2 refresh token, POSTed to the realm.
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let creds = Credentials {
        identity_token: Some("pw".into()),
        ..Credentials::default()
    };
    store
        .pull(&reference, Some(creds))
        .await
        .expect("pull with an identity token");

    // CRI's registry_token is sent as is, no token server round trip.
    let root = temp_root();
    let store = ImageStore::open(root.path(), config()).expect("open");
    let before = fake.requests().len();
    let creds = Credentials {
        registry_token: Some("tok-123".into()),
        ..Credentials::default()
    };
    store
        .pull(&reference, Some(creds))
        .await
        .expect("pull with registry token");
    assert!(
        fake.requests()[before..]
            .iter()
            .all(|r| !r.starts_with("/token"))
    );
}
