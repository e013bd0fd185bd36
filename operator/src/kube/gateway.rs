//! Pure builders of the HTTP gateway's objects (`spec.gateway`): a Deployment of `floe-gateway`
//! from the node image, its Service and an optional Ingress, all owned by the StorageCluster.
//! The gateway learns the committee through the cluster's client Service, like any client.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::builders::NODE_UID;
use super::meta::{self, ClusterMeta, COMPONENT_GATEWAY, GATEWAY_PORT, GRPC_PORT};
use crate::crd::StorageCluster;

/// Key of the JWT secret in `spec.gateway.authSecret`.
pub const JWT_KEY: &str = "jwt-secret";
/// Where uploads above the in-memory threshold are spooled (an emptyDir).
pub const SPOOL_MOUNT: &str = "/var/spool/floe-gateway";

/// The gateway's objects, when `spec.gateway.enabled`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayObjects {
    pub deployment: Deployment,
    pub service: Service,
    pub ingress: Option<Ingress>,
}

/// Labels that select the gateway pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    meta::component_selector(cluster, COMPONENT_GATEWAY)
}

/// Everything for the gateway, or `None` when it is off.
pub fn build(m: &ClusterMeta, sc: &StorageCluster) -> Option<GatewayObjects> {
    if !sc.spec.gateway.enabled {
        return None;
    }
    Some(GatewayObjects {
        deployment: deployment(m, sc),
        service: service(m, sc),
        ingress: ingress(m, sc),
    })
}

/// Where clients find the gateway: the Ingress host when there is one, else the Service's
/// cluster DNS name (shown by `kubectl get fsc`).
pub fn url(sc: &StorageCluster) -> Option<String> {
    let g = &sc.spec.gateway;
    if !g.enabled {
        return None;
    }
    if let Some(i) = &g.ingress {
        let scheme = if i.tls_secret.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}", i.host));
    }
    let ns = sc.metadata.namespace.as_deref()?;
    let name = meta::Names::new(sc.metadata.name.as_deref()?).gateway();
    Some(format!("http://{name}.{ns}.svc:{GATEWAY_PORT}"))
}

