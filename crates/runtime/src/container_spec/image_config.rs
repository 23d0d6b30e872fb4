//! The part of an OCI image config (`application/vnd.oci.image.config.v1+json`, the
//! `config` object) that decides how a container runs.
//! <https://github.com/opencontainers/image-spec/blob/main/config.md>

/// `config.{Entrypoint,Cmd,Env,WorkingDir,User,Volumes}` of an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRuntimeConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid`, ... (empty: root).
    pub user: String,
    /// Volume paths, sorted.
    pub volumes: Vec<String>,
}

impl From<&coracle_image::RunConfig> for ImageRuntimeConfig {
    /// The image store parsed the config at pull (`coracle_image::RunConfig`, Go's
    /// nulls already taken as empty); this only picks what a container needs.
    fn from(c: &coracle_image::RunConfig) -> Self {
        Self {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            volumes: c.volumes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_runtime_fields_of_the_stored_image_config() {
        let stored = coracle_image::RunConfig {
            user: Some("app:staff".into()),
            env: vec!["PATH=/bin".into(), "A=1".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            working_dir: Some("/srv".into()),
            volumes: vec!["/cache".into(), "/var/lib/data".into()],
            ..Default::default()
        };
        let c = ImageRuntimeConfig::from(&stored);
        assert_eq!(c.user, "app:staff");
        assert_eq!(c.env, vec!["PATH=/bin", "A=1"]);
        assert_eq!(c.entrypoint, vec!["/entry"]);
        assert_eq!(c.cmd, vec!["serve", "--port=80"]);
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.volumes, vec!["/cache", "/var/lib/data"]);
    }

    #[test]
    fn unset_fields_are_empty() {
        let c = ImageRuntimeConfig::from(&coracle_image::RunConfig::default());
        assert_eq!(c, ImageRuntimeConfig::default());
    }
}
