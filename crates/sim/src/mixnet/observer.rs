//! What a global passive adversary, helped by corrupt mix nodes, believes about who sent each
//! packet: a probability vector over senders for every packet it can point at.
//!
//! The method is the one of the Loopix and Nym anonymity analyses. The adversary watches every
//! link, so the two ends of one transmission are the same packet to it. Inside an honest node,
//! every delay is exponential; by memorylessness, a packet that leaves is equally likely to be
//! any packet the node holds. So an honest node is a *pool*: the sum of the vectors of the
//! packets it holds, and their number. What arrives adds its vector; what leaves (onto a link,
//! or to the node's own application, or ending as cover) takes the pool's mean and removes it.
//! A packet a node starts itself enters that node's pool as certainty about that node: a node
//! that also forwards hides its own packets among the others'. A corrupt node reveals which of
//! its inputs each output is, so the vector crosses it unchanged, and it knows its own packets.
//!
//! The bookkeeping names packets by their ground-truth identity, but uses it only where the
//! adversary may: to join the two ends of a link transmission, and across corrupt nodes.
//!
//! Receivers work the same way in reverse time (deliveries become origins, see [`reversed`]):
//! the vector of an originated packet over the parties that received.

use std::collections::HashMap;

/// A participant: a mix node, which may also send and receive.
pub type Node = u32;

/// A packet's ground-truth identity (the same at every hop).
pub type PacketId = u64;

/// A probability distribution over the parties that may have originated a packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Belief(Vec<f64>);

impl Belief {
    /// Certainty that `party` (of `parties`) originated it.
    pub fn point(parties: usize, party: usize) -> Self {
        let mut p = vec![0.0; parties];
        p[party] = 1.0;
        Self(p)
    }

    /// A distribution given by its probabilities (which sum to 1), indexed by party.
    pub fn from_weights(probabilities: Vec<f64>) -> Self {
        Self(probabilities)
    }

    /// The same distribution given that the party is one of those `allowed` says (what the
    /// adversary knows besides the links), renormalised; unchanged if that leaves nothing.
    pub fn restricted(&self, allowed: impl Fn(usize) -> bool) -> Self {
        let kept: Vec<f64> =
            self.0.iter().enumerate().map(|(i, &p)| if allowed(i) { p } else { 0.0 }).collect();
        let sum: f64 = kept.iter().sum();
        if sum > 0.0 { Self(kept.into_iter().map(|p| p / sum).collect()) } else { self.clone() }
    }

    /// The probabilities, indexed by party.
    pub fn probabilities(&self) -> &[f64] {
        &self.0
    }

    /// Shannon entropy in bits.
    pub fn entropy_bits(&self) -> f64 {
        let h: f64 = self.0.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.log2()).sum();
        // Certainty sums to -0.0.
        h + 0.0
    }

    /// Entropy over its maximum for `active` equally likely parties (0 when `active` ≤ 1:
    /// a lone party hides among nobody).
    pub fn normalised_entropy(&self, active: usize) -> f64 {
        if active <= 1 {
            return 0.0;
        }
        (self.entropy_bits() / (active as f64).log2()).min(1.0)
    }

    /// How much of a correct guess the adversary's best guess earns for `truth`: 1 when
    /// `truth` alone is the most likely, 1/k when it ties with k - 1 others, 0 otherwise.
    pub fn top1_credit(&self, truth: usize) -> f64 {
        let Some(&p) = self.0.get(truth) else { return 0.0 };
        let max = self.0.iter().copied().fold(0.0, f64::max);
        // Equal up to the rounding of pool arithmetic.
        let close = |q: f64| (q - max).abs() <= 1e-12 * max.max(1.0);
        if !close(p) {
            return 0.0;
        }
        1.0 / self.0.iter().filter(|&&q| close(q)).count() as f64
    }
}

