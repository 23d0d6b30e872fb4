//! The test registry and images every image and container test builds on.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use coracle_e2e::Registry;
use coracle_e2e::registry::{load_test_images, test_images_dir};

#[test]
fn registry_serves_every_test_image_by_tag_and_by_digest() {
    let registry = Registry::start().unwrap();
    let expected = [
        "busybox:latest",
        "busybox:1.35",
        "multiarch:latest",
        "user:latest",
        "entrypoint:latest",
        "whiteout:latest",
        "httpd:latest",
        "busybox-docker:latest",
        "busybox-uncompressed:latest",
    ];
    for name in expected {
        let (repo, tag) = name.split_once(':').unwrap();
        let image = registry
            .image(repo, tag)
            .unwrap_or_else(|e| panic!("{e}; images: {:?}", registry.images()));
        let by_tag = registry.manifest_digest(repo, tag).unwrap();
        assert_eq!(by_tag, image.digest, "{name}");
        let by_digest = registry.manifest_digest(repo, &image.digest).unwrap();
        assert_eq!(by_digest, image.digest, "{name} by digest");
    }
    assert_eq!(
        registry.image("multiarch", "latest").unwrap().media_type,
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        registry
            .image("busybox-docker", "latest")
            .unwrap()
            .media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(registry.manifest_digest("busybox", "no-such-tag").is_err());
}

/// Same inputs, same digests: tests may pin digests, and CI must see what we saw.
#[test]
fn test_images_build_deterministically() {
    let shared = load_test_images(&test_images_dir().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("images");
    let status = std::process::Command::new("python3")
        .arg(coracle_e2e::workspace_root().join("hack/test-images/build.py"))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rebuilt = load_test_images(&out).unwrap();
    assert!(!rebuilt.is_empty());
    assert_eq!(rebuilt, shared);
}
