//! Readiness of a Redis Cluster, node by node: the cluster's own view
//! (`CLUSTER NODES`, `CLUSTER INFO`) and a `PING` of every master over the
//! store's own connection to it, so `/readyz` names the node that is
//! unreachable. Also keeps `sluice_redis_nodes{role,state}` current.

use deadpool_redis::redis::{
    self,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    Value,
};
use sluice_actors::metrics::metrics;

use super::{conn::Handle, Inner};

/// One node as `CLUSTER NODES` lists it.
struct Node {
    addr: String,
    master: bool,
    /// Flagged failing (`fail`, `fail?`) or its link is down, as the
    /// answering node sees it.
    failing: bool,
    /// The master's id, for replicas.
    of: Option<String>,
    /// Serves slots (a master that failed over has none left).
    slots: bool,
    id: String,
}

fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[2].contains("noaddr") || f[2].contains("handshake") {
                return None;
            }
            let addr = f[1].split(['@', ',']).next()?.to_owned();
            Some(Node {
                addr,
                master: f[2].contains("master"),
                failing: f[2].contains("fail") || f[7] != "connected" && !f[2].contains("myself"),
                of: (f[3] != "-").then(|| f[3].to_owned()),
                slots: f.len() > 8,
                id: f[0].to_owned(),
            })
        })
        .collect()
}

impl Inner {
    /// `Ok` when every slot is served, every master answers and has at
    /// least `wait_replicas` healthy replicas; else which nodes do not.
    pub(super) async fn cluster_ready(&self) -> Result<(), String> {
        // Asked of a random node: a dead one fails the call, so ask again.
        let mut asked = Err(String::new());
        for _ in 0..3 {
            asked = self
                .call(|mut c| async move {
                    let nodes: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async(&mut c)
                        .await?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await?;
                    Ok((nodes, info))
                })
                .await
                .map_err(|e| format!("redis cluster unreachable: {e}"));
            if asked.is_ok() {
                break;
            }
        }
        let (nodes, info) = asked?;
        let mut nodes = parse_nodes(&nodes);
        let handle = self.conn.get().await.map(|p| p.handle());
        for n in nodes.iter_mut().filter(|n| n.master && !n.failing) {
            let Ok(Handle::Cluster(mut c)) = handle.clone() else {
                break;
            };
            let Some((host, port)) = n.addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            let ping = c.route_command(redis::cmd("PING"), route);
            let ok = matches!(
                tokio::time::timeout(self.cfg.timeout, ping).await,
                Ok(Ok(Value::SimpleString(_) | Value::BulkString(_)))
            );
            n.failing = !ok;
        }
        let g = &metrics().redis_nodes;
        for (role, master) in [("master", true), ("replica", false)] {
            for (state, failing) in [("up", false), ("down", true)] {
                let count = nodes
                    .iter()
                    .filter(|n| n.master == master && n.failing == failing)
                    .count();
                g.with_label_values(&[role, state]).set(count as i64);
            }
        }
        let mut problems: Vec<String> = nodes
            .iter()
            .filter(|n| n.master && n.slots && n.failing)
            .map(|n| format!("master {} unreachable", n.addr))
            .collect();
        let want = self.cfg.wait_replicas as usize;
        for m in nodes.iter().filter(|n| n.master && !n.failing) {
            let healthy = nodes
                .iter()
                .filter(|r| r.of.as_deref() == Some(m.id.as_str()) && !r.failing)
                .count();
            if healthy < want {
                let down: Vec<&str> = nodes
                    .iter()
                    .filter(|r| r.of.as_deref() == Some(m.id.as_str()) && r.failing)
                    .map(|r| r.addr.as_str())
                    .collect();
                problems.push(format!(
                    "master {} has {healthy} of the {want} replicas appends wait for (unreachable: {})",
                    m.addr,
                    if down.is_empty() { "none".to_owned() } else { down.join(", ") }
                ));
            }
        }
        if !info.contains("cluster_state:ok") {
            problems.push("cluster_state is not ok (slots not served)".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("redis cluster: {}", problems.join("; ")))
        }
    }
}
