//! The JSON patch that puts an [`Injection`] into a KCP/KCT, the verification of an object against it, and a
//! helper to apply a patch.
//!
//! Ownership: a `files[]` entry is ours when its `path` is one we inject (or injected in an earlier release) under
//! `/etc/capi-calico/`; a command is ours when it is exactly one we inject (or injected before). Everything else
//! belongs to the user and is never modified or reordered. The directory is reserved: a user file in it, or a user
//! command that mentions it, is refused with a message rather than taken over or dropped.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::{
    APPLY_COMMAND, APPLY_SCRIPT_PATH, APPLY_UNIT_PATH, BGP_CONFIGURATION_PATH, BGP_PEERS_PATH,
    CALICOCTL_BINARY_PATH, CALICOCTL_CONF_PATH, CALICOCTL_FALLBACK_PATH, DIR, INSTALL_COMMAND,
    INSTALL_SCRIPT_PATH, Injection, MAX_COMMANDS, MAX_CONTENT_CHARS, MAX_FILES, MutationError,
    Target,
};

const FILES: &str = "files";
const PRE: &str = "preKubeadmCommands";
const POST: &str = "postKubeadmCommands";

/// Commands an earlier release injected. They stay ours, so an object injected by that release gets them replaced
/// in place by the current ones, never left behind beside them. When `INSTALL_COMMAND` or `APPLY_COMMAND` changes,
/// the old text goes here.
pub(super) const RETIRED_COMMANDS: &[&str] = &[
    // APPLY_COMMAND before the persistent unit: a transient one, with RuntimeMaxSec.
    "if command -v systemd-run >/dev/null 2>&1; then systemd-run --no-block --unit=capi-calico-apply-bgp \
     -p RuntimeMaxSec=1860 --description='capi-calico: apply BGPPeers then BGPConfiguration' \
     /bin/bash /etc/capi-calico/apply-bgp.sh; else nohup setsid /bin/bash /etc/capi-calico/apply-bgp.sh \
     </dev/null >/dev/null 2>&1 & fi",
    // APPLY_COMMAND before the unit got RuntimeMaxSec.
    "if command -v systemd-run >/dev/null 2>&1; then systemd-run --no-block --unit=capi-calico-apply-bgp \
     --description='capi-calico: apply BGPPeers then BGPConfiguration' /bin/bash /etc/capi-calico/apply-bgp.sh; \
     else nohup setsid /bin/bash /etc/capi-calico/apply-bgp.sh </dev/null >/dev/null 2>&1 & fi",
    // INSTALL_COMMAND before it ended in `|| true` (a failed install stopped Ignition's `set -e` bootstrap).
    "/bin/bash /etc/capi-calico/install-calicoctl.sh",
];

/// Files an earlier release injected that the current one does not (same rule as [`RETIRED_COMMANDS`]).
const RETIRED_PATHS: &[&str] = &[];

/// True for a file path the webhook owns: one of the files it injects, or injected in an earlier release.
pub fn is_ours_path(path: &str) -> bool {
    [
        INSTALL_SCRIPT_PATH,
        CALICOCTL_CONF_PATH,
        BGP_PEERS_PATH,
        BGP_CONFIGURATION_PATH,
        APPLY_SCRIPT_PATH,
        APPLY_UNIT_PATH,
    ]
    .contains(&path)
        || RETIRED_PATHS.contains(&path)
        || is_split_peers_path(path)
}

/// `/etc/capi-calico/bgppeers-N.yaml` with N ≥ 2 in plain decimal: the further peers files of a large peer set.
pub(super) fn is_split_peers_path(path: &str) -> bool {
    path.strip_prefix(DIR)
        .and_then(|name| name.strip_prefix("bgppeers-"))
        .and_then(|name| name.strip_suffix(".yaml"))
        .is_some_and(|n| {
            !n.is_empty()
                && !n.starts_with('0')
                && n.len() <= 4
                && n.bytes().all(|b| b.is_ascii_digit())
                && n != "1"
        })
}

/// True for a command the webhook owns: exactly one of the constant commands it injects, or injected before.
pub fn is_ours_command(cmd: &str) -> bool {
    cmd == INSTALL_COMMAND || cmd == APPLY_COMMAND || RETIRED_COMMANDS.contains(&cmd)
}

