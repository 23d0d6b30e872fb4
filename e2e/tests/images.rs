//! The image service through CRI, against the real test registry on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use coracle_e2e::{Daemon, Registry, require_root};
use k8s_cri::{v1, v1alpha2};
use tonic::Code;

#[tokio::test]
async fn pull_list_status_remove_through_cri() {
    require_root();
    let registry = Registry::start().unwrap();
    let mut daemon = Daemon::start().await.unwrap();
    let latest = registry.reference("busybox", "latest");
    let pinned = registry.reference("busybox", "1.35");

    let id = daemon.pull_image(&latest).await.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        daemon.pull_image(&pinned).await.unwrap(),
        id,
        "same image, second tag"
    );
    let images = daemon.list_images().await.unwrap();
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
        let found = daemon.image_status(name).await.unwrap();
        assert_eq!(found.image.as_ref().unwrap().id, id, "{name}");
    }
    let info: serde_json::Value =
        serde_json::from_str(&daemon.image_status(&latest).await.unwrap().info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["Cmd"],
        serde_json::json!(["sh"])
    );

    // Removing one tag keeps the image under the other; the last one removes it.
    daemon.remove_image(&latest).await.unwrap();
    assert_eq!(
        daemon.list_images().await.unwrap()[0].repo_tags,
        vec![pinned.clone()]
    );
    daemon.remove_image(&pinned).await.unwrap();
    assert!(daemon.list_images().await.unwrap().is_empty());
    assert!(
        daemon.image_status(&pinned).await.unwrap().image.is_none(),
        "unknown image has an empty status"
    );
    // Idempotent.
    daemon.remove_image(&pinned).await.unwrap();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn image_user_index_and_fs_info() {
    require_root();
    let registry = Registry::start().unwrap();
    let mut daemon = Daemon::start().await.unwrap();
    daemon
        .pull_image(&registry.reference("user", "latest"))
        .await
        .unwrap();
    let user = daemon
        .image_status(&registry.reference("user", "latest"))
        .await
        .unwrap()
        .image
        .unwrap();
    assert_eq!(user.username, "coracle");
    assert!(user.uid.is_none());

    // An index resolves to the node's platform; the repo digest is the index's.
    let multiarch = registry.reference("multiarch", "latest");
    daemon.pull_image(&multiarch).await.unwrap();
    let image = daemon
        .image_status(&multiarch)
        .await
        .unwrap()
        .image
        .unwrap();
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
    let missing = daemon
        .pull_image(&registry.reference("busybox", "no-such-tag"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let invalid = daemon.pull_image("UPPER/Case::bad").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let empty = daemon.pull_image("").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(daemon.list_images().await.unwrap().is_empty());
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
    let refused = daemon.pull_image(&image).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut client = daemon.image_client().await.unwrap();
    let wrong = client
        .pull_image(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
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
            image: Some(v1::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
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
    daemon
        .pull_image(&registry.reference("user", "latest"))
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}
