//! The round's phases, one struct each: `handle` takes one message, `close` consumes the
//! phase and returns the next one (or the round's error).

use super::*;

/// A message is considered only from someone asked in `phase` who has not answered yet.
fn admit(
    from: ParticipantId,
    phase: Phase,
    asked: bool,
    answered: bool,
) -> Result<(), ProtocolError> {
    if !asked {
        return Err(refuse(from, Misbehaviour::NotAsked { phase }));
    }
    if answered {
        return Err(refuse(from, Misbehaviour::DuplicateMessage));
    }
    Ok(())
}

// ---- Phase 1: AdvertiseKeys.

#[derive(Default)]
pub(super) struct AwaitingKeys {
    pub(super) keys: BTreeMap<ParticipantId, AdvertiseKeys>,
    pub(super) all_answered: bool,
}

impl AwaitingKeys {
    pub(super) fn handle(&mut self, round: &Round, m: AdvertiseKeys) -> Result<(), ProtocolError> {
        let from = m.from;
        // The signature was verified by `authenticate`.
        if self.keys.contains_key(&from) {
            return Err(refuse(from, Misbehaviour::DuplicateMessage));
        }
        self.keys.insert(from, m);
        self.all_answered = self.keys.len() == round.config.participants.len();
        Ok(())
    }

    pub(super) fn close(
        self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<AwaitingShares, RoundError> {
        let u1: BTreeSet<ParticipantId> = self.keys.keys().copied().collect();
        out.phase_closed(
            round,
            Phase::AdvertiseKeys,
            round.config.participants.iter().copied(),
            &u1,
        )?;
        for &u in &u1 {
            let keys = round
                .neighbours(u)
                .iter()
                .filter_map(|v| self.keys.get(v).cloned())
                .collect();
            out.transmits.push_back((
                u,
                ServerMsg::ShareKeys(ShareKeysRequest {
                    ctx: round.ctx.clone(),
                    keys,
                }),
            ));
        }
        Ok(AwaitingShares {
            keys: self.keys,
            shares: BTreeMap::new(),
        })
    }
}

// ---- Phase 2: ShareKeys.

pub(super) struct AwaitingShares {
    /// U1's keys.
    pub(super) keys: BTreeMap<ParticipantId, AdvertiseKeys>,
    /// owner → holder → ciphertext.
    pub(super) shares: BTreeMap<ParticipantId, BTreeMap<ParticipantId, Vec<u8>>>,
}

impl AwaitingShares {
    pub(super) fn handle(&mut self, round: &Round, m: ShareKeys) -> Result<(), ProtocolError> {
        let from = m.from;
        admit(
            from,
            Phase::ShareKeys,
            self.keys.contains_key(&from),
            self.shares.contains_key(&from),
        )?;
        let mut by_holder = BTreeMap::new();
        for s in m.shares {
            if s.from != from {
                return Err(refuse(
                    from,
                    Misbehaviour::SenderMismatch { claimed: s.from },
                ));
            }
            if !round.is_neighbour(from, s.to) || !self.keys.contains_key(&s.to) {
                return Err(refuse(from, Misbehaviour::NotANeighbour { peer: s.to }));
            }
            if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongLength {
                        expected: SHARE_CIPHERTEXT_LEN,
                        got: s.ciphertext.len(),
                    },
                ));
            }
            if by_holder.insert(s.to, s.ciphertext).is_some() {
                return Err(refuse(from, Misbehaviour::DuplicateShare { peer: s.to }));
            }
        }
        self.shares.insert(from, by_holder);
        Ok(())
    }

    pub(super) fn close(
        mut self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<AwaitingMaskedInputs, RoundError> {
        // Mutual pairs among those who answered; then drop anyone left with fewer than t
        // partners, until nobody else falls below.
        let mut partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>> = self
            .shares
            .iter()
            .map(|(&u, holders)| {
                let mutual = holders
                    .keys()
                    .copied()
                    .filter(|v| self.shares.get(v).is_some_and(|h| h.contains_key(&u)))
                    .collect();
                (u, mutual)
            })
            .collect();
        loop {
            let weak: Vec<ParticipantId> = partners
                .iter()
                .filter(|(_, p)| p.len() < round.threshold)
                .map(|(&u, _)| u)
                .collect();
            if weak.is_empty() {
                break;
            }
            for u in &weak {
                partners.remove(u);
            }
            for p in partners.values_mut() {
                for u in &weak {
                    p.remove(u);
                }
            }
        }
        let u2: BTreeSet<ParticipantId> = partners.keys().copied().collect();
        out.phase_closed(round, Phase::ShareKeys, self.keys.keys().copied(), &u2)?;

        for (&u, ps) in &partners {
            let shares = ps
                .iter()
                .filter_map(|&v| {
                    let ciphertext = self.shares.get_mut(&v)?.remove(&u)?;
                    Some(EncryptedShare {
                        from: v,
                        to: u,
                        ciphertext,
                    })
                })
                .collect();
            out.transmits.push_back((
                u,
                ServerMsg::MaskedInput(MaskedInputRequest {
                    ctx: round.ctx.clone(),
                    shares,
                }),
            ));
        }
        let keys = self
            .keys
            .into_iter()
            .filter(|(u, _)| u2.contains(u))
            .map(|(u, k)| {
                (
                    u,
                    PeerKeys {
                        s_pk: k.s_pk,
                        commitment: k.self_mask_commitment,
                    },
                )
            })
            .collect();
        Ok(AwaitingMaskedInputs {
            keys,
            partners,
            sum: None,
            received: BTreeSet::new(),
        })
    }
}