/// The message for a user command that mentions the reserved directory, if `cmd` is one.
fn reserved_command(field: &str, cmd: &str) -> Option<String> {
    (cmd.contains(DIR) && !is_ours_command(cmd)).then(|| {
        format!(
            "{field}: the command `{}` mentions {DIR}, which capi-calico-webhook reserves for its own files and \
             commands; remove the command or use paths outside {DIR}",
            short(cmd)
        )
    })
}

/// Lexical normalisation (`//`, `.`, `..`) of an absolute path, for collision checks only.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A user file that is not textually ours but would land on something we own.
fn collision(path: &str, injection: &Injection) -> Option<String> {
    if is_ours_path(path) {
        return None;
    }
    let n = normalize(path);
    let dir = DIR.trim_end_matches('/');
    if path.starts_with(DIR) {
        return Some(format!(
            "file {path:?} is in {DIR}, which capi-calico-webhook reserves for its own files; use a path outside \
             {DIR}"
        ));
    }
    if n == dir || n.starts_with(DIR) {
        return Some(format!(
            "file {path:?} resolves into {DIR}, which capi-calico-webhook reserves for its own files; \
             use a path outside {DIR}"
        ));
    }
    if (n == CALICOCTL_BINARY_PATH || n == CALICOCTL_FALLBACK_PATH)
        && injection.file(INSTALL_SCRIPT_PATH).is_some()
    {
        return Some(format!(
            "file {path:?} would be overwritten by the pinned calicoctl that INSTALL_CALICOCTL=true installs at \
             {n}; remove the file or set capi-calico.io/INSTALL_CALICOCTL to \"false\" in the \
             Cluster's settings"
        ));
    }
    None
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn pointer_with(base: &[&str], more: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(base.iter().chain(more.iter()).copied())
}

fn dotted(target: Target, field: &str) -> String {
    format!("{}.{field}", target.spec_path().join("."))
}

/// What happens to one existing list.
#[derive(Debug, Default)]
struct ListPlan {
    /// (index, new value), replacing one of our entries in place.
    replace: Vec<(usize, Value)>,
    /// Indices of stale or duplicated entries of ours, ascending.
    remove: Vec<usize>,
    /// Missing entries of ours, appended in injection order.
    append: Vec<Value>,
    /// Length after the plan.
    final_len: usize,
    /// The whole list after the plan, when a missing entry of ours belongs before one that is there (a second peers
    /// file after a settings change): one `replace` of the list, so that ours stay in injection order, as a fresh
    /// injection has them (Cluster API's topology controller compares its dry runs of both, see `docs/deploy.md`).
    whole: Option<Vec<Value>>,
}

impl ListPlan {
    /// The entries of `existing` this plan keeps, with their indices, as they are after its replacements.
    fn kept<'a>(&'a self, existing: &'a [Value]) -> impl Iterator<Item = (usize, Value)> + 'a {
        existing
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.remove.contains(i))
            .map(|(i, entry)| {
                let replaced = self.replace.iter().find(|(r, _)| *r == i);
                (
                    i,
                    replaced.map_or_else(|| entry.clone(), |(_, v)| v.clone()),
                )
            })
    }

    fn is_noop(&self) -> bool {
        self.replace.is_empty()
            && self.remove.is_empty()
            && self.append.is_empty()
            && self.whole.is_none()
    }
}

/// Every user entry of the three lists that collides with what we own: files that would land in [`DIR`] or on the
/// binary we install, commands that mention [`DIR`]. All of them, so that one denial names each.
fn conflicts(fields: &[(&str, Option<&[Value]>)], injection: &Injection) -> Vec<String> {
    let mut found = Vec::new();
    for (field, existing) in fields {
        for entry in existing.iter().copied().flatten() {
            let conflict = if *field == FILES {
                entry
                    .get("path")
                    .and_then(Value::as_str)
                    .and_then(|path| collision(path, injection))
            } else {
                entry.as_str().and_then(|cmd| reserved_command(field, cmd))
            };
            found.extend(conflict);
        }
    }
    found
}

