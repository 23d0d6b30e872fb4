//! Pulls from a real registry (distribution 2.8 on 127.0.0.1) loaded with the
//! `hack/test-images` images.

mod common;

use std::fs;
use std::time::Instant;

use common::{names, open_store, registry, require_root, snapshot_fs, temp_root};

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_then_by_digest_and_second_tag_is_one_image() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());

    let started = Instant::now();
    let image = store
        .pull(&registry.reference("busybox", "latest"), None)
        .await
        .expect("pull busybox:latest");
    println!("pull busybox:latest took {:?}", started.elapsed());

    let digest = registry
        .image("busybox", "latest")
        .expect("test image")
        .digest
        .clone();
    let name = format!("{}/busybox", registry.address());
    assert_eq!(image.repo_tags, vec![format!("{name}:latest")]);
    assert_eq!(image.repo_digests, vec![format!("{name}@{digest}")]);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.chain_ids.len(), 1);
    let busybox = snapshot_fs(root.path(), &image.chain_ids[0]).join("bin/busybox");
    assert!(busybox.is_file(), "busybox binary unpacked");
    assert!(image.size > 0);

    let by_digest = store
        .pull(&format!("{name}@{digest}"), None)
        .await
        .expect("pull by digest");
    assert_eq!(by_digest.id, image.id);
    let second_tag = store
        .pull(&registry.reference("busybox", "1.35"), None)
        .await
        .expect("pull busybox:1.35");
    assert_eq!(second_tag.id, image.id);
    assert_eq!(
        second_tag.repo_tags,
        vec![format!("{name}:latest"), format!("{name}:1.35")]
    );
    assert_eq!(store.list().len(), 1);

    // Blobs kept: manifest and config; layers live as snapshots only.
    assert_eq!(names(&root.path().join("blobs/sha256")), {
        let mut want = vec![
            digest.trim_start_matches("sha256:").to_owned(),
            image.id.hex().to_owned(),
        ];
        want.sort();
        want
    });
    assert!(
        names(&root.path().join("tmp")).is_empty(),
        "staging cleaned"
    );
    use std::os::unix::fs::PermissionsExt;
    for dir in ["", "snapshots", "containers", "tmp"] {
        let mode = fs::metadata(root.path().join(dir))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{dir:?} is private");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_finds_images_by_id_tag_digest_and_short_id() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let image = store
        .pull(&registry.reference("entrypoint", "latest"), None)
        .await
        .expect("pull entrypoint");
    let id = image.id.to_string();
    let found = |key: &str| store.status(key).map(|i| i.id.to_string());
    assert_eq!(found(&id).as_deref(), Some(id.as_str()));
    assert_eq!(found(image.id.hex()).as_deref(), Some(id.as_str()));
    assert_eq!(found(&image.id.hex()[..12]).as_deref(), Some(id.as_str()));
    assert_eq!(
        found(&format!("{}/entrypoint", registry.address())).as_deref(),
        Some(id.as_str())
    );
    assert_eq!(found(&image.repo_digests[0]).as_deref(), Some(id.as_str()));
    assert_eq!(found("busybox"), None);
    assert_eq!(found("0000"), None);

    let config = &image.config;
    assert_eq!(config.entrypoint[0], "/bin/sh");
    assert_eq!(config.cmd, vec!["from-cmd"]);
    assert!(config.env.contains(&"GREETING=hello".to_owned()));
    assert_eq!(config.working_dir.as_deref(), Some("/work"));
    assert_eq!(config.stop_signal.as_deref(), Some("SIGUSR1"));
    assert_eq!(
        config.labels.get("org.coracle.test").map(String::as_str),
        Some("entrypoint")
    );
    assert!(store.config_json(&image.id).is_some());

    let user = store
        .pull(&registry.reference("user", "latest"), None)
        .await
        .expect("pull user");
    assert_eq!(user.config.user.as_deref(), Some("coracle"));
    let httpd = store
        .pull(&registry.reference("httpd", "latest"), None)
        .await
        .expect("pull httpd");
    assert_eq!(httpd.config.exposed_ports, vec!["80/tcp"]);
    let info = store.fs_info();
    assert!(info.images.bytes > 0 && info.images.inodes > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_of_an_index_picks_linux_amd64() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let image = store
        .pull(&registry.reference("multiarch", "latest"), None)
        .await
        .expect("pull multiarch");
    let top = image.chain_ids.last().expect("layers");
    let platform =
        fs::read_to_string(snapshot_fs(root.path(), top).join("platform")).expect("read /platform");
    assert_eq!(platform.trim(), "linux/amd64");
    let index_digest = registry
        .image("multiarch", "latest")
        .expect("test image")
        .digest
        .clone();
    assert!(
        image.repo_digests[0].ends_with(&index_digest),
        "repo digest is the index's"
    );
    assert_ne!(image.manifest_digest.to_string(), index_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_schema2_uncompressed_and_zstd_layers_unpack_alike() {
    require_root();
    let registry = registry();
    let mut diff_ids = Vec::new();
    for repo in ["busybox-docker", "busybox-uncompressed", "busybox-zstd"] {
        // A fresh store each: they share the busybox layer's diff id.
        let root = temp_root();
        let store = open_store(root.path());
        let image = store
            .pull(&registry.reference(repo, "latest"), None)
            .await
            .unwrap_or_else(|err| panic!("pull {repo}: {err}"));
        let fs_dir = snapshot_fs(root.path(), &image.chain_ids[0]);
        assert!(
            fs_dir.join("bin/busybox").is_file(),
            "{repo}: busybox unpacked"
        );
        assert!(
            fs_dir
                .join("bin/sh")
                .symlink_metadata()
                .expect("lstat sh")
                .is_symlink(),
            "{repo}: applet symlinks"
        );
        diff_ids.push(image.diff_ids.clone());
    }
    assert!(
        diff_ids.windows(2).all(|w| w[0] == w[1]),
        "same tar in every wrapping"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_pulls_do_the_work_once() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let reference = registry.reference("whiteout", "latest");
    let (a, b) = tokio::join!(store.pull(&reference, None), store.pull(&reference, None));
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    assert_eq!(a.id, b.id);
    // One config and three layers, once.
    assert_eq!(store.blob_fetches(), 4);
    assert_eq!(store.list().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_images_sharing_a_layer_fetch_it_once() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let busybox = registry.reference("busybox", "latest");
    let httpd = registry.reference("httpd", "latest");
    let user = registry.reference("user", "latest");
    let (a, b, c) = tokio::join!(
        store.pull(&busybox, None),
        store.pull(&httpd, None),
        store.pull(&user, None)
    );
    let (a, b, c) = (a.expect("busybox"), b.expect("httpd"), c.expect("user"));
    assert_eq!(a.chain_ids[0], b.chain_ids[0]);
    assert_eq!(a.chain_ids[0], c.chain_ids[0]);
    // Three configs, the shared base layer once, httpd's and user's own layers.
    assert_eq!(store.blob_fetches(), 3 + 1 + 2);
    assert_eq!(names(&root.path().join("snapshots")).len(), 3);
    assert!(names(&root.path().join("tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_drops_tags_then_the_image_and_its_unshared_snapshots() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let latest = registry.reference("busybox", "latest");
    let old = registry.reference("busybox", "1.35");
    let busybox = store.pull(&latest, None).await.expect("pull latest");
    store.pull(&old, None).await.expect("pull 1.35");
    let httpd = store
        .pull(&registry.reference("httpd", "latest"), None)
        .await
        .expect("pull httpd");
    assert_eq!(
        httpd.chain_ids[0], busybox.chain_ids[0],
        "httpd shares busybox's layer"
    );
    assert_eq!(names(&root.path().join("snapshots")).len(), 2);

    assert!(store.remove(&old).expect("remove 1.35"));
    let kept = store
        .status(&latest)
        .expect("image kept while a tag remains");
    assert_eq!(kept.repo_tags, vec![latest.clone()]);

    assert!(
        store
            .remove(&registry.reference("httpd", "latest"))
            .expect("remove httpd")
    );
    assert!(store.status(&httpd.id.to_string()).is_none());
    assert_eq!(
        names(&root.path().join("snapshots")),
        vec![busybox.chain_ids[0].hex().to_owned()],
        "httpd's own layer went, the shared one stayed"
    );

    assert!(store.remove(&latest).expect("remove last tag"));
    assert!(store.list().is_empty());
    assert!(names(&root.path().join("snapshots")).is_empty());
    assert!(names(&root.path().join("blobs/sha256")).is_empty());
    assert!(names(&root.path().join("images")).is_empty());
    assert!(!store.remove(&latest).expect("removing again is fine"));

    // By id, with every name at once.
    let again = store.pull(&latest, None).await.expect("pull again");
    store.pull(&old, None).await.expect("pull 1.35 again");
    assert!(store.remove(&again.id.to_string()).expect("remove by id"));
    assert!(store.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn records_survive_reopen_and_leftovers_are_swept() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let image = {
        let store = open_store(root.path());
        store
            .pull(&registry.reference("busybox", "latest"), None)
            .await
            .expect("pull")
    };
    // What a crash could leave: a staging dir, a temp record, an orphan snapshot
    // and blob.
    fs::create_dir_all(root.path().join("tmp/.tmp-pull-1/x/fs")).expect("mkdir");
    fs::write(root.path().join("images/.tmp-abc.json-1-2-3"), "{").expect("write");
    let orphan = root
        .path()
        .join("snapshots")
        .join("a".repeat(64))
        .join("fs");
    fs::create_dir_all(&orphan).expect("mkdir orphan");
    let orphan_blob = root.path().join("blobs/sha256").join("b".repeat(64));
    fs::write(&orphan_blob, "{}").expect("write orphan blob");

    let store = open_store(root.path());
    assert_eq!(store.list(), vec![image.clone()]);
    assert!(names(&root.path().join("tmp")).is_empty());
    assert_eq!(
        names(&root.path().join("images")),
        vec![format!("{}.json", image.id.hex())]
    );
    assert!(!orphan.exists(), "unreferenced snapshot removed at open");
    assert!(!orphan_blob.exists(), "unreferenced blob removed at open");
    assert_eq!(
        names(&root.path().join("blobs/sha256")).len(),
        2,
        "manifest and config kept"
    );
    assert!(
        snapshot_fs(root.path(), &image.chain_ids[0])
            .join("bin/busybox")
            .is_file()
    );
}
