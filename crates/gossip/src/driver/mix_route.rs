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
use libp2p_mix::{Destination, Handle, SendOptions};

use super::behaviour::{MIX_PUBLISH_CODEC, mix_publish_body, parse_mix_publish};
use crate::proto::TopicId;

/// Publications received through the mixnet that may wait for gossip to take them.
const DELIVERY_QUEUE: usize = 256;

/// How often the mix pool is checked for changes.
const DIRECTORY_CHECK: Duration = Duration::from_secs(1);

type Outcome = Pin<Box<dyn Future<Output = Option<(TopicId, Vec<u8>)>> + Send>>;

/// Gossip's `Mix` route over a libp2p-mix behaviour of the same swarm; see the
/// [module docs](self).
pub struct MixRoute {
    handle: Handle,
    deliveries: RoutedReceiver,
    /// Sends handed to the mix behaviour: each resolves to the publication if it failed.
    outcomes: FuturesUnordered<Outcome>,
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
            directory_version: None,
            directory_check: Delay::new(Duration::ZERO),
        }
    }

    /// Hands a publication to the mix behaviour; `Err` gives it back if it cannot be queued.
    pub(super) fn send(
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
                    Ok(Ok(_)) => None,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, %to, "mix publication not sent");
                        Some((topic, data))
                    }
                    // The mix behaviour went away with it.
                    Err(_) => Some((topic, data)),
                })));
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, %to, "mix publication not queued");
                Err((topic, data))
            }
        }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RouteEvent> {
        while let Poll::Ready(Some(outcome)) = self.outcomes.poll_next_unpin(cx) {
            if let Some((topic, data)) = outcome {
                return Poll::Ready(RouteEvent::Failed { topic, data });
            }
        }
        if let Poll::Ready(Some(routed)) = self.deliveries.poll_next_unpin(cx) {
            return Poll::Ready(match parse_mix_publish(&routed.body) {
                Some((topic, data)) => RouteEvent::Delivery { topic, data: data.to_vec() },
                None => RouteEvent::Malformed,
            });
        }
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
        Poll::Pending
    }
}