/// What the server keeps of a U2 member's advertised keys.
pub(super) struct PeerKeys {
    pub(super) s_pk: [u8; 32],
    pub(super) commitment: [u8; 32],
}

// ---- Phase 3: MaskedInput.

pub(super) struct AwaitingMaskedInputs {
    pub(super) keys: BTreeMap<ParticipantId, PeerKeys>,
    /// U2, each with the partners it masks with (symmetric).
    pub(super) partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
    /// Running sum of the masked inputs received so far.
    pub(super) sum: Option<RingVec>,
    pub(super) received: BTreeSet<ParticipantId>,
}

impl AwaitingMaskedInputs {
    pub(super) fn handle(&mut self, round: &Round, m: MaskedInput) -> Result<(), ProtocolError> {
        let from = m.from;
        admit(
            from,
            Phase::MaskedInput,
            self.partners.contains_key(&from),
            self.received.contains(&from),
        )?;
        if m.masked.modulus() != round.config.modulus {
            return Err(refuse(
                from,
                Misbehaviour::WrongModulus {
                    expected: round.config.modulus,
                    got: m.masked.modulus(),
                },
            ));
        }
        if m.masked.len() != round.config.vector_len {
            return Err(refuse(
                from,
                Misbehaviour::WrongLength {
                    expected: round.config.vector_len,
                    got: m.masked.len(),
                },
            ));
        }
        match &mut self.sum {
            None => self.sum = Some(m.masked),
            Some(sum) => add_into(sum, &m.masked),
        }
        self.received.insert(from);
        Ok(())
    }

    pub(super) fn close(
        self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<AwaitingSignatures, RoundError> {
        let u3 = self.received;
        out.phase_closed(
            round,
            Phase::MaskedInput,
            self.partners.keys().copied(),
            &u3,
        )?;
        let Some(sum) = self.sum else {
            // Unreachable: t >= 1 inputs were received.
            return Err(RoundError::BelowThreshold {
                phase: Phase::MaskedInput,
                have: 0,
                need: round.threshold,
            });
        };
        let survivors: Vec<ParticipantId> = u3.iter().copied().collect();
        for &u in &survivors {
            out.transmits.push_back((
                u,
                ServerMsg::ConsistencyCheck(ConsistencyRequest {
                    ctx: round.ctx.clone(),
                    survivors: survivors.clone(),
                }),
            ));
        }
        Ok(AwaitingSignatures {
            signed_bytes: survivor_set_signed_bytes(&round.ctx, &survivors),
            unmask: Unmasking {
                keys: self.keys,
                partners: self.partners,
                sum,
                survivors: u3,
            },
            signatures: BTreeMap::new(),
            survivors,
        })
    }
}

/// `sum += x` (same modulus and length, checked by the caller), over both cores for large
/// vectors.
pub(super) fn add_into(sum: &mut RingVec, x: &RingVec) {
    const CHUNK: usize = 1 << 16;
    match (sum, x) {
        (RingVec::U32(s), RingVec::U32(x)) => s
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(s, x)| {
                s.iter_mut()
                    .zip(x)
                    .for_each(|(a, b)| *a = a.wrapping_add(*b))
            }),
        (RingVec::U64(s), RingVec::U64(x)) => s
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(s, x)| {
                s.iter_mut()
                    .zip(x)
                    .for_each(|(a, b)| *a = a.wrapping_add(*b))
            }),
        // Refused before we get here.
        _ => {}
    }
}

/// What the last two phases carry to the unmasking.
pub(super) struct Unmasking {
    pub(super) keys: BTreeMap<ParticipantId, PeerKeys>,
    pub(super) partners: BTreeMap<ParticipantId, BTreeSet<ParticipantId>>,
    pub(super) sum: RingVec,
    /// U3.
    pub(super) survivors: BTreeSet<ParticipantId>,
}