/// How fast an honest node lets packets go, as the adversary knows from the node's settings:
/// the departure rate of each packet it forwards (1 / mean hop delay), of each of its own
/// packets waiting to leave (1 / mean pre-send delay), and the rate of its Poisson sources
/// (cover loops, Loopix slots), whose packets leave as they start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Per forwarded packet held, per second.
    pub forward: f64,
    /// Per own packet waiting, per second.
    pub own: f64,
    /// Of the node's sources, in all, per second.
    pub source: f64,
}

impl Default for Rates {
    /// Every held packet alike and no sources: the plain pool of the literature.
    fn default() -> Self {
        Self { forward: 1.0, own: 1.0, source: 0.0 }
    }
}

/// Packets held alike: the sum of their vectors and how many they are (in expectation, so
/// not always a whole number).
#[derive(Debug, Clone)]
struct Part {
    sum: Vec<f64>,
    count: f64,
}

impl Part {
    fn new(parties: usize) -> Self {
        Self { sum: vec![0.0; parties], count: 0.0 }
    }

    /// Takes out a share of everything (the chance that the departure was one of these).
    fn remove_share(&mut self, share: f64) {
        self.count -= share * self.count;
        if self.count < 1e-9 {
            // Rounding would leave dust that later packets inherit.
            self.count = 0.0;
            self.sum.iter_mut().for_each(|s| *s = 0.0);
        } else {
            self.sum.iter_mut().for_each(|s| *s = (*s * (1.0 - share)).max(0.0));
        }
    }
}

/// An honest node's holding. A departure is packet `j` with a chance proportional to `j`'s
/// departure rate (memorylessness, per packet), or one of the node's source packets: its
/// belief is the rate-weighted mixture, and each part loses its expected share.
#[derive(Debug, Clone)]
struct Pool {
    forwarded: Part,
    own: Part,
    rates: Rates,
}

impl Pool {
    fn new(parties: usize, rates: Rates) -> Self {
        Self { forwarded: Part::new(parties), own: Part::new(parties), rates }
    }

    fn add(&mut self, belief: &Belief) {
        for (s, p) in self.forwarded.sum.iter_mut().zip(&belief.0) {
            *s += p;
        }
        self.forwarded.count += 1.0;
    }

    fn add_point(&mut self, party: usize) {
        self.own.sum[party] += 1.0;
        self.own.count += 1.0;
    }

    fn count(&self) -> f64 {
        self.forwarded.count + self.own.count
    }

    /// The belief about a departure, which may also be a packet of `party`'s sources; the
    /// parts lose their expected shares.
    fn depart(&mut self, party: Option<usize>) -> Option<Belief> {
        let r = self.rates;
        let source = if party.is_some() { r.source } else { 0.0 };
        let (wf, wo) = (r.forward * self.forwarded.count, r.own * self.own.count);
        let total = wf + wo + source;
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        let mut mean: Vec<f64> = self
            .forwarded
            .sum
            .iter()
            .zip(&self.own.sum)
            .map(|(f, o)| (r.forward * f + r.own * o) / total)
            .collect();
        if let Some(party) = party {
            mean[party] += source / total;
        }
        self.forwarded.remove_share(r.forward / total);
        self.own.remove_share(r.own / total);
        Some(Belief(mean))
    }
}