fn plan_files(existing: &[Value], injection: &Injection) -> ListPlan {
    let mut placed = vec![false; injection.files.len()];
    // Which of ours each kept existing entry is (existing index → injection index).
    let mut ours_at = std::collections::HashMap::new();
    let mut plan = ListPlan::default();
    for (i, entry) in existing.iter().enumerate() {
        let Some(path) = entry.get("path").and_then(Value::as_str) else {
            continue; // not a file entry we can recognise: the user's, left alone
        };
        if !is_ours_path(path) {
            continue; // the user's (conflicts were refused before planning)
        }
        match injection.files.iter().position(|f| f.path == path) {
            Some(j) if !placed[j] => {
                placed[j] = true;
                ours_at.insert(i, j);
                if !injection.files[j].matches(entry) {
                    plan.replace.push((i, injection.files[j].to_json()));
                }
            }
            _ => plan.remove.push(i),
        }
    }
    for (j, f) in injection.files.iter().enumerate() {
        if !placed[j] {
            plan.append.push(f.to_json());
        }
    }
    plan.final_len = existing.len() - plan.remove.len() + plan.append.len();
    let missing: Vec<usize> = (0..placed.len()).filter(|j| !placed[*j]).collect();
    let last_kept = ours_at.values().max();
    if missing.first().zip(last_kept).is_some_and(|(m, k)| m < k) {
        let mut whole = Vec::with_capacity(plan.final_len);
        let mut next = missing.iter().peekable();
        for (i, entry) in plan.kept(existing) {
            if let Some(k) = ours_at.get(&i) {
                while let Some(j) = next.next_if(|j| *j < k) {
                    whole.push(injection.files[*j].to_json());
                }
            }
            whole.push(entry);
        }
        whole.extend(next.map(|j| injection.files[*j].to_json()));
        plan.whole = Some(whole);
    }
    plan
}

/// `ours_first`: our commands go before the user's (postKubeadmCommands: under Ignition, Cluster API runs them in
/// one `set -e` script, so a failing user command before ours would leave the apply unit never enabled); otherwise
/// missing ones are appended after them (preKubeadmCommands: after the user's proxy and network set-up).
fn plan_commands(existing: &[Value], desired: &[&'static str], ours_first: bool) -> ListPlan {
    let mut placed = vec![false; desired.len()];
    let mut handled = vec![false; existing.len()];
    // Pass 1: exact matches stay where they are.
    for (i, entry) in existing.iter().enumerate() {
        let Some(cmd) = entry.as_str() else { continue };
        if let Some(j) = desired
            .iter()
            .enumerate()
            .position(|(j, d)| !placed[j] && *d == cmd)
        {
            placed[j] = true;
            handled[i] = true;
        }
    }
    // Pass 2: other commands of ours are rewritten in place into a still-missing command, or removed.
    let mut plan = ListPlan::default();
    for (i, entry) in existing.iter().enumerate() {
        if handled[i] {
            continue;
        }
        let Some(cmd) = entry.as_str() else { continue };
        if !is_ours_command(cmd) {
            continue;
        }
        match placed.iter().position(|p| !p) {
            Some(j) => {
                placed[j] = true;
                plan.replace
                    .push((i, Value::String(desired[j].to_string())));
            }
            None => plan.remove.push(i),
        }
    }
    for (j, d) in desired.iter().enumerate() {
        if !placed[j] {
            plan.append.push(Value::String((*d).to_string()));
        }
    }
    plan.final_len = existing.len() - plan.remove.len() + plan.append.len();
    if ours_first && !desired.is_empty() {
        let after: Vec<Value> = plan
            .kept(existing)
            .map(|(_, entry)| entry)
            .chain(plan.append.iter().cloned())
            .collect();
        let is_ours = |v: &Value| v.as_str().is_some_and(|c| desired.contains(&c));
        let mut first: Vec<Value> = desired
            .iter()
            .map(|d| Value::String((*d).to_string()))
            .collect();
        first.extend(after.into_iter().filter(|v| !is_ours(v)));
        if first.as_slice() != existing {
            plan.whole = Some(first);
        }
    }
    plan
}

/// The kubeadm config spec of `object` for `target`: `Ok(Some(map))` when present, `Ok(None)` with the depth of the
/// first missing key otherwise.
enum Container<'a> {
    Present(&'a Map<String, Value>),
    /// Index into `target.spec_path()` of the first missing (or null) key.
    Missing(usize),
}

fn container(object: &Value, target: Target) -> Result<Container<'_>, MutationError> {
    let Value::Object(root) = object else {
        return Err(MutationError::Malformed(
            "the object is not a JSON object".into(),
        ));
    };
    let mut cur = root;
    let path = target.spec_path();
    for (depth, key) in path.iter().enumerate() {
        match cur.get(*key) {
            None | Some(Value::Null) => return Ok(Container::Missing(depth)),
            Some(Value::Object(m)) => cur = m,
            Some(_) => {
                return Err(MutationError::Malformed(format!(
                    "{} is not an object",
                    path[..=depth].join(".")
                )));
            }
        }
    }
    Ok(Container::Present(cur))
}

