//! The `Mix` route through a libp2p-mix node in the same swarm (feature `mix`).
//!
//! Without it, the application carries [`crate::Event::MixPublish`] to its mix node and hands
//! what its mix node receives back to [`crate::Behaviour::handle_mix_delivery`]. With a
//! [`MixRoute`] attached ([`crate::Behaviour::with_mix_route`]) gossip does that itself,
//! through a [`libp2p_mix::Handle`]:
//!
//! * publications go through the mixnet to the rebroadcaster the state machine picked, and a
//!   failed send makes it pick another;
//! * publications others sent to this node arrive on a channel the mix behaviour routes
//!   [`crate::MIX_PUBLISH_CODEC`] to, and are broadcast;
//! * rebroadcasters are drawn from the mix pool (signed discovery records, capped per subnet),
//!   which also gives gossip the members' addresses.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Future, FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;
use libp2p_mix::handle::RoutedReceiver;
use libp2p_mix::{Destination, Handle, HandleError, SendError, SendOptions};

use super::behaviour::{MIX_PUBLISH_CODEC, mix_publish_body, parse_mix_publish};
use crate::proto::TopicId;

/// Publications received through the mixnet that may wait for gossip to take them.
const DELIVERY_QUEUE: usize = 256;

/// How often the mix pool is checked for changes.
const DIRECTORY_CHECK: Duration = Duration::from_secs(1);

/// Publications held back by a local, passing condition (the mix behaviour's queue is full,
/// or its rate budget is used up) before they are tried again, and how many may wait.
const RETRY_AFTER: Duration = Duration::from_millis(100);
const MAX_WAITING: usize = 1024;

/// What became of a publication handed to the mix behaviour.
enum Handed {
    /// The mix layer built and queued its packets.
    Taken,
    /// The rebroadcaster could not be used: the state machine picks another.
    Failed(TopicId, Vec<u8>),
    /// A local condition stopped it: the same rebroadcaster is tried again later.
    Later(PeerId, TopicId, Vec<u8>),
}

type Outcome = Pin<Box<dyn Future<Output = Handed> + Send>>;

/// Gossip's `Mix` route over a libp2p-mix behaviour of the same swarm; see the
/// [module docs](self).
pub struct MixRoute {
    handle: Handle,
    deliveries: RoutedReceiver,
    /// Sends handed to the mix behaviour: each resolves to the publication if it failed.
    outcomes: FuturesUnordered<Outcome>,
    /// Publications waiting for the mix behaviour to have room or budget again.
    waiting: std::collections::VecDeque<(PeerId, TopicId, Vec<u8>)>,
    retry: Delay,
    directory_version: Option<u64>,
    directory_check: Delay,
}

impl std::fmt::Debug for MixRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixRoute").field("in_flight", &self.outcomes.len()).finish_non_exhaustive()
    }
}

/// What the route has for gossip.
pub(super) enum RouteEvent {
    /// A publication for this node to broadcast.
    Delivery { topic: TopicId, data: Vec<u8> },
    /// A delivery that does not parse.
    Malformed,
    /// A publication the mix layer could not send.
    Failed { topic: TopicId, data: Vec<u8> },
    /// The mix pool changed: rebroadcasters come from these members.
    Directory(Vec<(PeerId, Multiaddr)>),
}

impl MixRoute {
    /// Sends gossip's mix publications through `mix` and takes the ones `mix` receives.
    /// Messages of [`MIX_PUBLISH_CODEC`] no longer appear as [`libp2p_mix::Event::Received`].
    pub fn attach(mix: &mut libp2p_mix::Behaviour) -> Self {
        Self {
            handle: mix.handle(),
            deliveries: mix.route_protocol(MIX_PUBLISH_CODEC, DELIVERY_QUEUE),
            outcomes: FuturesUnordered::new(),
            waiting: std::collections::VecDeque::new(),
            retry: Delay::new(RETRY_AFTER),
            directory_version: None,
            directory_check: Delay::new(Duration::ZERO),
        }
    }

    /// Hands a publication to the mix behaviour; `Err` gives it back if it cannot be sent
    /// there (the state machine then picks another rebroadcaster). A full queue is no reason:
    /// the publication waits for room instead.
    pub(super) fn send(
        &mut self,
        to: PeerId,
        topic: TopicId,
        data: Vec<u8>,
    ) -> Result<(), (TopicId, Vec<u8>)> {
        if !self.waiting.is_empty() {
            // Keep the order: behind what already waits.
            return self.wait(to, topic, data);
        }
        self.try_send(to, topic, data)
    }

