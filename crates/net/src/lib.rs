//! Pod networking. For now: holding a pod's namespaces without a pause container.

pub mod pin;

pub use pin::{
    NamespaceKind, PinError, PinSetup, PinnedNamespaces, pin_namespaces, unpin_namespaces,
    validate_sysctl,
};