// ---- Phase 4: ConsistencyCheck.

pub(super) struct AwaitingSignatures {
    pub(super) unmask: Unmasking,
    pub(super) survivors: Vec<ParticipantId>,
    pub(super) signed_bytes: Vec<u8>,
    pub(super) signatures: BTreeMap<ParticipantId, Vec<u8>>,
}

impl AwaitingSignatures {
    pub(super) fn handle(&mut self, m: ConsistencySignature) -> Result<(), ProtocolError> {
        let from = m.from;
        admit(
            from,
            Phase::ConsistencyCheck,
            self.unmask.survivors.contains(&from),
            self.signatures.contains_key(&from),
        )?;
        // The signature on `signed_bytes` was verified by `authenticate`.
        self.signatures.insert(from, m.signature);
        Ok(())
    }

    pub(super) fn close(
        self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<AwaitingUnmaskShares, RoundError> {
        let signers: BTreeSet<ParticipantId> = self.signatures.keys().copied().collect();
        out.phase_closed(
            round,
            Phase::ConsistencyCheck,
            self.survivors.iter().copied(),
            &signers,
        )?;
        let signatures: Vec<(ParticipantId, Vec<u8>)> = self.signatures.into_iter().collect();
        for &u in &signers {
            out.transmits.push_back((
                u,
                ServerMsg::Unmask(UnmaskRequest {
                    ctx: round.ctx.clone(),
                    survivors: self.survivors.clone(),
                    signatures: signatures.clone(),
                }),
            ));
        }
        Ok(AwaitingUnmaskShares {
            unmask: self.unmask,
            signers,
            responded: BTreeSet::new(),
            revealed: BTreeMap::new(),
        })
    }
}

// ---- Phase 5: Unmask.

pub(super) struct AwaitingUnmaskShares {
    pub(super) unmask: Unmasking,
    pub(super) signers: BTreeSet<ParticipantId>,
    pub(super) responded: BTreeSet<ParticipantId>,
    /// owner → the shares revealed of its self-mask seed (owner ∈ U3) or mask key.
    pub(super) revealed: BTreeMap<ParticipantId, Vec<Share>>,
}

impl AwaitingUnmaskShares {
    pub(super) fn handle(&mut self, round: &Round, m: UnmaskShares) -> Result<(), ProtocolError> {
        let from = m.from;
        admit(
            from,
            Phase::Unmask,
            self.signers.contains(&from),
            self.responded.contains(&from),
        )?;
        // `from` holds a share of `owner` iff the server routed `owner → from`.
        let holds = self.unmask.partners.get(&from);
        let mut seen = BTreeSet::new();
        for r in &m.shares {
            let owner = r.owner;
            if !holds.is_some_and(|p| p.contains(&owner)) {
                return Err(refuse(from, Misbehaviour::NotAHolder { owner }));
            }
            if !seen.insert(owner) {
                return Err(refuse(from, Misbehaviour::DuplicateShare { peer: owner }));
            }
            let expected = if self.unmask.survivors.contains(&owner) {
                ShareKind::SelfMask
            } else {
                ShareKind::MaskKey
            };
            if r.kind != expected {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongShareKind {
                        owner,
                        expected,
                        got: r.kind,
                    },
                ));
            }
            let x = share_x(&round.graph, owner, from).unwrap_or(0);
            if r.share.x != x {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongShareIndex {
                        owner,
                        expected: x,
                        got: r.share.x,
                    },
                ));
            }
            if r.share.y.len() != SECRET_LEN {
                return Err(refuse(
                    from,
                    Misbehaviour::WrongLength {
                        expected: SECRET_LEN,
                        got: r.share.y.len(),
                    },
                ));
            }
        }
        for r in m.shares {
            self.revealed.entry(r.owner).or_default().push(r.share);
        }
        self.responded.insert(from);
        Ok(())
    }

    pub(super) fn close(
        mut self,
        round: &Round,
        out: &mut Outbox,
    ) -> Result<RoundOutput, RoundError> {
        out.phase_closed(
            round,
            Phase::Unmask,
            self.signers.iter().copied(),
            &self.responded,
        )?;
        let result = self.unmask_sum(round, out);
        for shares in self.revealed.values_mut() {
            shares.iter_mut().for_each(|s| s.y.zeroize());
        }
        result
    }

    fn unmask_sum(&mut self, round: &Round, out: &mut Outbox) -> Result<RoundOutput, RoundError> {
        let mut masks: Vec<(Seed, MaskSign)> = Vec::new();
        let result = self
            .collect_masks(round, out, &mut masks)
            .map(|(self_masks, mask_keys)| {
                let mut sum = std::mem::replace(&mut self.unmask.sum, RingVec::U32(Vec::new()));
                // One pass over the sum for every self mask and dangling pairwise mask.
                prg::apply_masks(&mut sum, &masks);
                let mut dropped = std::mem::take(&mut out.dropped);
                dropped.sort_unstable();
                RoundOutput {
                    sum,
                    survivors: self.unmask.survivors.iter().copied().collect(),
                    dropped,
                    reconstructed_self_masks: self_masks,
                    reconstructed_mask_keys: mask_keys,
                }
            });
        masks.iter_mut().for_each(|(s, _)| s.zeroize());
        result
    }

    /// Rebuilds every secret needed and lists the masks to remove from the sum.
    fn collect_masks(
        &mut self,
        round: &Round,
        out: &mut Outbox,
        masks: &mut Vec<(Seed, MaskSign)>,
    ) -> Result<(usize, usize), RoundError> {
        let u = &self.unmask;
        let t = round.threshold;
        let mask_transcript = round.ctx.transcript(Phase::MaskedInput);
        let empty = Vec::new();

        // Self masks of the survivors: y_v contains +PRG(b_v).
        for &owner in &u.survivors {
            let shares = self.revealed.get(&owner).unwrap_or(&empty);
            let commitment = u.keys.get(&owner).map(|k| k.commitment);
            let b = rebuild(round, out, owner, ShareKind::SelfMask, shares, t, |b| {
                commitment == Some(self_mask_commitment(&round.ctx, owner, b))
            })?;
            masks.push((b, MaskSign::Sub));
        }

        // Dangling pairwise masks of the dropped (U2 \ U3) that some survivor masked with.
        let mut mask_keys = 0;
        for (&owner, ps) in &u.partners {
            if u.survivors.contains(&owner) {
                continue;
            }
            let live: Vec<ParticipantId> = ps
                .iter()
                .copied()
                .filter(|v| u.survivors.contains(v))
                .collect();
            if live.is_empty() {
                continue;
            }
            let shares = self.revealed.get(&owner).unwrap_or(&empty);
            let s_pk = u.keys.get(&owner).map(|k| k.s_pk);
            let mut sk_bytes = rebuild(round, out, owner, ShareKind::MaskKey, shares, t, |sk| {
                <[u8; 32]>::try_from(sk)
                    .is_ok_and(|sk| Some(AgreementSecret::from_bytes(sk).public_key()) == s_pk)
            })?;
            let sk = AgreementSecret::from_bytes(sk_bytes);
            sk_bytes.zeroize();
            mask_keys += 1;
            for v in live {
                let Some(v_pk) = u.keys.get(&v).map(|k| k.s_pk) else {
                    continue;
                };
                let mut shared = sk.agree(&v_pk).map_err(|source| RoundError::KeyAgreement {
                    owner,
                    peer: v,
                    source,
                })?;
                let seed = pair_seed(&mask_transcript, &shared, owner, v);
                shared.zeroize();
                // v added +PRG(s_uv) if owner < v, −PRG(s_uv) if owner > v: undo it.
                let sign = if owner < v {
                    MaskSign::Sub
                } else {
                    MaskSign::Add
                };
                masks.push((seed, sign));
            }
        }
        Ok((u.survivors.len(), mask_keys))
    }
}

