//! Service discovery: instances of named services register themselves; clients resolve a service (or
//! a `cluster://service/path` name) to its live instances, once or through a cached, watched provider.
//!
//! **Layout** (compatible with Apache Curator's `ServiceDiscovery`): each instance is an ephemeral
//! node `BASE/<service>/<instance-id>` holding Curator's `ServiceInstance` JSON:
//! `{"name", "id", "address", "port", "sslPort", "payload", "registrationTimeUTC", "serviceType",
//! "uriSpec"}` ([`ServiceInstance`]). Curator's `ServiceDiscovery` (with `JsonInstanceSerializer`) on
//! the same base path sees our instances and we see its. Our `payload` is plain JSON: Curator reads it
//! back as a `Map` (its payload type defaults to `Object`); a Curator payload class written with a
//! `@class` property reaches us as JSON with that property.
//!
//! **Guarantees**: an instance is listed while its process's session lives (it disappears when the
//! process dies, after the session timeout); a registration is kept across reconnections and, through a
//! renewing [`Connector`], re-created after expiry with its current data. A [`ServiceProvider`] follows
//! the service with a watch and answers from its cache, current as of its last notification.
//!
//! **What the caller must do**: a provider's cache may be stale while suspended (it re-reads on
//! reconnection); an instance can die between being chosen and being called, so calls need their own
//! timeouts and retries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};

use super::keeper::{EphemeralNode, NodeEvent};
use super::membership::{read_view, GroupView, GroupWatcher};
use super::{join, Connector};
use crate::error::{Error, Result};
use roster_proto::ErrorCode;

/// The default base path (Curator has none; pick the same on both sides).
pub const DEFAULT_BASE: &str = "/services";

/// Curator's `ServiceType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceType {
    /// An ephemeral registration (the default).
    #[default]
    Dynamic,
    /// A persistent registration.
    Static,
    /// Permanent.
    Permanent,
    /// Ephemeral sequential.
    DynamicSequential,
}

/// One instance of a service, in Curator's `ServiceInstance` JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    /// The service name.
    pub name: String,
    /// The instance id, unique within the service (the node's name).
    pub id: String,
    /// Host name or address.
    #[serde(default)]
    pub address: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS port.
    #[serde(default)]
    pub ssl_port: Option<u16>,
    /// Anything else (plain JSON).
    #[serde(default)]
    pub payload: Option<Value>,
    /// Registration time, ms since the epoch.
    #[serde(rename = "registrationTimeUTC", default)]
    pub registration_time_utc: i64,
    /// Curator's service type.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Curator's URI template, passed through.
    #[serde(default)]
    pub uri_spec: Option<Value>,
}

impl ServiceInstance {
    /// An instance of `name` with id `id` at `address:port`, registered now.
    pub fn new(name: &str, id: &str, address: &str, port: u16) -> ServiceInstance {
        ServiceInstance {
            name: name.to_string(),
            id: id.to_string(),
            address: Some(address.to_string()),
            port: Some(port),
            ssl_port: None,
            payload: None,
            registration_time_utc: super::now_millis(),
            service_type: ServiceType::Dynamic,
            uri_spec: None,
        }
    }

    /// The same instance with a payload (metadata).
    pub fn with_payload(mut self, payload: Value) -> ServiceInstance {
        self.payload = Some(payload);
        self
    }

    /// `address:port` (or the TLS port when there is no plain one).
    pub fn endpoint(&self) -> String {
        format!(
            "{}:{}",
            self.address.as_deref().unwrap_or(""),
            self.port.or(self.ssl_port).unwrap_or(0)
        )
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    /// Parses the JSON form.
    pub fn from_json(data: &[u8]) -> Option<ServiceInstance> {
        serde_json::from_slice(data).ok()
    }
}

/// A `cluster://service/path` name: a service, and a path inside it (the logical actor path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUri {
    /// The service.
    pub service: String,
    /// The path inside the service, without leading slash (may be empty).
    pub path: String,
}

impl std::str::FromStr for ClusterUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<ClusterUri> {
        let rest = s.strip_prefix("cluster://").ok_or_else(|| {
            Error::BadArguments(format!("{s:?}: expected cluster://service/path"))
        })?;
        let (service, path) = rest.split_once('/').unwrap_or((rest, ""));
        if service.is_empty() {
            return Err(Error::BadArguments(format!("{s:?}: no service name")));
        }
        Ok(ClusterUri {
            service: service.to_string(),
            path: path.trim_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for ClusterUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster://{}/{}", self.service, self.path)
    }
}

/// What a `cluster://` name resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The name.
    pub uri: ClusterUri,
    /// The live instances of the service.
    pub instances: Vec<ServiceInstance>,
    /// The instance owning the path as an owned name ([`super::names`]), when owned names are
    /// configured ([`ServiceDiscovery::with_names`]) and someone owns it.
    pub owner: Option<ServiceInstance>,
}