    fn try_send(
        &mut self,
        to: PeerId,
        topic: TopicId,
        data: Vec<u8>,
    ) -> Result<(), (TopicId, Vec<u8>)> {
        let body = mix_publish_body(&topic, &data);
        let sent = self.handle.send(
            Destination::MixNode(to),
            MIX_PUBLISH_CODEC,
            body,
            SendOptions::default(),
        );
        match sent {
            Ok(outcome) => {
                self.outcomes.push(Box::pin(outcome.map(move |result| match result {
                    Ok(Ok(_)) => Handed::Taken,
                    // Local and passing: the node's own queue or rate budget.
                    Ok(Err(
                        SendError::QueueFull(_) | SendError::RateLimited(_) | SendError::NotMixing,
                    )) => Handed::Later(to, topic, data),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %to, "mix publication not sent");
                        Handed::Failed(topic, data)
                    }
                    // The mix behaviour went away with it.
                    Err(_) => Handed::Failed(topic, data),
                })));
                Ok(())
            }
            Err(HandleError::Full) => self.wait(to, topic, data),
            Err(error) => {
                tracing::debug!(%error, %to, "mix publication not queued");
                Err((topic, data))
            }
        }
    }

    /// Holds a publication back for [`RETRY_AFTER`]; past [`MAX_WAITING`] it fails instead.
    fn wait(
        &mut self,
        to: PeerId,
        topic: TopicId,
        data: Vec<u8>,
    ) -> Result<(), (TopicId, Vec<u8>)> {
        if self.waiting.len() >= MAX_WAITING {
            return Err((topic, data));
        }
        if self.waiting.is_empty() {
            self.retry.reset(RETRY_AFTER);
        }
        self.waiting.push_back((to, topic, data));
        Ok(())
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RouteEvent> {
        // The directory first: a flood of deliveries must not keep it from being refreshed.
        if self.directory_check.poll_unpin(cx).is_ready() {
            self.directory_check.reset(DIRECTORY_CHECK);
            let version = self.handle.pool_version();
            if self.directory_version != Some(version) {
                self.directory_version = Some(version);
                return Poll::Ready(RouteEvent::Directory(self.handle.pool_members()));
            }
            // Registers the timer's waker.
            let _ = self.directory_check.poll_unpin(cx);
        }
        while let Poll::Ready(Some(outcome)) = self.outcomes.poll_next_unpin(cx) {
            match outcome {
                Handed::Taken => {}
                Handed::Failed(topic, data) => {
                    return Poll::Ready(RouteEvent::Failed { topic, data });
                }
                Handed::Later(to, topic, data) => {
                    if let Err((topic, data)) = self.wait(to, topic, data) {
                        return Poll::Ready(RouteEvent::Failed { topic, data });
                    }
                }
            }
        }
        if !self.waiting.is_empty() && self.retry.poll_unpin(cx).is_ready() {
            while let Some((to, topic, data)) = self.waiting.pop_front() {
                let before = self.waiting.len();
                if let Err((topic, data)) = self.try_send(to, topic, data) {
                    return Poll::Ready(RouteEvent::Failed { topic, data });
                }
                if self.waiting.len() > before {
                    // Still full: it went back to the end; keep the rest for the next round.
                    let last = self.waiting.pop_back().expect("just pushed");
                    self.waiting.push_front(last);
                    break;
                }
            }
            self.retry.reset(RETRY_AFTER);
            let _ = self.retry.poll_unpin(cx);
        }
        if let Poll::Ready(Some(routed)) = self.deliveries.poll_next_unpin(cx) {
            if let Some(id) = routed.reply {
                // Gossip never answers through SURBs: let the exit drop them now.
                let _ = self.handle.forget(id);
            }
            return Poll::Ready(match parse_mix_publish(&routed.body) {
                Some((topic, data)) => RouteEvent::Delivery { topic, data: data.to_vec() },
                None => RouteEvent::Malformed,
            });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route on a mix behaviour nobody polls: its handle's queue fills and stays full.
    fn stalled_route() -> (libp2p_mix::Mixnet, MixRoute) {
        let identity = libp2p_identity::Keypair::generate_secp256k1();
        let secret = mix_sphinx::NodeSecretKey::generate(&mut rand::rng());
        let mut mixnet =
            libp2p_mix::Mixnet::new(&identity, secret, libp2p_mix::MixnetConfig::default())
                .expect("a secp256k1 identity");
        let route = MixRoute::attach(mixnet.mix_mut());
        (mixnet, route)
    }

    #[test]
    fn a_full_mix_queue_holds_publications_back_instead_of_failing_them() {
        let (_mixnet, mut route) = stalled_route();
        let topic = TopicId::from_name("t");
        let to = PeerId::random();
        let mut sent = 0;
        while route.send(to, topic, vec![0]).is_ok() {
            sent += 1;
            assert!(sent <= 10_000, "nothing ever fails");
        }
        // What the queue took, then what may wait: only past both does a publication fail
        // (and the state machine retries it through another member).
        assert!(sent >= libp2p_mix::handle::HANDLE_QUEUE + MAX_WAITING, "{sent}");
        assert_eq!(route.waiting.len(), MAX_WAITING);
        assert_eq!(route.send(to, topic, vec![0]), Err((topic, vec![0])));
    }
}
