//! Pure builders of a cluster's market (`spec.market`, docs/economics.md "On Kubernetes"): the
//! control pod — a one-replica StatefulSet running `floe control serve` from the node image,
//! its journal on a volume of its own — its Service, and the Secret with the two keys the
//! operator makes once: the control key (nodes verify lifetimes under its public half, which
//! the operator puts in every committee without asking the pod) and the gateway's account key.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use floe_node::protocol::AccountId;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::builders::{field_env, mount, NODE_UID, TOKEN_KEY, TOKEN_MOUNT};
use super::meta::{self, ClusterMeta, COMPONENT_CONTROL, CONTROL_PORT};
use crate::crd::StorageCluster;

/// Keys in the `<cluster>-control-keys` Secret (32 raw bytes each).
pub const CONTROL_KEY: &str = "control.key";
pub const GATEWAY_KEY: &str = "gateway.key";
/// Where the control pod finds its key, its journal and the admin token.
pub const KEYS_MOUNT: &str = "/etc/floe/control";
pub const JOURNAL_MOUNT: &str = "/var/lib/floe-control";
/// Where a gateway pod finds its account key.
pub const GATEWAY_KEY_MOUNT: &str = "/etc/floe/gateway-account";

/// The market's two private keys.
#[derive(Clone, PartialEq, Eq)]
pub struct MarketKeys {
    pub control: [u8; 32],
    pub gateway: [u8; 32],
}

impl std::fmt::Debug for MarketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MarketKeys(..)")
    }
}

impl MarketKeys {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let (mut control, mut gateway) = ([0u8; 32], [0u8; 32]);
        getrandom::fill(&mut control)?;
        getrandom::fill(&mut gateway)?;
        Ok(MarketKeys { control, gateway })
    }

    /// The keys in an existing Secret (both present, 32 bytes each), if any.
    pub fn from_secret(s: &Secret) -> Option<Self> {
        let d = s.data.as_ref()?;
        let key = |k: &str| -> Option<[u8; 32]> { d.get(k)?.0.as_slice().try_into().ok() };
        Some(MarketKeys {
            control: key(CONTROL_KEY)?,
            gateway: key(GATEWAY_KEY)?,
        })
    }

    /// What committees carry: the control key's public half.
    pub fn control_public(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.control)
            .verifying_key()
            .to_bytes()
    }

    pub fn gateway_account(&self) -> AccountId {
        AccountId::of(&SigningKey::from_bytes(&self.gateway))
    }
}

/// The market's objects, when `spec.market.enabled`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketObjects {
    pub secret: Secret,
    pub stateful_set: StatefulSet,
    pub service: Service,
}

pub fn build(m: &ClusterMeta, sc: &StorageCluster, keys: &MarketKeys) -> Option<MarketObjects> {
    if !sc.spec.market.enabled {
        return None;
    }
    Some(MarketObjects {
        secret: secret(m, keys),
        stateful_set: stateful_set(m, sc, keys),
        service: service(m),
    })
}

/// `host:port` of the control API inside the cluster (`floe --control`).
pub fn url(sc: &StorageCluster) -> Option<String> {
    if !sc.spec.market.enabled {
        return None;
    }
    let ns = sc.metadata.namespace.as_deref()?;
    let name = meta::Names::new(sc.metadata.name.as_deref()?).control();
    Some(format!("{name}.{ns}.svc:{CONTROL_PORT}"))
}

/// Labels that select the control pod.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    meta::component_selector(cluster, COMPONENT_CONTROL)
}

pub fn selector_string(cluster: &str) -> String {
    meta::label_selector(&selector_labels(cluster))
}

