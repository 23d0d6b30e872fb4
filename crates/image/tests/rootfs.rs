//! A container rootfs from a pulled image: the overlay of its snapshots shows the
//! image's filesystem with whiteouts applied, and busybox runs in it.

mod common;

use std::fs;
use std::process::Command;

use common::{names, open_store, registry, require_root, temp_root};
use coracle_image::{mount_overlay, unmount_overlay};

/// Unmounts even when an assertion fails, so no test leaks a mount.
struct Unmount<'a>(&'a std::path::Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        unmount_overlay(self.0).expect("unmount");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteout_image_overlay_shows_the_merged_view_and_runs_busybox() {
    require_root();
    let registry = registry();
    let root = temp_root();
    let store = open_store(root.path());
    let image = store
        .pull(&registry.reference("whiteout", "latest"), None)
        .await
        .expect("pull whiteout");
    let container = format!("c-{}", std::process::id());
    let layers = store
        .prepare_rootfs(&image.id.to_string(), &container)
        .expect("prepare rootfs");
    assert_eq!(layers.lower_dirs.len(), 3);
    assert_eq!(
        store
            .prepare_rootfs(&image.id.to_string(), &container)
            .expect("again"),
        layers,
        "prepare is idempotent"
    );
    assert!(image.chain_ids.iter().all(|c| store.snapshot_in_use(c)));

    let target = root.path().join("mnt");
    fs::create_dir(&target).expect("mkdir mnt");
    mount_overlay(&layers, &target).expect("mount overlay");
    let mounted = Unmount(&target);
    let data = names(&target.join("data"));
    let opq = names(&target.join("opq"));
    let output = Command::new("chroot")
        .arg(&target)
        .args(["/bin/sh", "-c", "echo ok"])
        .output()
        .expect("run chroot");
    drop(mounted);
    unmount_overlay(&target).expect("unmount again is fine");

    assert_eq!(data, vec!["added.txt", "keep.txt"]);
    assert_eq!(opq, vec!["new"]);
    assert!(output.status.success(), "chroot: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");

    // The image goes, but the container still holds its layers until released.
    assert!(store.remove(&image.id.to_string()).expect("remove image"));
    assert_eq!(names(&root.path().join("snapshots")).len(), 3);
    store.release_rootfs(&container).expect("release");
    store.release_rootfs(&container).expect("release again");
    assert!(names(&root.path().join("containers")).is_empty());
    assert!(
        names(&root.path().join("snapshots")).is_empty(),
        "released layers collected"
    );
}

#[test]
fn overlay_of_many_layers_with_long_paths_mounts() {
    require_root();
    let root = temp_root();
    // 120 layers of ~100-byte paths: far past a page of mount options.
    let lower_dirs: Vec<std::path::PathBuf> = (0..120)
        .map(|i| {
            let dir = root.path().join(format!("{i:03}-{}", "x".repeat(96)));
            fs::create_dir(&dir).expect("mkdir layer");
            fs::write(dir.join(format!("file{i}")), "layer").expect("write");
            dir
        })
        .collect();
    let layers = coracle_image::RootfsLayers {
        lower_dirs,
        upper_dir: root.path().join("upper"),
        work_dir: root.path().join("work"),
    };
    fs::create_dir(&layers.upper_dir).expect("mkdir upper");
    fs::create_dir(&layers.work_dir).expect("mkdir work");
    let target = root.path().join("mnt");
    fs::create_dir(&target).expect("mkdir mnt");
    mount_overlay(&layers, &target).expect("mount 120 layers");
    let mounted = Unmount(&target);
    assert!(target.join("file0").is_file());
    assert!(target.join("file119").is_file());
    drop(mounted);
}