/// One thing the adversary sees (or, at a corrupt node, is told), in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `node` starts a packet of its own (a message, a reply or cover).
    Originate {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// The packet leaves `node` onto a link.
    Depart {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// The packet arrives at `node` from a link.
    Arrive {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// The packet ends at `node`: delivered to its application, or cover consumed.
    End {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// The packet arrives at `node` and ends there at once (an exit delivers without a
    /// delay): the adversary links the two, so the node's pool does not hide it.
    Deliver {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// `node` starts a packet of a Poisson source (cover, a Loopix slot) and sends it at
    /// once. To the adversary it is a departure like any other.
    Source {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
    /// `node` starts a packet and sends it at once: the reverse of [`Step::Deliver`].
    Emit {
        /// The node.
        node: Node,
        /// The packet.
        packet: PacketId,
    },
}

/// What went wrong in a sequence of steps: a simulator bug, never the adversary's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObserverError {
    /// A node outside the numbering.
    #[error("node {0} is not one of the observer's nodes")]
    UnknownNode(Node),
    /// A packet arrived that never departed, or left a node that did not hold it.
    #[error("packet {packet} is not where step {step:?} says")]
    Misplaced {
        /// The packet.
        packet: PacketId,
        /// The step.
        step: Step,
    },
}

/// Every node's layer, for stratified paths (see [`Observer::with_layers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// The layer of each node (`None`: a client, in no layer).
    pub of: Vec<Option<u8>>,
    /// How many layers there are; paths go through layers 0 to `count` − 1 in order.
    pub count: u8,
}

/// The adversary's beliefs about every packet in the network.
#[derive(Debug, Clone)]
pub struct Observer {
    /// For each node, the party it originates as, if it originates at all.
    party_of: Vec<Option<usize>>,
    parties: usize,
    corrupt: Vec<bool>,
    pools: Vec<Pool>,
    /// Packets on links.
    wire: HashMap<PacketId, Belief>,
    /// Packets inside corrupt nodes, which know each one.
    held: HashMap<PacketId, Belief>,
    /// `hop_likelihood[x][p]`: how likely party `p` is to put node `x` on a path of its own,
    /// relative to the other nodes (see [`Self::with_hop_likelihood`]).
    hop_likelihood: Option<Vec<Vec<f64>>>,
    /// The nodes' layers, if the adversary uses them (see [`Self::with_layers`]).
    layers: Option<Layers>,
    /// The node each packet on a link left, while `layers` is known.
    sent_by: HashMap<PacketId, usize>,
}

impl Observer {
    /// An adversary watching every link among `party_of.len()` nodes, of which those marked
    /// in `corrupt` work for it. `party_of[n]` is the party node `n` originates as.
    ///
    /// # Panics
    /// If `corrupt` and `party_of` differ in length, or a party is not below `parties`.
    pub fn new(party_of: Vec<Option<usize>>, parties: usize, corrupt: Vec<bool>) -> Self {
        assert_eq!(party_of.len(), corrupt.len(), "one corrupt flag per node");
        assert!(party_of.iter().flatten().all(|&p| p < parties), "parties are numbered below");
        let pools = (0..party_of.len())
            .map(|n| Pool::new(if corrupt[n] { 0 } else { parties }, Rates::default()))
            .collect();
        Self {
            party_of,
            parties,
            corrupt,
            pools,
            wire: HashMap::new(),
            held: HashMap::new(),
            hop_likelihood: None,
            layers: None,
            sent_by: HashMap::new(),
        }
    }

    /// An adversary who knows every node's layer (public: a hash of its peer id). A packet
    /// that arrives at a node of the first layer, from a node of any layer but the last, can
    /// only be that node's own packet at its first hop (relays go on to the next layer, and
    /// only the last layer sends to a path's given last hop). So the arrival is a point
    /// belief on the sending node, which free routes would have hidden among its relays.
    /// Arrivals from the last layer stay as the pool says (they may be a loop or a reply
    /// coming back to its initiator). Paths longer than the layers would break the rule.
    ///
    /// # Panics
    /// If `layers` has not one entry per node.
    pub fn with_layers(mut self, layers: Layers) -> Self {
        assert_eq!(layers.of.len(), self.corrupt.len(), "one entry per node");
        self.layers = Some(layers);
        self
    }

    /// The belief about a packet from node `from` arriving at node `to`, for an adversary
    /// who knows the layers.
    fn first_hop(&self, from: Option<usize>, to: usize, belief: Belief) -> Belief {
        let Some(layers) = &self.layers else { return belief };
        let Some(from) = from else { return belief };
        let last = layers.count.saturating_sub(1);
        let own = layers.of[to] == Some(0) && layers.of[from].is_some_and(|l| l != last);
        match self.party_of[from] {
            Some(party) if own => Belief::point(self.parties, party),
            _ => belief,
        }
    }

    /// An adversary who also knows how each party chooses its paths: a packet that arrives
    /// at node `x` was more likely sent by a party that often puts `x` on its paths, so its
    /// belief is multiplied by `likelihood[x]` (one weight per party) and renormalised. With
    /// RTT-weighted path selection and a known latency map this is where the choice leaks
    /// the sender's place in the network; with uniform paths it only says that a node does
    /// not route its own packets through itself.
    ///
    /// The departing node's pool keeps its plain accounting (the mean left it), so this is a
    /// heuristic on top of the pool method, not an exact posterior.
    ///
    /// # Panics
    /// If `likelihood` has not one row per node of `parties` weights.
    pub fn with_hop_likelihood(mut self, likelihood: Vec<Vec<f64>>) -> Self {
        assert_eq!(likelihood.len(), self.corrupt.len(), "one row per node");
        assert!(likelihood.iter().all(|row| row.len() == self.parties), "one weight per party");
        self.hop_likelihood = Some(likelihood);
        self
    }

    /// Reweighs a belief about a packet that arrived at node `n`.
    fn arrived_at(&self, n: usize, belief: Belief) -> Belief {
        let Some(rows) = &self.hop_likelihood else { return belief };
        let weighted: Vec<f64> = belief.0.iter().zip(&rows[n]).map(|(p, w)| p * w).collect();
        let sum: f64 = weighted.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            Belief(weighted.into_iter().map(|p| p / sum).collect())
        } else {
            // Nothing the model explains: the path knowledge says nothing here.
            belief
        }
    }

    /// The number of parties a belief ranges over.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// Packets inside honest node `node`, as the adversary counts them (an expectation once
    /// the node has sources: a departure may have been one of theirs).
    pub fn held_by(&self, node: Node) -> f64 {
        self.pools.get(node as usize).map_or(0.0, Pool::count)
    }

    /// An adversary who knows how fast each node lets each kind of packet go (`rates[n]` for
    /// node `n`); without it, every held packet is alike and no node has sources.
    ///
    /// # Panics
    /// If `rates` has not one entry per node.
    pub fn with_rates(mut self, rates: Vec<Rates>) -> Self {
        assert_eq!(rates.len(), self.pools.len(), "one entry per node");
        for (pool, rates) in self.pools.iter_mut().zip(rates) {
            pool.rates = rates;
        }
        self
    }

    /// Takes one step; an [`Step::End`] returns the adversary's belief about who originated
    /// the packet that ended.
    pub fn step(&mut self, step: Step) -> Result<Option<Belief>, ObserverError> {
        let misplaced = |packet| ObserverError::Misplaced { packet, step };
        match step {
            Step::Originate { node, packet } => {
                let n = self.index(node)?;
                let party = self.party_of[n].ok_or(misplaced(packet))?;
                if self.corrupt[n] {
                    self.held.insert(packet, Belief::point(self.parties, party));
                } else {
                    self.pools[n].add_point(party);
                }
                Ok(None)
            }
            Step::Depart { node, packet } => {
                let belief = self.leave(node, packet, true).ok_or(misplaced(packet))??;
                self.wire.insert(packet, belief);
                self.note_sender(node, packet);
                Ok(None)
            }
            Step::Source { node, packet } => {
                let n = self.index(node)?;
                let party = self.party_of[n].ok_or(misplaced(packet))?;
                if self.corrupt[n] {
                    self.held.insert(packet, Belief::point(self.parties, party));
                } else if self.pools[n].rates == Rates::default() {
                    // The plain pool has no sources: the packet joins it and a departure
                    // takes the mean.
                    self.pools[n].add_point(party);
                }
                let belief = self.leave(node, packet, true).ok_or(misplaced(packet))??;
                self.wire.insert(packet, belief);
                self.note_sender(node, packet);
                Ok(None)
            }
            Step::Arrive { node, packet } => {
                let n = self.index(node)?;
                let belief = self.wire.remove(&packet).ok_or(misplaced(packet))?;
                let from = self.sent_by.remove(&packet);
                let belief = self.first_hop(from, n, self.arrived_at(n, belief));
                if self.corrupt[n] {
                    self.held.insert(packet, belief);
                } else {
                    self.pools[n].add(&belief);
                }
                Ok(None)
            }
            Step::End { node, packet } => {
                let belief = self.leave(node, packet, false).ok_or(misplaced(packet))??;
                Ok(Some(belief))
            }
            Step::Deliver { node, packet } => {
                let n = self.index(node)?;
                let belief = self.wire.remove(&packet).ok_or(misplaced(packet))?;
                self.sent_by.remove(&packet);
                Ok(Some(self.arrived_at(n, belief)))
            }
            Step::Emit { node, packet } => {
                let n = self.index(node)?;
                let party = self.party_of[n].ok_or(misplaced(packet))?;
                self.wire.insert(packet, Belief::point(self.parties, party));
                self.note_sender(node, packet);
                Ok(None)
            }
        }
    }

    /// Remembers which node `packet` left, if the layers are used.
    fn note_sender(&mut self, node: Node, packet: PacketId) {
        if self.layers.is_some() {
            self.sent_by.insert(packet, node as usize);
        }
    }

    fn index(&self, node: Node) -> Result<usize, ObserverError> {
        let n = node as usize;
        if n < self.corrupt.len() { Ok(n) } else { Err(ObserverError::UnknownNode(node)) }
    }

    /// The belief about a packet that leaves `node`: revealed by a corrupt node, the pool's
    /// mean at an honest one.
    /// The belief about a packet that leaves `node` (onto a link when `onto_link`, which a
    /// source packet may also be), revealed by a corrupt node, the pool's at an honest one.
    fn leave(
        &mut self,
        node: Node,
        packet: PacketId,
        onto_link: bool,
    ) -> Option<Result<Belief, ObserverError>> {
        let n = match self.index(node) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if self.corrupt[n] {
            self.held.remove(&packet).map(Ok)
        } else {
            let source = if onto_link { self.party_of[n] } else { None };
            self.pools[n].depart(source).map(Ok)
        }
    }
}

/// The same history in reverse time, for receiver anonymity: what ended originates, what
/// arrived departs, and the reverse. Run through an [`Observer`] whose parties are the
/// receiving nodes, each [`Step::End`] of the result gives the belief about where the packet
/// that was originated there went.
pub fn reversed(steps: &[Step]) -> Vec<Step> {
    steps
        .iter()
        .rev()
        .map(|&s| match s {
            Step::Originate { node, packet } => Step::End { node, packet },
            Step::End { node, packet } => Step::Originate { node, packet },
            Step::Depart { node, packet } => Step::Arrive { node, packet },
            Step::Arrive { node, packet } => Step::Depart { node, packet },
            Step::Deliver { node, packet } => Step::Emit { node, packet },
            Step::Emit { node, packet } => Step::Deliver { node, packet },
            // Started and sent at once: in reverse, arrived and ended at once.
            Step::Source { node, packet } => Step::Deliver { node, packet },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Node = 0;
    const B: Node = 1;
    const M: Node = 2;

    fn close(belief: &Belief, expected: &[f64]) {
        let p = belief.probabilities();
        assert_eq!(p.len(), expected.len(), "{belief:?}");
        for (got, want) in p.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{belief:?} against {expected:?}");
        }
    }

    /// Senders A and B, mix M; `corrupt` marks M.
    fn two_senders_one_mix(corrupt: bool) -> Observer {
        Observer::new(vec![Some(0), Some(1), None], 2, vec![false, false, corrupt])
    }

    fn send(o: &mut Observer, from: Node, to: Node, packet: PacketId) {
        o.step(Step::Originate { node: from, packet }).unwrap();
        o.step(Step::Depart { node: from, packet }).unwrap();
        o.step(Step::Arrive { node: to, packet }).unwrap();
    }

    fn end(o: &mut Observer, node: Node, packet: PacketId) -> Belief {
        o.step(Step::End { node, packet }).unwrap().unwrap()
    }

    #[test]
    fn a_single_honest_mix_with_two_inputs_hides_each_behind_the_other() {
        let mut o = two_senders_one_mix(false);
        send(&mut o, A, M, 1);
        send(&mut o, B, M, 2);
        assert_eq!(o.held_by(M), 2.0);
        let first = end(&mut o, M, 1);
        close(&first, &[0.5, 0.5]);
        assert!((first.entropy_bits() - 1.0).abs() < 1e-12);
        assert!((first.normalised_entropy(2) - 1.0).abs() < 1e-12);
        assert_eq!(first.top1_credit(0), 0.5);
        // The second leaves the rest of the pool: still half and half.
        close(&end(&mut o, M, 2), &[0.5, 0.5]);
        assert_eq!(o.held_by(M), 0.0);
    }

    #[test]
    fn a_packet_that_leaves_before_the_next_arrives_is_not_hidden() {
        let mut o = two_senders_one_mix(false);
        send(&mut o, A, M, 1);
        let b = end(&mut o, M, 1);
        close(&b, &[1.0, 0.0]);
        assert_eq!(b.entropy_bits(), 0.0);
        assert_eq!(b.top1_credit(0), 1.0);
        send(&mut o, B, M, 2);
        close(&end(&mut o, M, 2), &[0.0, 1.0]);
    }

    /// Node X (party 0) relays a packet of node S (party 1) and sends one of its own, both
    /// to node Y; with 3 layers, X is in `x_layer` and Y in layer 0.
    fn own_packet_into_the_first_layer(x_layer: u8, layers_known: bool) -> Belief {
        const X: Node = 0;
        const S: Node = 1;
        const Y: Node = 2;
        let mut o = Observer::new(vec![Some(0), Some(1), None], 2, vec![false; 3]);
        if layers_known {
            o = o.with_layers(Layers { of: vec![Some(x_layer), Some(0), Some(0)], count: 3 });
        }
        send(&mut o, S, X, 1);
        o.step(Step::Originate { node: X, packet: 2 }).unwrap();
        // X's pool holds S's packet and its own: a departure is either, as the pool sees it.
        o.step(Step::Depart { node: X, packet: 2 }).unwrap();
        o.step(Step::Arrive { node: Y, packet: 2 }).unwrap();
        end(&mut o, Y, 2)
    }

    #[test]
    fn an_observer_who_knows_the_layers_tells_a_nodes_own_packets_from_its_relays() {
        // The plain pool: half X, half S.
        close(&own_packet_into_the_first_layer(1, false), &[0.5, 0.5]);
        // Relays from layer 1 go on to layer 2, never to layer 0: the packet is X's own.
        close(&own_packet_into_the_first_layer(1, true), &[1.0, 0.0]);
        // From the last layer, layer 0 may be a loop's or a reply's way home: no change.
        close(&own_packet_into_the_first_layer(2, true), &[0.5, 0.5]);
    }

    #[test]
    fn a_corrupt_mix_reveals_which_input_each_output_is() {
        let mut o = two_senders_one_mix(true);
        send(&mut o, A, M, 1);
        send(&mut o, B, M, 2);
        close(&end(&mut o, M, 2), &[0.0, 1.0]);
        close(&end(&mut o, M, 1), &[1.0, 0.0]);
    }

    #[test]
    fn one_honest_mix_on_a_path_of_corrupt_ones_is_enough() {
        // A and B → corrupt C1 → honest H → corrupt C2, which delivers.
        let (c1, h, c2) = (2, 3, 4);
        let mut o = Observer::new(
            vec![Some(0), Some(1), None, None, None],
            2,
            vec![false, false, true, false, true],
        );
        send(&mut o, A, c1, 1);
        send(&mut o, B, c1, 2);
        for p in [2, 1] {
            o.step(Step::Depart { node: c1, packet: p }).unwrap();
            o.step(Step::Arrive { node: h, packet: p }).unwrap();
        }
        // H sends on the packets in the other order; the adversary cannot tell.
        for p in [1, 2] {
            o.step(Step::Depart { node: h, packet: p }).unwrap();
            o.step(Step::Arrive { node: c2, packet: p }).unwrap();
        }
        close(&end(&mut o, c2, 1), &[0.5, 0.5]);
        close(&end(&mut o, c2, 2), &[0.5, 0.5]);
    }

    #[test]
    fn a_pool_that_is_refilled_mixes_old_and_new_in_proportion() {
        // Three senders into M; one leaves; a fourth arrives; the next to leave is a third of
        // the fourth and two ninths of each of the first three.
        let mut o = Observer::new(
            vec![Some(0), Some(1), Some(2), Some(3), None],
            4,
            vec![false, false, false, false, false],
        );
        let m = 4;
        for (s, p) in [(0, 10), (1, 11), (2, 12)] {
            send(&mut o, s, m, p);
        }
        close(&end(&mut o, m, 10), &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]);
        send(&mut o, 3, m, 13);
        let b = end(&mut o, m, 13);
        close(&b, &[2.0 / 9.0, 2.0 / 9.0, 2.0 / 9.0, 1.0 / 3.0]);
        assert_eq!(b.top1_credit(3), 1.0);
        assert_eq!(b.top1_credit(0), 0.0);
    }

    #[test]
    fn a_sender_that_also_forwards_hides_its_own_packets() {
        // B's packet waits in A's pool when A starts its own: what leaves A is either.
        let mut o = two_senders_one_mix(false);
        o.step(Step::Originate { node: B, packet: 1 }).unwrap();
        o.step(Step::Depart { node: B, packet: 1 }).unwrap();
        o.step(Step::Arrive { node: A, packet: 1 }).unwrap();
        o.step(Step::Originate { node: A, packet: 2 }).unwrap();
        o.step(Step::Depart { node: A, packet: 2 }).unwrap();
        o.step(Step::Arrive { node: M, packet: 2 }).unwrap();
        close(&end(&mut o, M, 2), &[0.5, 0.5]);
    }

    #[test]
    fn receivers_are_measured_on_the_reversed_history() {
        // A sends to R1 and B to R2 through one honest mix holding both: each sender's
        // packet went to either receiver.
        let (m, r1, r2) = (2, 3, 4);
        let steps = vec![
            Step::Originate { node: A, packet: 1 },
            Step::Depart { node: A, packet: 1 },
            Step::Arrive { node: m, packet: 1 },
            Step::Originate { node: B, packet: 2 },
            Step::Depart { node: B, packet: 2 },
            Step::Arrive { node: m, packet: 2 },
            Step::Depart { node: m, packet: 2 },
            Step::Arrive { node: r2, packet: 2 },
            Step::End { node: r2, packet: 2 },
            Step::Depart { node: m, packet: 1 },
            Step::Arrive { node: r1, packet: 1 },
            Step::End { node: r1, packet: 1 },
        ];
        let receivers = vec![None, None, None, Some(0), Some(1)];
        let mut o = Observer::new(receivers, 2, vec![false; 5]);
        let mut ends = Vec::new();
        for step in reversed(&steps) {
            if let Some(b) = o.step(step).unwrap() {
                ends.push(b);
            }
        }
        assert_eq!(ends.len(), 2);
        for b in &ends {
            close(b, &[0.5, 0.5]);
        }
    }

    #[test]
    fn a_delivery_without_delay_is_linked_to_its_arrival() {
        // Both packets wait in M; the one M delivers at once on its arrival is not hidden by
        // the pool, and the reverse history starts it from its receiver with certainty.
        let mut o = two_senders_one_mix(false);
        send(&mut o, A, M, 1);
        o.step(Step::Originate { node: B, packet: 2 }).unwrap();
        o.step(Step::Depart { node: B, packet: 2 }).unwrap();
        let b = o.step(Step::Deliver { node: M, packet: 2 }).unwrap().unwrap();
        close(&b, &[0.0, 1.0]);
        assert_eq!(o.held_by(M), 1.0);
        let steps = [Step::Emit { node: A, packet: 7 }, Step::Deliver { node: B, packet: 7 }];
        assert_eq!(
            reversed(&steps),
            vec![Step::Emit { node: B, packet: 7 }, Step::Deliver { node: A, packet: 7 }]
        );
    }

    #[test]
    fn knowing_how_senders_choose_paths_reweighs_an_arrival() {
        // A and B each send one packet into M, which forwards one of them to C. A puts C on
        // its paths three times as often as B does: the pool says 1/2 each, the path-aware
        // adversary 3/4 for A.
        let likelihood = vec![vec![1.0, 1.0]; 3].into_iter().chain([vec![3.0, 1.0]]).collect();
        let mut o = Observer::new(vec![Some(0), Some(1), None, None], 2, vec![false; 4])
            .with_hop_likelihood(likelihood);
        send(&mut o, A, M, 1);
        send(&mut o, B, M, 2);
        o.step(Step::Depart { node: M, packet: 1 }).unwrap();
        let belief = o.step(Step::Deliver { node: 3, packet: 1 }).unwrap().unwrap();
        close(&belief, &[0.75, 0.25]);
    }

    #[test]
    fn packets_that_leave_faster_are_more_likely_the_next_to_leave() {
        // M holds A's packet (forwarded, hop delay mean 50 ms: rate 20/s) and its own packet
        // (pre-send mean 5 ms: rate 200/s). The next departure is M's own with 200/220.
        let rates = vec![
            Rates::default(),
            Rates::default(),
            Rates { forward: 20.0, own: 200.0, source: 0.0 },
        ];
        let mut o =
            Observer::new(vec![Some(0), Some(1), Some(2)], 3, vec![false; 3]).with_rates(rates);
        send(&mut o, A, M, 1);
        o.step(Step::Originate { node: M, packet: 2 }).unwrap();
        o.step(Step::Depart { node: M, packet: 2 }).unwrap();
        let belief = o.step(Step::Deliver { node: B, packet: 2 }).unwrap().unwrap();
        close(&belief, &[20.0 / 220.0, 0.0, 200.0 / 220.0]);
        assert!((o.held_by(M) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_source_departure_mixes_with_what_the_node_holds_by_rate() {
        // M holds A's packet (rate 20/s) and has sources at 60/s: a departure is M's source
        // with 60/80, A's packet with 20/80, whatever it really was.
        let rates = vec![
            Rates::default(),
            Rates::default(),
            Rates { forward: 20.0, own: 200.0, source: 60.0 },
        ];
        let mut o =
            Observer::new(vec![Some(0), Some(1), Some(2)], 3, vec![false; 3]).with_rates(rates);
        send(&mut o, A, M, 1);
        o.step(Step::Source { node: M, packet: 9 }).unwrap();
        let belief = o.step(Step::Deliver { node: B, packet: 9 }).unwrap().unwrap();
        close(&belief, &[0.25, 0.0, 0.75]);
        // A's packet is still there with 3/4.
        assert!((o.held_by(M) - 0.75).abs() < 1e-12);
        // Without rates, a source packet joins the pool and the departure takes the mean.
        let mut plain = Observer::new(vec![Some(0), Some(1), Some(2)], 3, vec![false; 3]);
        send(&mut plain, A, M, 1);
        plain.step(Step::Source { node: M, packet: 9 }).unwrap();
        let belief = plain.step(Step::Deliver { node: B, packet: 9 }).unwrap().unwrap();
        close(&belief, &[0.5, 0.0, 0.5]);
    }

    #[test]
    fn steps_out_of_place_are_errors() {
        let mut o = two_senders_one_mix(false);
        assert!(matches!(
            o.step(Step::Arrive { node: M, packet: 9 }),
            Err(ObserverError::Misplaced { packet: 9, .. })
        ));
        assert!(matches!(
            o.step(Step::Depart { node: M, packet: 9 }),
            Err(ObserverError::Misplaced { packet: 9, .. })
        ));
        assert_eq!(
            o.step(Step::Originate { node: 7, packet: 1 }),
            Err(ObserverError::UnknownNode(7))
        );
        // M originates as nobody.
        assert!(o.step(Step::Originate { node: M, packet: 1 }).is_err());
    }
}