pub fn secret(m: &ClusterMeta, keys: &MarketKeys) -> Secret {
    Secret {
        metadata: m.object(m.names.control_keys(), COMPONENT_CONTROL),
        data: Some(BTreeMap::from([
            (CONTROL_KEY.to_string(), ByteString(keys.control.to_vec())),
            (GATEWAY_KEY.to_string(), ByteString(keys.gateway.to_vec())),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The control container: `floe control serve` on the pod IP.
pub fn container(sc: &StorageCluster, keys: &MarketKeys) -> Container {
    let mk = &sc.spec.market;
    let mut args = vec![
        "control".to_string(),
        "serve".to_string(),
        format!("--dir={JOURNAL_MOUNT}"),
        format!("--key-file={KEYS_MOUNT}/{CONTROL_KEY}"),
        format!("--admin-token-file={TOKEN_MOUNT}/{TOKEN_KEY}"),
        // the pod IP, as the gateway does (tier-3 pods are processes on loopback addresses)
        format!("--listen=$(POD_IP):{CONTROL_PORT}"),
        format!("--max-epochs-ahead={}", mk.max_epochs_ahead),
        format!("--faucet-grant={}", mk.faucet_grant),
    ];
    for g in &mk.genesis_balances {
        args.push(format!("--genesis={}={}", g.account, g.units));
    }
    if sc.spec.gateway.enabled && mk.gateway_funds > 0 {
        args.push(format!(
            "--keep-funded={}={}",
            keys.gateway_account(),
            mk.gateway_funds
        ));
    }
    let probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("control".into()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: "control".into(),
        image: Some(sc.spec.image.clone()),
        image_pull_policy: Some(sc.spec.image_pull_policy.as_str().into()),
        command: Some(vec!["floe".into()]),
        args: Some(args),
        env: Some(vec![
            field_env("POD_IP", "status.podIP"),
            k8s_openapi::api::core::v1::EnvVar {
                name: "FLOE_LOG".into(),
                value: Some("info".into()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("control".into()),
            container_port: CONTROL_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(probe),
        resources: Some(mk.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("journal", JOURNAL_MOUNT, false),
            mount("keys", KEYS_MOUNT, true),
            mount("admin-token", TOKEN_MOUNT, true),
        ]),
        ..Container::default()
    }
}

/// One replica (the market is one journal), replaced in place: a StatefulSet keeps the volume
/// and never runs two pods of the same ordinal, so two writers never share the journal.
pub fn stateful_set(m: &ClusterMeta, sc: &StorageCluster, keys: &MarketKeys) -> StatefulSet {
    let labels = meta::labels(&m.names.cluster, COMPONENT_CONTROL);
    let secret_volume = |name: &str, secret: String, items: Option<Vec<KeyToPath>>| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items,
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    StatefulSet {
        metadata: m.object(m.names.control(), COMPONENT_CONTROL),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(m.names.control()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&m.names.cluster)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(sc, keys)],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NODE_UID),
                        run_as_group: Some(NODE_UID),
                        fs_group: Some(NODE_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![
                        // the control key only: the gateway's key is not the market's business
                        secret_volume(
                            "keys",
                            m.names.control_keys(),
                            Some(vec![KeyToPath {
                                key: CONTROL_KEY.into(),
                                path: CONTROL_KEY.into(),
                                mode: None,
                            }]),
                        ),
                        secret_volume("admin-token", m.names.admin_secret(), None),
                    ]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("journal".into()),
                    labels: Some(meta::labels(&m.names.cluster, COMPONENT_CONTROL)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: sc.spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            sc.spec.market.volume_size.clone(),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

pub fn service(m: &ClusterMeta) -> Service {
    Service {
        metadata: m.object(m.names.control(), COMPONENT_CONTROL),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&m.names.cluster)),
            ports: Some(vec![ServicePort {
                name: Some("control".into()),
                port: CONTROL_PORT,
                target_port: Some(IntOrString::String("control".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The gateway's volume holding its account key (only that key of the Secret).
pub fn gateway_key_volume(m: &ClusterMeta) -> Volume {
    Volume {
        name: "account".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(m.names.control_keys()),
            items: Some(vec![KeyToPath {
                key: GATEWAY_KEY.into(),
                path: GATEWAY_KEY.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::spec::{GenesisBalance, MarketSpec};
    use crate::kube::meta::LABEL_COMPONENT;

    fn cluster(market: MarketSpec, gateway: bool) -> StorageCluster {
        let mut sc: StorageCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "floe.dev/v1alpha1", "kind": "StorageCluster",
            "metadata": {"name": "alpha", "namespace": "data", "uid": "u-1"},
            "spec": {"nodes": 4, "shards": 10}
        }))
        .unwrap();
        sc.spec.market = market;
        sc.spec.gateway.enabled = gateway;
        sc
    }

    fn keys() -> MarketKeys {
        MarketKeys {
            control: [1; 32],
            gateway: [2; 32],
        }
    }

    #[test]
    fn off_by_default() {
        let sc = cluster(MarketSpec::default(), false);
        let m = ClusterMeta::new(&sc).unwrap();
        assert!(build(&m, &sc, &keys()).is_none());
        assert_eq!(url(&sc), None);
    }

    #[test]
    fn keys_round_trip_through_their_secret() {
        let sc = cluster(MarketSpec::default(), false);
        let m = ClusterMeta::new(&sc).unwrap();
        let s = secret(&m, &keys());
        assert_eq!(s.metadata.name.as_deref(), Some("alpha-control-keys"));
        assert_eq!(MarketKeys::from_secret(&s), Some(keys()));
        let mut short = s.clone();
        short
            .data
            .as_mut()
            .unwrap()
            .insert(CONTROL_KEY.into(), ByteString(vec![1; 31]));
        assert_eq!(MarketKeys::from_secret(&short), None);
        let k = MarketKeys::generate().unwrap();
        assert_ne!(k.control, k.gateway);
        assert_eq!(
            k.control_public(),
            SigningKey::from_bytes(&k.control)
                .verifying_key()
                .to_bytes()
        );
    }

    #[test]
    fn the_control_pod_serves_the_market_from_its_volume() {
        let market = MarketSpec {
            enabled: true,
            max_epochs_ahead: 20,
            faucet_grant: 500,
            genesis_balances: vec![GenesisBalance {
                account: "ab".repeat(32),
                units: 9000,
            }],
            gateway_funds: 777,
            ..MarketSpec::default()
        };
        let sc = cluster(market, true);
        let m = ClusterMeta::new(&sc).unwrap();
        let o = build(&m, &sc, &keys()).unwrap();
        let spec = o.stateful_set.spec.as_ref().unwrap();
        assert_eq!(
            o.stateful_set.metadata.name.as_deref(),
            Some("alpha-control")
        );
        assert_eq!(spec.replicas, Some(1));
        let owner = &o.stateful_set.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, "u-1");
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["floe".to_string()][..]));
        let args = c.args.as_ref().unwrap();
        for want in [
            "control".to_string(),
            "serve".to_string(),
            "--max-epochs-ahead=20".to_string(),
            "--faucet-grant=500".to_string(),
            format!("--genesis={}=9000", "ab".repeat(32)),
            format!("--keep-funded={}=777", keys().gateway_account()),
            format!("--listen=$(POD_IP):{CONTROL_PORT}"),
        ] {
            assert!(args.contains(&want), "{want} in {args:?}");
        }
        // the pod mounts the control key only, never the gateway's
        let keys_volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "keys")
            .unwrap();
        let items = keys_volume.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, CONTROL_KEY);
        // its pod labels are selected by the Service and not by the node StatefulSet
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v));
        }
        assert_eq!(
            o.service.spec.as_ref().unwrap().selector.as_ref(),
            spec.selector.match_labels.as_ref()
        );
        assert_ne!(
            pod_labels.get(LABEL_COMPONENT).map(String::as_str),
            Some(meta::COMPONENT_NODE)
        );
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("1Gi".into())
        );
        assert_eq!(url(&sc).as_deref(), Some("alpha-control.data.svc:7100"));
    }

    #[test]
    fn without_a_gateway_no_account_is_kept_funded() {
        let sc = cluster(
            MarketSpec {
                enabled: true,
                ..MarketSpec::default()
            },
            false,
        );
        let args = container(&sc, &keys()).args.unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--keep-funded")),
            "{args:?}"
        );
    }
}