impl Resolved {
    /// Where to send a message for the name: the owner if there is one, else every instance.
    pub fn targets(&self) -> Vec<&ServiceInstance> {
        match &self.owner {
            Some(o) => vec![o],
            None => self.instances.iter().collect(),
        }
    }
}

/// The entry point. See the module docs.
#[derive(Debug, Clone)]
pub struct ServiceDiscovery {
    connector: Connector,
    base: String,
    names_root: Option<String>,
}

impl ServiceDiscovery {
    /// Discovery under `base` (e.g. [`DEFAULT_BASE`]).
    pub fn new(connector: impl Into<Connector>, base: &str) -> ServiceDiscovery {
        ServiceDiscovery {
            connector: connector.into(),
            base: base.trim_end_matches('/').to_string(),
            names_root: None,
        }
    }

    /// Also resolves `cluster://service/path` to the owner of the owned name `service/path` under
    /// `names_root`, whose host id is an instance id.
    pub fn with_names(mut self, names_root: &str) -> ServiceDiscovery {
        self.names_root = Some(names_root.trim_end_matches('/').to_string());
        self
    }

    /// The node of a service.
    pub fn service_path(&self, service: &str) -> String {
        join(
            if self.base.is_empty() {
                "/"
            } else {
                &self.base
            },
            service,
        )
    }

    /// Registers an instance; it stays registered until [`Registration::unregister`], the handle is
    /// dropped, or the process dies.
    pub async fn register(&self, instance: ServiceInstance) -> Result<Registration> {
        if instance.name.is_empty()
            || instance.name.contains('/')
            || instance.id.is_empty()
            || instance.id.contains('/')
        {
            return Err(Error::BadArguments(
                "service name and instance id must be non-empty, without '/'".into(),
            ));
        }
        let path = join(&self.service_path(&instance.name), &instance.id);
        let node = EphemeralNode::create(&self.connector, &path, &instance.to_json()).await?;
        Ok(Registration { node, instance })
    }

    /// The registered services (that have or had instances).
    pub async fn services(&self) -> Result<Vec<String>> {
        let base = if self.base.is_empty() {
            "/"
        } else {
            &self.base
        };
        match self.connector.client().get_children(base).await {
            Ok(mut s) => {
                s.sort();
                Ok(s)
            }
            Err(Error::Code(ErrorCode::NoNode)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The live instances of `service`, by id.
    pub async fn instances(&self, service: &str) -> Result<Vec<ServiceInstance>> {
        let view = read_view(&self.connector.client(), &self.service_path(service)).await?;
        Ok(decode(&view))
    }

    /// Resolves `cluster://service/path` to the service's live instances (and the path's owner).
    pub async fn resolve(&self, uri: &str) -> Result<Resolved> {
        let uri: ClusterUri = uri.parse()?;
        let instances = self.instances(&uri.service).await?;
        let owner = match (&self.names_root, uri.path.is_empty()) {
            (Some(root), false) => {
                let name = format!("{}/{}", uri.service, uri.path);
                match super::names::owner(&self.connector.client(), root, &name).await? {
                    Some(o) => instances.iter().find(|i| i.id == o.host).cloned(),
                    None => None,
                }
            }
            _ => None,
        };
        Ok(Resolved {
            uri,
            instances,
            owner,
        })
    }

    /// A cached provider of `service`'s instances, following changes with a watch.
    pub async fn provider(&self, service: &str, strategy: Strategy) -> Result<ServiceProvider> {
        let mut watcher =
            GroupWatcher::start(self.connector.clone(), self.service_path(service)).await?;
        let view = watcher.subscribe();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // Own the watcher, drain its events, stop when the provider is dropped.
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            loop {
                tokio::select! {
                    ev = watcher.next() => if ev.is_none() { return },
                    _ = &mut stop_rx => return,
                }
            }
        });
        Ok(ServiceProvider {
            view,
            strategy,
            next: Arc::new(AtomicUsize::new(0)),
            sticky: Arc::new(std::sync::Mutex::new(None)),
            _stop: stop_tx,
        })
    }
}

fn decode(view: &GroupView) -> Vec<ServiceInstance> {
    view.members
        .iter()
        .filter_map(|m| ServiceInstance::from_json(&m.data))
        .collect()
}

/// A registered instance; dropping it unregisters (in the background).
#[derive(Debug)]
pub struct Registration {
    node: EphemeralNode,
    instance: ServiceInstance,
}

impl Registration {
    /// The instance as registered.
    pub fn instance(&self) -> &ServiceInstance {
        &self.instance
    }

