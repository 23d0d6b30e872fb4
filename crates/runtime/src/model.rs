//! The runtime's own model of pods and containers, independent of any CRI version.
//! Records are persisted as JSON; new fields must carry `#[serde(default)]` so that
//! records written by an older coracled still load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Record;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    Ready,
    #[default]
    NotReady,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub metadata: PodMetadata,
    pub state: PodState,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(default)]
    pub runtime_handler: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Record for PodRecord {
    const KIND: &'static str = "pod";

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub metadata: ContainerMetadata,
    pub state: ContainerState,
    /// The image as the request named it.
    pub image: String,
    /// The resolved image (`repo@sha256:...` or image id).
    #[serde(default)]
    pub image_ref: String,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "container";

    fn id(&self) -> &str {
        &self.id
    }
}