/// Requests and limits when the spec gives none: small, with room for in-flight slivers.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("1Gi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The gateway container: `floe-gateway` from the node image, pointed at the client Service.
pub fn container(m: &ClusterMeta, sc: &StorageCluster) -> Container {
    let g = &sc.spec.gateway;
    let nodes = format!(
        "https://{}.{}.svc:{GRPC_PORT}",
        m.names.client_service(),
        m.namespace
    );
    let mut args = vec![
        // the pod IP, as the nodes do (tier-3 pods are processes on loopback addresses)
        format!("--listen=$(POD_IP):{GATEWAY_PORT}"),
        format!("--nodes={nodes}"),
        format!("--spool-dir={SPOOL_MOUNT}"),
        "--log-format=json".to_string(),
    ];
    if let Some(b) = g.max_body_bytes {
        args.push(format!("--max-body={b}"));
    }
    // a network that sells storage: the gateway pays from its own account
    if let Some(control) = super::market::url(sc) {
        args.push(format!("--control={control}"));
        args.push(format!(
            "--account-key={}/{}",
            super::market::GATEWAY_KEY_MOUNT,
            super::market::GATEWAY_KEY
        ));
    }
    let mut env = vec![EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    if let Some(secret) = &g.auth_secret {
        env.push(EnvVar {
            name: "FLOE_GATEWAY_JWT_SECRET".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: JWT_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    Container {
        name: "gateway".into(),
        image: Some(sc.spec.image.clone()),
        image_pull_policy: Some(sc.spec.image_pull_policy.as_str().into()),
        command: Some(vec!["floe-gateway".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: GATEWAY_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz")),
        // ready once the committee is known
        readiness_probe: Some(probe("/readyz")),
        resources: Some(g.resources.clone().unwrap_or_else(default_resources)),
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
        volume_mounts: Some({
            let mut v = vec![VolumeMount {
                name: "spool".into(),
                mount_path: SPOOL_MOUNT.into(),
                ..VolumeMount::default()
            }];
            if sc.spec.market.enabled {
                v.push(super::builders::mount(
                    "account",
                    super::market::GATEWAY_KEY_MOUNT,
                    true,
                ));
            }
            v
        }),
        ..Container::default()
    }
}

pub fn deployment(m: &ClusterMeta, sc: &StorageCluster) -> Deployment {
    let labels = meta::labels(&m.names.cluster, COMPONENT_GATEWAY);
    Deployment {
        metadata: m.object(m.names.gateway(), COMPONENT_GATEWAY),
        spec: Some(DeploymentSpec {
            replicas: Some(sc.spec.gateway.replicas.max(0)),
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
                    containers: vec![container(m, sc)],
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
                    volumes: Some({
                        let mut v = vec![Volume {
                            name: "spool".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        }];
                        if sc.spec.market.enabled {
                            v.push(super::market::gateway_key_volume(m));
                        }
                        v
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

pub fn service(m: &ClusterMeta, sc: &StorageCluster) -> Service {
    Service {
        metadata: m.object(m.names.gateway(), COMPONENT_GATEWAY),
        spec: Some(ServiceSpec {
            type_: Some(sc.spec.gateway.service_type.clone()),
            selector: Some(selector_labels(&m.names.cluster)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: GATEWAY_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn ingress(m: &ClusterMeta, sc: &StorageCluster) -> Option<Ingress> {
    let i = sc.spec.gateway.ingress.as_ref()?;
    let mut metadata = m.object(m.names.gateway(), COMPONENT_GATEWAY);
    if !i.annotations.is_empty() {
        metadata.annotations = Some(i.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone(),
            tls: i.tls_secret.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![i.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(i.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: m.names.gateway(),
                                port: Some(ServiceBackendPort {
                                    number: Some(GATEWAY_PORT),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::spec::{GatewayIngress, GatewaySpec};
    use crate::kube::meta::LABEL_COMPONENT;

    fn cluster(gateway: GatewaySpec) -> StorageCluster {
        let mut sc: StorageCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "floe.dev/v1alpha1", "kind": "StorageCluster",
            "metadata": {"name": "alpha", "namespace": "data", "uid": "u-1"},
            "spec": {"nodes": 4, "shards": 10}
        }))
        .unwrap();
        sc.spec.gateway = gateway;
        sc
    }

    #[test]
    fn off_by_default() {
        let sc = cluster(GatewaySpec::default());
        let m = ClusterMeta::new(&sc).unwrap();
        assert!(build(&m, &sc).is_none());
        assert_eq!(url(&sc), None);
    }

    #[test]
    fn deployment_service_and_url() {
        let sc = cluster(GatewaySpec {
            enabled: true,
            replicas: 2,
            service_type: "LoadBalancer".into(),
            auth_secret: Some("pub-jwt".into()),
            max_body_bytes: Some(1000),
            ..GatewaySpec::default()
        });
        let m = ClusterMeta::new(&sc).unwrap();
        let g = build(&m, &sc).unwrap();
        let d = &g.deployment;
        assert_eq!(d.metadata.name.as_deref(), Some("alpha-gateway"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("data"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StorageCluster", "u-1")
        );
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k} matches the pods");
        }
        assert_eq!(pod_labels[LABEL_COMPONENT], COMPONENT_GATEWAY);
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["floe-gateway".to_string()][..])
        );
        let args = c.args.as_ref().unwrap();
        assert!(
            args.contains(&"--nodes=https://alpha.data.svc:7070".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"--max-body=1000".to_string()));
        assert!(args.contains(&format!("--listen=$(POD_IP):{GATEWAY_PORT}")));
        let jwt = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "FLOE_GATEWAY_JWT_SECRET")
            .unwrap();
        let key = jwt
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("pub-jwt", JWT_KEY));
        assert_eq!(c.resources, Some(default_resources()));
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        let svc = g.service.spec.as_ref().unwrap();
        assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(svc.selector.as_ref(), spec.selector.match_labels.as_ref());
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, GATEWAY_PORT);
        assert!(g.ingress.is_none());
        assert_eq!(
            url(&sc).as_deref(),
            Some("http://alpha-gateway.data.svc:31415")
        );
    }

    #[test]
    fn ingress_when_asked() {
        let sc = cluster(GatewaySpec {
            enabled: true,
            ingress: Some(GatewayIngress {
                host: "blobs.example.com".into(),
                class_name: Some("nginx".into()),
                tls_secret: Some("blobs-tls".into()),
                annotations: BTreeMap::from([("a".into(), "b".into())]),
            }),
            ..GatewaySpec::default()
        });
        let m = ClusterMeta::new(&sc).unwrap();
        let i = build(&m, &sc).unwrap().ingress.unwrap();
        let spec = i.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("blobs.example.com"));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .as_ref()
            .unwrap();
        assert_eq!(backend.name, "alpha-gateway");
        assert_eq!(
            spec.tls.as_ref().unwrap()[0].secret_name.as_deref(),
            Some("blobs-tls")
        );
        assert_eq!(i.metadata.annotations.as_ref().unwrap()["a"], "b");
        assert_eq!(url(&sc).as_deref(), Some("https://blobs.example.com"));
    }

    #[test]
    fn on_a_cluster_that_sells_storage_the_gateway_pays_from_its_own_account() {
        let mut sc = cluster(GatewaySpec {
            enabled: true,
            ..GatewaySpec::default()
        });
        sc.spec.market.enabled = true;
        let m = ClusterMeta::new(&sc).unwrap();
        let d = build(&m, &sc).unwrap().deployment;
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let args = c.args.as_ref().unwrap();
        assert!(
            args.contains(&"--control=alpha-control.data.svc:7100".to_string()),
            "{args:?}"
        );
        let key = format!(
            "--account-key={}/{}",
            super::super::market::GATEWAY_KEY_MOUNT,
            super::super::market::GATEWAY_KEY
        );
        assert!(args.contains(&key), "{args:?}");
        // the Secret's gateway key alone is mounted, never the control key
        let v = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "account")
            .unwrap();
        let items = v.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, super::super::market::GATEWAY_KEY);
        assert!(c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "account"));
        // without the market: neither
        sc.spec.market.enabled = false;
        let d = build(&m, &sc).unwrap().deployment;
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert!(!c
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a.starts_with("--control")));
    }
}
