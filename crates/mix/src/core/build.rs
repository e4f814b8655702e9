//! The costly part of sending an own message, cut out as a job any thread can run.
//!
//! A message costs one Diffie-Hellman per hop of each copy's path and per hop of every SURB
//! it carries: three to four times what forwarding a packet costs. [`super::MixCore`] decides
//! everything before the job exists (paths, delays, the proof, every random draw, in the
//! order building in place always made them); the job only computes. A seeded core gives the
//! same packets whoever builds them, as long as each job comes back before the next send (the
//! gap between own packets is drawn when one comes back). Its [`BuildDone`] goes back to
//! [`super::MixCore::finish_build`], which registers the request and schedules the packets.
//!
//! A core builds in place unless its driver asks for jobs
//! ([`super::MixCore::set_build_jobs`]): the simulator and the tests see no difference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use mix_sphinx::{
    AddressBlock, EphemeralSecret, MESSAGE_SIZE, Packet, Padding, Route, Surb, SurbId, SurbKey,
    SurbSecrets, WireFormat, message,
};
use multiaddr::Multiaddr;
use zeroize::Zeroizing;

use super::{RequestId, SendError};

/// Names a [`BuildJob`], for [`super::MixCore::build_lost`] when a job never finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildTicket(u64);

/// An own message with everything decided, to build on any thread. `Send`, and small to move
/// through a channel.
pub struct BuildJob {
    ticket: u64,
    recipe: Box<Recipe>,
}

struct Recipe {
    format: WireFormat,
    padding: Padding,
    codec: String,
    /// The plaintext: wiped when the job is done.
    body: Zeroizing<Vec<u8>>,
    destination: AddressBlock,
    copies: Vec<CopyPlan>,
}

impl std::fmt::Debug for BuildJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let copies = self.recipe.copies.len();
        f.debug_struct("BuildJob").field("copies", &copies).finish_non_exhaustive()
    }
}

/// A [`BuildJob`] run: the packets, or why they could not be built.
pub struct BuildDone {
    ticket: u64,
    outcome: Result<Vec<BuiltCopy>, SendError>,
}

impl std::fmt::Debug for BuildDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildDone").field("ok", &self.outcome.is_ok()).finish_non_exhaustive()
    }
}

/// One copy of a message: its route, its first hop and the randomness drawn for it.
pub(super) struct CopyPlan {
    pub(super) first: (PeerId, Multiaddr),
    pub(super) route: Route,
    pub(super) surbs: Vec<SurbPlan>,
    pub(super) seqno: u32,
    /// The exit proof for this copy, appended to the body (empty without one).
    pub(super) proof: Vec<u8>,
    pub(super) ephemeral: EphemeralSecret,
}

/// A SURB back to this node with the randomness drawn for it.
pub(super) struct SurbPlan {
    pub(super) route: Route,
    pub(super) id: SurbId,
    pub(super) key: SurbKey,
    pub(super) ephemeral: EphemeralSecret,
}

impl SurbPlan {
    pub(super) fn build(&self, format: &WireFormat) -> Result<(Surb, SurbSecrets), SendError> {
        Ok(self.route.surb_with_secret(format, self.id, self.key.clone(), &self.ephemeral)?)
    }
}

pub(super) struct BuiltCopy {
    pub(super) first: (PeerId, Multiaddr),
    pub(super) packet: Packet,
    pub(super) secrets: Vec<SurbSecrets>,
}

impl BuildJob {
    pub(super) fn new(
        format: WireFormat,
        codec: &str,
        body: &[u8],
        destination: AddressBlock,
        copies: Vec<CopyPlan>,
    ) -> Self {
        let recipe = Recipe {
            format,
            padding: format.padding(),
            codec: codec.to_owned(),
            body: Zeroizing::new(body.to_vec()),
            destination,
            copies,
        };
        Self { ticket: 0, recipe: Box::new(recipe) }
    }

    /// Which build this is.
    pub fn ticket(&self) -> BuildTicket {
        BuildTicket(self.ticket)
    }

