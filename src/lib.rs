//! capi-calico-webhook: validate Calico settings on Cluster API clusters and inject a pinned, checksum-verified
//! calicoctl and a safe BGP configuration into KubeadmControlPlanes and KubeadmConfigTemplates.
//!
//! See `docs/architecture.md` for the layering.
#![forbid(unsafe_code)]

pub mod admission;
pub mod mutation;
pub mod settings;