/// Rebuilds one 32-byte secret from its revealed shares, leaving out (and reporting)
/// inconsistent ones.
pub(super) fn rebuild(
    round: &Round,
    out: &mut Outbox,
    owner: ParticipantId,
    kind: ShareKind,
    shares: &[Share],
    t: usize,
    verify: impl Fn(&[u8]) -> bool,
) -> Result<Seed, RoundError> {
    if shares.len() < t {
        return Err(RoundError::ReconstructionBelowThreshold {
            owner,
            kind,
            have: shares.len(),
            need: t,
        });
    }
    let (mut secret, bad) = shamir::combine_verified(shares, t, verify).map_err(|source| {
        RoundError::Reconstruction {
            owner,
            kind,
            source,
        }
    })?;
    for x in bad {
        let holder = round
            .neighbours(owner)
            .get(usize::from(x).wrapping_sub(1))
            .copied();
        if let Some(holder) = holder {
            tracing::warn!(ctx = %round.ctx, owner, holder, %kind, "inconsistent share left out");
            out.events.push_back(ServerEvent::Refused {
                from: holder,
                error: ProtocolError::peer(holder, Misbehaviour::InconsistentShare { owner }),
            });
        }
    }
    let seed = <[u8; 32]>::try_from(secret.as_slice()).map_err(|_| RoundError::SecretLength {
        owner,
        kind,
        len: secret.len(),
    });
    secret.zeroize();
    seed
}