    /// The node's path.
    pub fn path(&self) -> &str {
        self.node.path()
    }

    /// Created / Suspended / Reconnected / Recreated / Ended.
    pub fn events(&mut self) -> broadcast::Receiver<NodeEvent> {
        self.node.events()
    }

    /// Replaces the registered data (name and id are kept).
    pub async fn update(&mut self, instance: ServiceInstance) -> Result<()> {
        let instance = ServiceInstance {
            name: self.instance.name.clone(),
            id: self.instance.id.clone(),
            ..instance
        };
        self.node.update(&instance.to_json()).await?;
        self.instance = instance;
        Ok(())
    }

    /// Unregisters.
    pub async fn unregister(self) -> Result<()> {
        self.node.delete().await
    }
}

/// How a provider picks one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Any instance, at random.
    Random,
    /// Each instance in turn.
    RoundRobin,
    /// The same instance as long as it is live, then another one at random.
    Sticky,
}

/// A cached view of a service's instances. See [`ServiceDiscovery::provider`].
#[derive(Debug)]
pub struct ServiceProvider {
    view: watch::Receiver<GroupView>,
    strategy: Strategy,
    next: Arc<AtomicUsize>,
    sticky: Arc<std::sync::Mutex<Option<String>>>,
    _stop: oneshot::Sender<()>,
}

impl ServiceProvider {
    /// Every live instance, by id (from the cache).
    pub fn instances(&self) -> Vec<ServiceInstance> {
        decode(&self.view.borrow())
    }

    /// The zxid the cache is consistent at.
    pub fn zxid(&self) -> i64 {
        self.view.borrow().zxid
    }

    /// One instance, chosen by the strategy; `None` if there is none.
    pub fn instance(&self) -> Option<ServiceInstance> {
        let all = self.instances();
        if all.is_empty() {
            return None;
        }
        match self.strategy {
            Strategy::Random => Some(all[rand::random_range(0..all.len())].clone()),
            Strategy::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                Some(all[i % all.len()].clone())
            }
            Strategy::Sticky => {
                let mut sticky = self.sticky.lock().unwrap();
                if let Some(id) = sticky.as_ref() {
                    if let Some(i) = all.iter().find(|i| &i.id == id) {
                        return Some(i.clone());
                    }
                }
                let chosen = all[rand::random_range(0..all.len())].clone();
                *sticky = Some(chosen.id.clone());
                Some(chosen)
            }
        }
    }

    /// Waits until the cache changes.
    pub async fn changed(&mut self) -> Result<()> {
        self.view.changed().await.map_err(|_| Error::Closed)
    }

    /// Waits until `pred` holds for the instances.
    pub async fn wait_for(&mut self, pred: impl Fn(&[ServiceInstance]) -> bool) -> Result<()> {
        self.view
            .wait_for(|v| pred(&decode(v)))
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_uris() {
        let u: ClusterUri = "cluster://user/victorops/broadcaster".parse().unwrap();
        assert_eq!(u.service, "user");
        assert_eq!(u.path, "victorops/broadcaster");
        let u: ClusterUri = "cluster://user".parse().unwrap();
        assert_eq!(u.path, "");
        assert!("http://x".parse::<ClusterUri>().is_err());
        assert!("cluster:///x".parse::<ClusterUri>().is_err());
    }

    #[test]
    fn curator_json() {
        let i = ServiceInstance::new("user", "abc", "10.0.0.1", 8080);
        let v: Value = serde_json::from_slice(&i.to_json()).unwrap();
        for k in [
            "name",
            "id",
            "address",
            "port",
            "sslPort",
            "payload",
            "registrationTimeUTC",
            "serviceType",
            "uriSpec",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["serviceType"], "DYNAMIC");
        // As written by Curator's JsonInstanceSerializer (with a payload class and an unknown field).
        let curator = br#"{"name":"test","id":"b6a4cc2c-8a4f-4b5e-9c3e-3c1b3f1e2d4a","address":"10.20.30.40","port":1234,"sslPort":null,"payload":{"@class":"java.util.HashMap","k":"v"},"registrationTimeUTC":1325129459728,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true}]},"enabled":true}"#;
        let i = ServiceInstance::from_json(curator).unwrap();
        assert_eq!(i.endpoint(), "10.20.30.40:1234");
        assert_eq!(i.payload.unwrap()["k"], "v");
    }
}
