//! The image service through CRI, against the real test registry on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use coracle_e2e::{Daemon, Registry, require_root};
use k8s_cri::{v1, v1alpha2};
use tonic::Code;

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(daemon: &Daemon, image: &str) -> Result<String, tonic::Status> {
    daemon
        .image_client()
        .await
        .unwrap()
        .pull_image(v1::PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(daemon: &Daemon, image: &str) -> v1::ImageStatusResponse {
    daemon
        .image_client()
        .await
        .unwrap()
        .image_status(v1::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn remove(daemon: &Daemon, image: &str) {
    daemon
        .image_client()
        .await
        .unwrap()
        .remove_image(v1::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

async fn listed(daemon: &Daemon) -> Vec<v1::Image> {
    daemon
        .image_client()
        .await
        .unwrap()
        .list_images(v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

#[tokio::test]
async fn pull_list_status_remove_through_cri() {
    require_root();
    let registry = Registry::start().unwrap();
    let mut daemon = Daemon::start().await.unwrap();
    let latest = registry.reference("busybox", "latest");
    let pinned = registry.reference("busybox", "1.35");

    let id = pull(&daemon, &latest).await.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        pull(&daemon, &pinned).await.unwrap(),
        id,
        "same image, second tag"
    );
    let images = listed(&daemon).await;
    assert_eq!(images.len(), 1, "{images:?}");
    let mut tags = images[0].repo_tags.clone();
    tags.sort();
    assert_eq!(tags, vec![pinned.clone(), latest.clone()]);
    let digest = &registry.image("busybox", "latest").unwrap().digest;
    let by_digest = format!("{}/busybox@{digest}", registry.address());
    assert_eq!(images[0].repo_digests, vec![by_digest.clone()]);
    assert!(images[0].size > 0);

    // Status by tag, digest and id; verbose shows the image config.
    for name in [latest.as_str(), by_digest.as_str(), id.as_str()] {
        let found = status(&daemon, name).await;
        assert_eq!(found.image.as_ref().unwrap().id, id, "{name}");
    }
    let info: serde_json::Value =
        serde_json::from_str(&status(&daemon, &latest).await.info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["Cmd"],
        serde_json::json!(["sh"])
    );

    // Removing one tag keeps the image under the other; the last one removes it.
    remove(&daemon, &latest).await;
    assert_eq!(listed(&daemon).await[0].repo_tags, vec![pinned.clone()]);
    remove(&daemon, &pinned).await;
    assert!(listed(&daemon).await.is_empty());
    assert!(
        status(&daemon, &pinned).await.image.is_none(),
        "unknown image has an empty status"
    );
    // Idempotent.
    remove(&daemon, &pinned).await;
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn image_user_index_and_fs_info() {
    require_root();
    let registry = Registry::start().unwrap();
    let mut daemon = Daemon::start().await.unwrap();
    pull(&daemon, &registry.reference("user", "latest"))
        .await
        .unwrap();
    let user = status(&daemon, &registry.reference("user", "latest"))
        .await
        .image
        .unwrap();
    assert_eq!(user.username, "coracle");
    assert!(user.uid.is_none());

    // An index resolves to the node's platform; the repo digest is the index's.
    let multiarch = registry.reference("multiarch", "latest");
    pull(&daemon, &multiarch).await.unwrap();
    let image = status(&daemon, &multiarch).await.image.unwrap();
    let index_digest = &registry.image("multiarch", "latest").unwrap().digest;
    assert!(
        image.repo_digests[0].ends_with(index_digest.as_str()),
        "{:?}",
        image.repo_digests
    );

    let fs = daemon
        .image_client()
        .await
        .unwrap()
        .image_fs_info(v1::ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(
        used > 1_000_000,
        "two busybox-based images use {used} bytes"
    );
    assert!(
        fs.image_filesystems[0]
            .fs_id
            .as_ref()
            .unwrap()
            .mountpoint
            .starts_with(daemon.root_dir().to_str().unwrap())
    );

    // The same store through v1alpha2.
    let alpha = daemon
        .image_client_v1alpha2()
        .await
        .unwrap()
        .list_images(v1alpha2::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alpha.images.len(), 2);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn bad_pulls_fail_with_clear_codes_and_leave_nothing() {
    require_root();
    let registry = Registry::start().unwrap();
    let mut daemon = Daemon::start().await.unwrap();
    let missing = pull(&daemon, &registry.reference("busybox", "no-such-tag"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let invalid = pull(&daemon, "UPPER/Case::bad").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let empty = pull(&daemon, "").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(listed(&daemon).await.is_empty());
    daemon.stop().await.unwrap();
}

/// bcrypt of "coracle-test" (made once with Python's crypt module; it is data).
const PASSWORD_HASH: &str = "$2b$12$whTXHWsoivTM0DhjZIO3kuSLcvPBm7MCFrHEOMiTdmcAytitDXPvO";

/// A registry with htpasswd basic auth: refused without credentials, pulled with
/// the CRI AuthConfig, and with credentials from the config file.
#[tokio::test]
async fn pull_from_a_registry_with_basic_auth() {
    require_root();
    let mut registry = Registry::start().unwrap();
    registry
        .require_basic_auth("coracle", PASSWORD_HASH)
        .unwrap();
    let image = registry.reference("busybox", "latest");

    let mut daemon = Daemon::start().await.unwrap();
    let refused = pull(&daemon, &image).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut client = daemon.image_client().await.unwrap();
    let wrong = client
        .pull_image(v1::PullImageRequest {
            image: spec(&image),
            auth: Some(v1::AuthConfig {
                username: "coracle".into(),
                password: "wrong".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let pulled = client
        .pull_image(v1::PullImageRequest {
            image: spec(&image),
            auth: Some(v1::AuthConfig {
                username: "coracle".into(),
                password: "coracle-test".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"));
    daemon.stop().await.unwrap();

    // Credentials from the config file, per registry host.
    let config = format!(
        "[image.registries.\"{}\"]\nusername = \"coracle\"\npassword = \"coracle-test\"\n",
        registry.address()
    );
    let mut daemon = Daemon::start_with(coracle_e2e::DaemonOptions {
        config_toml: Some(config),
        ..Default::default()
    })
    .await
    .unwrap();
    pull(&daemon, &registry.reference("user", "latest"))
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}
