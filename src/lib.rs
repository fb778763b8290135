//! capi-calico-webhook: validate Calico settings on Cluster API clusters and inject a pinned, checksum-verified
//! calicoctl and a safe BGP configuration into KubeadmControlPlanes and KubeadmConfigTemplates.
//!
//! See `docs/architecture.md` for the layering.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod cluster;
pub mod delivery;
pub mod manifest;
pub mod mutation;
pub mod server;
pub mod settings;
