//! What the observer saw, and separately what was true, as CSV files (`--trace DIR`), so
//! that an attack written elsewhere can run on the same run and be checked.
//!
//! * `links.csv`: `sent_us,arrived_us,from,to`, one row per link transmission in the order
//!   they left, times in microseconds of virtual time from the start. This is everything a
//!   global passive observer sees (all packets have one size).
//! * `truth.csv`: `row,packet,kind,flow,answers,sender,receiver`, one row per row of
//!   `links.csv` (same order): the packet it carried (the same id at every hop, so a corrupt
//!   node's input-to-output mapping is the rows with the same packet), `message`, `request`,
//!   `reply` or `cover`, the flow (message, request or reply) it belongs to (empty for cover),
//!   for a reply the request flow it answers, the node that started it and the node it was
//!   for (for cover, the node where it ended; empty if it never ended).
//!
//! `arrived_us` is 0 for a transmission still on its link when the run ended.
//! * `nodes.csv`: `node,corrupt,client`: the nodes that work for the adversary, and the
//!   clients (numbered after the mix nodes; they send but do not forward).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::analysis::{Flow, FlowKind};
use super::observer::PacketId;

/// One link transmission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkRow {
    /// When it left, from the start.
    pub sent: Duration,
    /// When it arrived (zero if it was still on the link at the end).
    pub arrived: Duration,
    /// The node it left.
    pub from: usize,
    /// The node it reached.
    pub to: usize,
    /// The packet (ground truth).
    pub packet: PacketId,
}

/// What a packet was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacketTruth {
    /// `message`, `request`, `reply` or `cover`.
    pub kind: &'static str,
    /// The flow it belongs to.
    pub flow: Option<u64>,
    /// For a reply, the request flow it answers.
    pub answers: Option<u64>,
    /// The node that started it.
    pub sender: usize,
    /// The node it was for.
    pub receiver: Option<usize>,
}

impl PacketTruth {
    /// A cover packet `node` started.
    pub fn cover(node: usize) -> Self {
        Self { kind: "cover", flow: None, answers: None, sender: node, receiver: None }
    }
}

/// A run's observed links and its ground truth.
#[derive(Debug, Clone, Default)]
pub struct MixTrace {
    /// Every link transmission.
    pub links: Vec<LinkRow>,
    /// Every packet's truth.
    pub packets: HashMap<PacketId, PacketTruth>,
    /// Which nodes are corrupt.
    pub corrupt: Vec<bool>,
    /// Mix nodes; the participants numbered from here on are clients.
    pub nodes: usize,
    ended: HashMap<PacketId, usize>,
}

impl MixTrace {
    /// `packet` ended at `node`.
    pub(crate) fn ended(&mut self, packet: PacketId, node: usize) {
        self.ended.entry(packet).or_insert(node);
    }

    /// Fills in the truth about real packets once the run is over.
    pub(crate) fn finish(
        &mut self,
        flows: &[Flow],
        corrupt: &[bool],
        nodes: usize,
        copies_per_flow: u64,
    ) {
        self.corrupt = corrupt.to_vec();
        self.nodes = nodes;
        for row in &self.links {
            let id = row.packet;
            if let Some(truth) = self.packets.get_mut(&id) {
                if truth.kind == "cover" {
                    truth.receiver = self.ended.get(&id).copied();
                }
                continue;
            }
            let flow = (id / copies_per_flow) as usize;
            let Some(f) = flows.get(flow) else { continue };
            let kind = match f.kind {
                FlowKind::Message => "message",
                FlowKind::Request => "request",
                FlowKind::Reply => "reply",
            };
            self.packets.insert(
                id,
                PacketTruth {
                    kind,
                    flow: Some(flow as u64),
                    answers: f.answers.map(|a| a as u64),
                    sender: f.sender,
                    receiver: Some(f.receiver),
                },
            );
        }
    }

    /// Writes `links.csv`, `truth.csv` and `nodes.csv` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut links = String::from("sent_us,arrived_us,from,to\n");
        let mut truth = String::from("row,packet,kind,flow,answers,sender,receiver\n");
        let opt = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
        for (row, l) in self.links.iter().enumerate() {
            let _ = writeln!(
                links,
                "{},{},{},{}",
                l.sent.as_micros(),
                l.arrived.as_micros(),
                l.from,
                l.to
            );
            let t = self.packets.get(&l.packet).copied().unwrap_or(PacketTruth {
                kind: "unknown",
                flow: None,
                answers: None,
                sender: l.from,
                receiver: None,
            });
            let _ = writeln!(
                truth,
                "{row},{},{},{},{},{},{}",
                l.packet,
                t.kind,
                opt(t.flow),
                opt(t.answers),
                t.sender,
                opt(t.receiver.map(|r| r as u64))
            );
        }
        let mut nodes = String::from("node,corrupt,client\n");
        for (i, c) in self.corrupt.iter().enumerate() {
            let _ = writeln!(nodes, "{i},{c},{}", i >= self.nodes);
        }
        std::fs::write(dir.join("links.csv"), links)?;
        std::fs::write(dir.join("truth.csv"), truth)?;
        std::fs::write(dir.join("nodes.csv"), nodes)
    }
}