    /// Builds every copy's SURBs and packet.
    pub fn run(self) -> BuildDone {
        let Recipe { format, padding, codec, body, destination, copies } = *self.recipe;
        let outcome = copies
            .into_iter()
            .map(|copy| build_copy(&format, padding, &codec, &body, &destination, copy));
        BuildDone { ticket: self.ticket, outcome: outcome.collect() }
    }
}

fn build_copy(
    format: &WireFormat,
    padding: Padding,
    codec: &str,
    body: &[u8],
    destination: &AddressBlock,
    copy: CopyPlan,
) -> Result<BuiltCopy, SendError> {
    let mut surbs = Vec::with_capacity(copy.surbs.len());
    let mut secrets = Vec::with_capacity(copy.surbs.len());
    for plan in &copy.surbs {
        let (surb, kept) = plan.build(format)?;
        surbs.push(surb);
        secrets.push(kept);
    }
    let mut m = Zeroizing::new([0u8; MESSAGE_SIZE]);
    if copy.proof.is_empty() {
        message::encode_forward(padding, copy.seqno, codec, &surbs, body, &mut m)?;
    } else {
        let proved = Zeroizing::new([body, copy.proof.as_slice()].concat());
        message::encode_forward(padding, copy.seqno, codec, &surbs, &proved, &mut m)?;
    }
    let packet = copy.route.forward_packet_with_secret(format, destination, &m, &copy.ephemeral)?;
    Ok(BuiltCopy { first: copy.first, packet, secrets })
}

impl BuildDone {
    pub(super) fn into_parts(self) -> (BuildTicket, Result<Vec<BuiltCopy>, SendError>) {
        (BuildTicket(self.ticket), self.outcome)
    }
}

/// What the core keeps of a message while it is being built.
pub(super) struct PendingBuild {
    /// When the message was sent: its pre-send delay and jitter count from here.
    pub(super) at: Instant,
    pub(super) request: Option<(RequestId, Instant)>,
    pub(super) jitter: Duration,
    pub(super) packets: usize,
    pub(super) surbs: usize,
}

/// The builds handed out as jobs and not back yet.
#[derive(Default)]
pub(super) struct Builds {
    /// Whether the driver takes jobs ([`super::MixCore::set_build_jobs`]).
    pub(super) as_jobs: bool,
    ready: std::collections::VecDeque<BuildJob>,
    pending: HashMap<u64, PendingBuild>,
    next_ticket: u64,
    /// Packets, SURBs and requests of the builds out: they count against the core's bounds
    /// as if they were already held.
    pub(super) packets: usize,
    pub(super) surbs: usize,
    pub(super) requests: usize,
}

impl Builds {
    pub(super) fn hand_out(&mut self, mut job: BuildJob, pending: PendingBuild) {
        self.next_ticket += 1;
        job.ticket = self.next_ticket;
        self.packets += pending.packets;
        self.surbs += pending.surbs;
        self.requests += usize::from(pending.request.is_some());
        self.pending.insert(job.ticket, pending);
        self.ready.push_back(job);
    }

    pub(super) fn next_job(&mut self) -> Option<BuildJob> {
        self.ready.pop_front()
    }

    /// The bookkeeping of every build out, which will not be finished; jobs not taken yet
    /// are forgotten, and the tickets of the others, if they come back, are unknown.
    pub(super) fn take_all(&mut self) -> Vec<PendingBuild> {
        self.ready.clear();
        (self.packets, self.surbs, self.requests) = (0, 0, 0);
        // In the order they were handed out, so the requests they end are reported alike on
        // every run.
        let mut all: Vec<_> = self.pending.drain().collect();
        all.sort_unstable_by_key(|(ticket, _)| *ticket);
        all.into_iter().map(|(_, p)| p).collect()
    }

    /// The bookkeeping of a finished job; `None` for a ticket not handed out (or twice).
    pub(super) fn take(&mut self, ticket: BuildTicket) -> Option<PendingBuild> {
        let pending = self.pending.remove(&ticket.0)?;
        self.packets -= pending.packets;
        self.surbs -= pending.surbs;
        self.requests -= usize::from(pending.request.is_some());
        Some(pending)
    }
}
