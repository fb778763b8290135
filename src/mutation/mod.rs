//! PLACEHOLDER (replaced by the mutation branch).
use json_patch::PatchOperation;
use serde_json::Value;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ControlPlane,
    Workers,
}
#[derive(Debug, Clone, Default)]
pub struct Injection;
#[derive(Debug, thiserror::Error)]
#[error("mutation")]
pub struct MutationError;
pub fn desired(_s: &Settings, _t: Target) -> Result<Injection, MutationError> {
    Ok(Injection)
}
pub fn patch(_o: &Value, _t: Target, _i: &Injection) -> Result<Vec<PatchOperation>, MutationError> {
    Ok(vec![])
}
pub fn verify(_o: &Value, _t: Target, _i: &Injection) -> Vec<String> {
    vec![]
}
