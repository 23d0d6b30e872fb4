//! Container cgroups (v1, v2 and the hybrid layout) through cgroups-rs.