fn list<'a>(
    spec: &'a Map<String, Value>,
    target: Target,
    field: &str,
) -> Result<Option<&'a [Value]>, MutationError> {
    match spec.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(_) => Err(MutationError::Malformed(format!(
            "{} is not a list",
            dotted(target, field)
        ))),
    }
}

/// Whether the level `depth` of `target.spec_path()` may be removed when it would become empty.
/// A KCP's `spec` always stays; its `kubeadmConfigSpec` stays in v1beta1, where it is required (and `{}` is
/// allowed). In v1beta2 an empty `kubeadmConfigSpec` or KCT `spec.template[.spec]` is invalid, so it is removed.
fn removable(object: &Value, target: Target, depth: usize) -> bool {
    match target {
        Target::Workers => true,
        Target::ControlPlane => {
            let v1beta1 = object
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.ends_with("/v1beta1"));
            depth == 1 && !v1beta1
        }
    }
}

/// JSON patch operations that make `object` hold exactly `injection` (see the module docs for ownership).
///
/// Order: existing entries of ours are rewritten in place; missing ones are appended after the user's entries
/// (a missing file that belongs before one of ours already there is put in injection order instead); our post
/// command goes first; stale and duplicated entries of ours are removed. Missing parents and lists
/// are created; a list (or parent) that would become empty is removed instead. An already-correct object yields an
/// empty vector.
pub fn patch(
    object: &Value,
    target: Target,
    injection: &Injection,
) -> Result<Vec<PatchOperation>, MutationError> {
    for c in injection
        .pre_kubeadm_commands
        .iter()
        .chain(&injection.post_kubeadm_commands)
    {
        if c.is_empty() || c.chars().count() > MAX_CONTENT_CHARS {
            return Err(MutationError::TooLarge(format!(
                "an injected command has {} characters; CAPI allows 1..={MAX_CONTENT_CHARS}",
                c.chars().count()
            )));
        }
    }
    check_count(injection.files.len(), MAX_FILES, target, FILES)?;
    check_count(
        injection.pre_kubeadm_commands.len(),
        MAX_COMMANDS,
        target,
        PRE,
    )?;
    check_count(
        injection.post_kubeadm_commands.len(),
        MAX_COMMANDS,
        target,
        POST,
    )?;

    let path = target.spec_path();
    let spec = match container(object, target)? {
        Container::Missing(depth) => return Ok(create_missing(path, depth, injection)),
        Container::Present(spec) => spec,
    };

    let mut ops: Vec<PatchOperation> = Vec::new();
    let mut remaining_keys: Vec<&str> = spec.keys().map(String::as_str).collect();

    let fields: [(&str, Option<&[Value]>); 3] = [
        (FILES, list(spec, target, FILES)?),
        (PRE, list(spec, target, PRE)?),
        (POST, list(spec, target, POST)?),
    ];
    let found = conflicts(&fields, injection);
    if !found.is_empty() {
        return Err(MutationError::Conflict(found));
    }
    let mut plans = Vec::new();
    for (field, existing) in fields {
        let plan = match (field, existing) {
            (_, None) => None,
            (FILES, Some(a)) => Some(plan_files(a, injection)),
            (PRE, Some(a)) => Some(plan_commands(a, &injection.pre_kubeadm_commands, false)),
            (_, Some(a)) => Some(plan_commands(a, &injection.post_kubeadm_commands, true)),
        };
        let (desired_len, max) = match field {
            FILES => (injection.files.len(), MAX_FILES),
            PRE => (injection.pre_kubeadm_commands.len(), MAX_COMMANDS),
            _ => (injection.post_kubeadm_commands.len(), MAX_COMMANDS),
        };
        let final_len = plan.as_ref().map_or(desired_len, |p| p.final_len);
        check_count(final_len, max, target, field)?;
        let exists_after = match &plan {
            Some(p) => p.is_noop() || p.final_len > 0,
            None => desired_len > 0,
        };
        if !exists_after {
            remaining_keys.retain(|k| *k != field);
        }
        plans.push((field, existing, plan));
    }

    // The whole spec (and possibly its parents) would become empty: remove the highest such level instead.
    if remaining_keys.is_empty() && !spec.is_empty() {
        let depth = path.len() - 1;
        if removable(object, target, depth) {
            let mut top = depth;
            while top > 0
                && removable(object, target, top - 1)
                && single_key_parent(object, &path[..top])
            {
                top -= 1;
            }
            return Ok(vec![PatchOperation::Remove(RemoveOperation {
                path: pointer(&path[..=top]),
            })]);
        }
    }

    for (field, existing, plan) in plans {
        match (existing, plan) {
            (None, _) => {
                let values: Vec<Value> = match field {
                    FILES => injection.files.iter().map(|f| f.to_json()).collect(),
                    PRE => strings(&injection.pre_kubeadm_commands),
                    _ => strings(&injection.post_kubeadm_commands),
                };
                if !values.is_empty() {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: pointer_with(path, &[field]),
                        value: Value::Array(values),
                    }));
                }
            }
            (Some(_), None) => {}
            (Some(_), Some(plan)) => {
                if plan.is_noop() {
                    continue;
                }
                if plan.final_len == 0 {
                    ops.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer_with(path, &[field]),
                    }));
                    continue;
                }
                if let Some(whole) = plan.whole {
                    ops.push(PatchOperation::Replace(ReplaceOperation {
                        path: pointer_with(path, &[field]),
                        value: Value::Array(whole),
                    }));
                    continue;
                }
                for (i, value) in plan.replace {
                    let idx = i.to_string();
                    ops.push(PatchOperation::Replace(ReplaceOperation {
                        path: pointer_with(path, &[field, &idx]),
                        value,
                    }));
                }
                for i in plan.remove.into_iter().rev() {
                    let idx = i.to_string();
                    ops.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer_with(path, &[field, &idx]),
                    }));
                }
                for value in plan.append {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: pointer_with(path, &[field, "-"]),
                        value,
                    }));
                }
            }
        }
    }
    Ok(ops)
}

