//! A throw-away Redis Cluster: 3 masters with one replica each, every
//! node a [`RedisServer`] of its own (loopback port with its bus port free,
//! temporary directory, killed with the test), made a cluster by
//! `redis-cli --cluster create` and awaited until every node reports
//! `cluster_state:ok` and every replica is in sync. Its nodes may require
//! a password and speak TLS only, the cluster bus and replication included
//! ([`Access`]).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use super::redis::{cli_as, Access, RedisServer};

/// How long creating the cluster (or a failover) may take.
const READY: Duration = Duration::from_secs(30);

/// A running cluster of six nodes.
pub struct RedisCluster {
    /// The nodes, in creation order (the first three start as masters).
    pub nodes: Vec<RedisServer>,
    /// How clients (and the nodes themselves) get in.
    access: Access,
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster of 3 masters with one
    /// replica each.
    pub async fn start() -> RedisCluster {
        Self::start_with(Access::default()).await
    }

    /// Like [`Self::start`], every node reached by `access` (the cluster
    /// bus over TLS too when it is TLS).
    pub async fn start_with(access: Access) -> RedisCluster {
        let c = Self::unformed(access).await;
        c.form().await;
        c
    }

    /// Six cluster-enabled nodes that are not a cluster yet (no slots):
    /// what a broker meets when it starts before the cluster is created.
    pub async fn unformed(access: Access) -> RedisCluster {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // A replica takes over however long its link was down.
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
            "--appendfsync",
            "everysec",
        ];
        if access.tls.is_some() {
            args.extend(["--tls-cluster", "yes"]);
        }
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(RedisServer::start_cluster_node(&args, &access).await);
        }
        RedisCluster { nodes, access }
    }

    /// Makes the nodes a cluster of 3 masters with one replica each, and
    /// waits until it is healthy.
    pub async fn form(&self) {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(self.access.cli_args())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_healthy().await;
    }

    /// Seed node URLs for `redis.cluster_nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// `SLUICE__REDIS__CLUSTER_NODES` for these nodes.
    pub fn env_value(&self) -> String {
        self.urls().join(",")
    }

    /// Waits until every running node says `cluster_state:ok`, sees three
    /// masters that all serve slots, and every replica's link is up.
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + READY;
        loop {
            match self.health() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cluster not healthy within {READY:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn health(&self) -> Result<(), String> {
        for n in self.running() {
            let info = self.cli(n.port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {}: {info}", n.port));
            }
            let role = self.cli(n.port, &["ROLE"])?;
            if role.starts_with("slave") {
                let repl = self.cli(n.port, &["INFO", "replication"])?;
                if !repl.contains("master_link_status:up") {
                    return Err(format!("replica {} not in sync", n.port));
                }
            }
        }
        let masters = self.masters();
        if masters.len() != 3 {
            return Err(format!("{} masters", masters.len()));
        }
        Ok(())
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.pid.is_some())
    }

    /// Indexes of the nodes that are masters now (running ones).
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].pid.is_some()
                    && self
                        .cli(self.nodes[i].port, &["ROLE"])
                        .is_ok_and(|r| r.starts_with("master"))
            })
            .collect()
    }

    /// The index of the master serving `key`'s slot, as any running node sees it.
    pub fn master_of(&self, key: &str) -> usize {
        self.try_master_of(key)
            .unwrap_or_else(|| panic!("no healthy master serves {key}"))
    }

    /// Like [`Self::master_of`]; `None` while no healthy master serves it.
    pub fn try_master_of(&self, key: &str) -> Option<usize> {
        let n = self.running().next().expect("a running node");
        let slot = self.slot(key);
        let nodes = self.cli(n.port, &["CLUSTER", "NODES"]).ok()?;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                let port: u16 = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("node address");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// The slot of `key` (computed here, as Redis does: CRC16 of the hash
    /// tag, or of the whole key without one, modulo 16384).
    pub fn slot(&self, key: &str) -> u16 {
        let k = key.as_bytes();
        let tagged = k.iter().position(|&b| b == b'{').and_then(|open| {
            let close = k[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &k[open + 1..open + 1 + close])
        });
        let mut crc: u16 = 0;
        for &b in tagged.unwrap_or(k) {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    /// The index of the replica of master `i`.
    pub fn replica_of(&self, i: usize) -> usize {
        let port = self.nodes[i].port.to_string();
        (0..self.nodes.len())
            .find(|&r| {
                self.nodes[r].pid.is_some()
                    && self.cli(self.nodes[r].port, &["ROLE"]).is_ok_and(|role| {
                        let l: Vec<&str> = role.lines().collect();
                        l.first() == Some(&"slave") && l.get(2) == Some(&port.as_str())
                    })
            })
            .unwrap_or_else(|| panic!("no replica of node {i}"))
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].pid.expect("a running node").to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        self.cli(self.nodes[i].port, &["CLUSTER", "MYID"])
            .expect("CLUSTER MYID")
    }

    /// `redis-cli -p PORT args...` getting in as the nodes' [`Access`]
    /// asks: its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String, String> {
        cli_as(&self.access, port, args)
    }

    /// Connected clients of node `i` (`CLIENT LIST`, this query's own
    /// connection excluded).
    pub fn clients(&self, i: usize) -> usize {
        let list = self
            .cli(self.nodes[i].port, &["CLIENT", "LIST"])
            .expect("CLIENT LIST");
        list.lines().filter(|l| !l.contains("cmd=client")).count()
    }
}

/// `redis-cli -p PORT args...` of a node without password or TLS: its
/// stdout.
pub fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    cli_as(&Access::default(), port, args)
}
