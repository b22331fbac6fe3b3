//! The Fly Machines API's JSON bodies, as far as Paddock uses them.
//!
//! Field names and types follow Fly's published Swagger 2.0 description of
//! the Machines API (`CreateMachineRequest`, `fly.MachineConfig`,
//! `fly.MachineGuest`, `fly.File`, `fly.MachineRestart`, `StopRequest`,
//! `Machine`, `ErrorResponse`). Requests serialise only the fields Paddock
//! sets (`None` is omitted, never sent as `null`); responses accept any
//! extra field Fly adds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/apps/{app_name}/machines` body (`CreateMachineRequest`).
#[derive(Debug, Clone, Serialize)]
pub struct CreateMachineRequest {
    /// Unique per app; Paddock derives it from the sandbox id so a create
    /// repeated after a lost answer cannot make a second machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Omitted: Fly picks a region near the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub config: MachineConfig,
}

/// `fly.MachineConfig`, the fields Paddock sets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_destroy: Option<bool>,
}

/// `fly.MachineGuest`: the VM's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineGuest {
    /// `shared` or `performance`.
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u32,
}

/// `fly.File`: a file Fly writes into the machine before it boots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineFile {
    /// Absolute path inside the machine.
    pub guest_path: String,
    /// The contents, base64-encoded.
    pub raw_value: String,
}

/// `fly.MachineRestart`: what flyd does when the main process exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRestart {
    /// `no`, `always` or `on-failure`.
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// `POST …/machines/{id}/stop` body (`StopRequest`). Only the signal is
/// sent: the document describes `timeout` as a `fly.Duration` object while
/// Fly's own client sends a duration string, so Paddock leaves it to Fly's
/// default rather than guess.
#[derive(Debug, Clone, Serialize)]
pub struct StopRequest {
    pub signal: String,
}

/// A machine as Fly reports it (`Machine`).
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `created`, `starting`, `started`, `stopping`, `stopped`,
    /// `suspending`, `suspended`, `replacing`, `destroying`, `destroyed`,
    /// `failed`, …
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub region: String,
    /// Changes with every new version of the machine's config; the wait
    /// endpoint takes it to know which version is meant.
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub config: MachineConfig,
    #[serde(default)]
    pub events: Vec<MachineEvent>,
}

/// `MachineEvent`: one entry of a machine's recent history.
#[derive(Debug, Clone, Deserialize)]
pub struct MachineEvent {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub timestamp: i64,
}

/// `ErrorResponse`: the body of a refused request.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub error: String,
    /// `unknown` or `insufficient_capacity`.
    #[serde(default)]
    pub status: Option<String>,
}

/// The states the wait endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    Started,
    Stopped,
    Destroyed,
}

impl WaitState {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitState::Started => "started",
            WaitState::Stopped => "stopped",
            WaitState::Destroyed => "destroyed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_omits_unset_fields() {
        let body = CreateMachineRequest {
            name: None,
            region: None,
            config: MachineConfig {
                image: "registry.fly.io/paddock-sandbox:1".into(),
                guest: Some(MachineGuest {
                    cpu_kind: "shared".into(),
                    cpus: 1,
                    memory_mb: 256,
                }),
                ..MachineConfig::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"config":{"image":"registry.fly.io/paddock-sandbox:1","guest":{"cpu_kind":"shared","cpus":1,"memory_mb":256}}}"#
        );
    }

    #[test]
    fn machine_accepts_fields_it_does_not_know() {
        let machine: Machine = serde_json::from_str(
            r#"{"id":"3d8d9016b23489","state":"started","private_ip":"fdaa::3","checks":[],
                "events":[{"type":"start","status":"started","source":"flyd","timestamp":1700000000000}]}"#,
        )
        .unwrap();
        assert_eq!(machine.id, "3d8d9016b23489");
        assert_eq!(machine.state, "started");
        assert_eq!(machine.events[0].kind, "start");
        assert!(machine.config.metadata.is_empty());
    }
}