/// True when the object at `tokens` has exactly one key (the child being removed).
fn single_key_parent(object: &Value, tokens: &[&str]) -> bool {
    let mut cur = object;
    for t in tokens {
        match cur.get(*t) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    cur.as_object().is_some_and(|m| m.len() == 1)
}

fn strings(cmds: &[&'static str]) -> Vec<Value> {
    cmds.iter()
        .map(|c| Value::String((*c).to_string()))
        .collect()
}

fn check_count(n: usize, max: usize, target: Target, field: &str) -> Result<(), MutationError> {
    if n > max {
        return Err(MutationError::TooLarge(format!(
            "{} would have {n} entries after injection; CAPI allows at most {max}",
            dotted(target, field)
        )));
    }
    Ok(())
}

/// The `add` for a missing part of the path: one operation creating the missing levels with only our lists.
fn create_missing(path: &[&str], depth: usize, injection: &Injection) -> Vec<PatchOperation> {
    let mut spec = Map::new();
    if !injection.files.is_empty() {
        spec.insert(
            FILES.into(),
            Value::Array(injection.files.iter().map(|f| f.to_json()).collect()),
        );
    }
    if !injection.pre_kubeadm_commands.is_empty() {
        spec.insert(
            PRE.into(),
            Value::Array(strings(&injection.pre_kubeadm_commands)),
        );
    }
    if !injection.post_kubeadm_commands.is_empty() {
        spec.insert(
            POST.into(),
            Value::Array(strings(&injection.post_kubeadm_commands)),
        );
    }
    if spec.is_empty() {
        return Vec::new();
    }
    let mut value = Value::Object(spec);
    for key in path[depth + 1..].iter().rev() {
        let mut m = Map::new();
        m.insert((*key).to_string(), value);
        value = Value::Object(m);
    }
    vec![PatchOperation::Add(AddOperation {
        path: pointer(&path[..=depth]),
        value,
    })]
}

/// True when `object` carries any file or command of ours (for a warning when its Cluster no longer asks for them).
pub fn carries_injection(object: &Value, target: Target) -> bool {
    let Ok(Container::Present(spec)) = container(object, target) else {
        return false;
    };
    let ours = |field: &str, is_ours: &dyn Fn(&Value) -> bool| {
        list(spec, target, field)
            .ok()
            .flatten()
            .is_some_and(|entries| entries.iter().any(is_ours))
    };
    ours(FILES, &|f| {
        f.get("path")
            .and_then(Value::as_str)
            .is_some_and(is_ours_path)
    }) || ours(PRE, &|c| c.as_str().is_some_and(is_ours_command))
        || ours(POST, &|c| c.as_str().is_some_and(is_ours_command))
}

/// Problems that make `object` differ from `injection`: our files or commands missing, altered, duplicated or
/// stale, and user entries that collide with ours. Empty when [`patch`] would return no operation.
pub fn verify(object: &Value, target: Target, injection: &Injection) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Map::new();
    let spec = match container(object, target) {
        Ok(Container::Present(m)) => m,
        Ok(Container::Missing(_)) => &empty,
        Err(e) => return vec![e.to_string()],
    };
    let where_files = dotted(target, FILES);

    // Files.
    let files: &[Value] = match list(spec, target, FILES) {
        Ok(Some(a)) => a,
        Ok(None) => &[],
        Err(e) => {
            problems.push(e.to_string());
            &[]
        }
    };
    for f in &injection.files {
        let found: Vec<&Value> = files
            .iter()
            .filter(|e| e.get("path").and_then(Value::as_str) == Some(f.path.as_str()))
            .collect();
        match found.as_slice() {
            [] => problems.push(format!("{where_files}: {} is missing", f.path)),
            [first, rest @ ..] => {
                if !f.matches(first) {
                    problems.push(format!(
                        "{where_files}: {} was altered ({} differ from what capi-calico-webhook injects)",
                        f.path,
                        differing_fields(first, &f.to_json())
                    ));
                }
                if !rest.is_empty() {
                    problems.push(format!(
                        "{where_files}: {} appears {} times",
                        f.path,
                        found.len()
                    ));
                }
            }
        }
    }
    for e in files {
        let Some(path) = e.get("path").and_then(Value::as_str) else {
            continue;
        };
        if is_ours_path(path) && injection.file(path).is_none() {
            problems.push(format!(
                "{where_files}: unexpected {path} (paths under {DIR} are reserved for capi-calico-webhook)"
            ));
        } else if let Some(msg) = collision(path, injection) {
            problems.push(format!("{where_files}: {msg}"));
        }
    }

    // Commands.
    for (field, desired) in [
        (PRE, &injection.pre_kubeadm_commands),
        (POST, &injection.post_kubeadm_commands),
    ] {
        let where_cmds = dotted(target, field);
        let cmds: &[Value] = match list(spec, target, field) {
            Ok(Some(a)) => a,
            Ok(None) => &[],
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        for d in desired.iter() {
            let n = cmds.iter().filter(|c| c.as_str() == Some(*d)).count();
            match n {
                0 => problems.push(format!(
                    "{where_cmds}: the command `{}` is missing",
                    short(d)
                )),
                1 => {}
                n => problems.push(format!(
                    "{where_cmds}: the command `{}` appears {n} times",
                    short(d)
                )),
            }
        }
        for c in cmds.iter().filter_map(Value::as_str) {
            if is_ours_command(c) && !desired.contains(&c) {
                problems.push(format!(
                    "{where_cmds}: unexpected command of capi-calico-webhook: `{}`",
                    short(c)
                ));
            } else if let Some(msg) = reserved_command(&where_cmds, c) {
                problems.push(msg);
            }
        }
    }
    problems
}

fn differing_fields(have: &Value, want: &Value) -> String {
    let mut keys: Vec<&str> = Vec::new();
    let empty = Map::new();
    let h = have.as_object().unwrap_or(&empty);
    let w = want.as_object().unwrap_or(&empty);
    for k in h.keys().chain(w.keys()) {
        if h.get(k) != w.get(k) && !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    keys.sort_unstable();
    keys.join(", ")
}

fn short(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push_str("...");
        t
    }
}

/// Apply `ops` to a copy of `object` (what the API server stores after our mutation).
pub fn apply(object: &Value, ops: &[PatchOperation]) -> Result<Value, MutationError> {
    let mut out = object.clone();
    json_patch::patch(&mut out, ops).map_err(|e| MutationError::Apply(e.to_string()))?;
    Ok(out)
}
