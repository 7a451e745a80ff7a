//! A vertical message in parts: each serialised message is cut into parts that each fit one
//! gRPC message, every part sealed on its own in the channel's order (so the channel's
//! in-order open refuses a lost, replayed, reordered or altered part like any message), and
//! the receiver joins them again before decoding.
//!
//! A part is a 16-byte header — its index, the message's part count (both `u32`) and the
//! message's length in bytes (`u64`), little-endian — then its bytes. The receiver takes
//! part 0 of a new message, then exactly the next index, with the same count and length in
//! every header; no part but that of an empty message is empty, none runs past the length,
//! and the last ends exactly at it. The length is bounded ([`MAX_MESSAGE`]), so a peer
//! cannot make a node buffer without limit; memory grows with the parts that arrived,
//! never with what a header claims beyond the bound.

/// Bytes of a part's header.
pub const HEADER_BYTES: usize = 16;

/// The largest vertical message (serialised) a party sends or reassembles: 2 GiB, about
/// 3 million training rows at 2,048-bit keys (one 512-byte ciphertext per row, ≈ 687 bytes
/// in base64 JSON), 1.5 million at 4,096 bits.
pub const MAX_MESSAGE: u64 = 2 << 30;

/// Why a message could not be split or a part not be taken. Each names the part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error(
        "a vertical message of {bytes} bytes is larger than the {limit} bytes allowed \
         (messages grow with training rows × key size: train on fewer aligned rows)"
    )]
    TooLarge { bytes: u64, limit: u64 },
    #[error("a part of {len} bytes is shorter than its {header}-byte header", header = HEADER_BYTES)]
    Truncated { len: usize },
    #[error("part {got} arrived where part {expected} of the message was due")]
    OutOfOrder { expected: u32, got: u32 },
    #[error(
        "part {index} says the message has {count} parts and {total} bytes; its first part \
         said {first_count} parts and {first_total} bytes"
    )]
    Inconsistent {
        index: u32,
        count: u32,
        total: u64,
        first_count: u32,
        first_total: u64,
    },
    #[error("a message of {total} bytes cannot have {count} non-empty parts")]
    BadCount { count: u32, total: u64 },
    #[error("part {index} of {count} is empty")]
    Empty { index: u32, count: u32 },
    #[error("part {index} of {count} runs past the message's {total} bytes")]
    Overlong { index: u32, count: u32, total: u64 },
    #[error("the message's last part ended it after {got} of its {total} bytes")]
    Short { got: u64, total: u64 },
}

struct Header {
    index: u32,
    count: u32,
    total: u64,
}

fn header(part: &[u8]) -> Result<(Header, &[u8]), PartError> {
    let (head, body) = part
        .split_first_chunk::<HEADER_BYTES>()
        .ok_or(PartError::Truncated { len: part.len() })?;
    let (index, rest) = head.split_at(4);
    let (count, total) = rest.split_at(4);
    let word = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
    let total = u64::from_le_bytes(total.try_into().unwrap_or_default());
    Ok((
        Header {
            index: word(index),
            count: word(count),
            total,
        },
        body,
    ))
}

/// `msg` as parts of at most `part_len` bytes each after the header (`part_len ≥ 1`): one
/// part when it fits. Refused when longer than `limit`.
pub fn split(
    msg: &[u8],
    part_len: usize,
    limit: u64,
) -> Result<impl Iterator<Item = Vec<u8>> + '_, PartError> {
    let total = msg.len() as u64;
    let too_large = PartError::TooLarge {
        bytes: total,
        limit,
    };
    if total > limit {
        return Err(too_large);
    }
    let part_len = part_len.max(1);
    let count = u32::try_from(msg.len().div_ceil(part_len).max(1)).map_err(|_| too_large)?;
    let mut chunks: Vec<&[u8]> = msg.chunks(part_len).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    Ok(chunks.into_iter().zip(0u32..).map(move |(chunk, index)| {
        let mut part = Vec::with_capacity(HEADER_BYTES + chunk.len());
        part.extend_from_slice(&index.to_le_bytes());
        part.extend_from_slice(&count.to_le_bytes());
        part.extend_from_slice(&total.to_le_bytes());
        part.extend_from_slice(chunk);
        part
    }))
}

struct Pending {
    count: u32,
    total: u64,
    next: u32,
    buf: Vec<u8>,
}

/// A part's bytes against its message: not empty (but for an empty message), not past its
/// length, and the last one ending at it.
fn check_part(p: &Pending, h: &Header, body: &[u8]) -> Result<(), PartError> {
    if body.is_empty() && p.total > 0 {
        return Err(PartError::Empty {
            index: h.index,
            count: p.count,
        });
    }
    let got = (p.buf.len() as u64).saturating_add(body.len() as u64);
    if got > p.total {
        return Err(PartError::Overlong {
            index: h.index,
            count: p.count,
            total: p.total,
        });
    }
    if h.index.saturating_add(1) == p.count && got != p.total {
        return Err(PartError::Short {
            got,
            total: p.total,
        });
    }
    Ok(())
}

/// The receiving side: parts in, whole messages out.
pub struct Reassembly {
    limit: u64,
    pending: Option<Pending>,
}

impl Reassembly {
    /// Messages longer than `limit` bytes are refused at their first part.
    pub fn new(limit: u64) -> Self {
        Reassembly {
            limit,
            pending: None,
        }
    }

    /// Whether a message is partly received.
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the next part (opened from the channel, so in the channel's order): the whole
    /// message when this was its last part.
    pub fn take(&mut self, part: &[u8]) -> Result<Option<Vec<u8>>, PartError> {
        let (h, body) = header(part)?;
        let expected = self.pending.as_ref().map_or(0, |p| p.next);
        if h.index != expected {
            return Err(PartError::OutOfOrder {
                expected,
                got: h.index,
            });
        }
        let pending = match self.pending.take() {
            Some(p) if p.count != h.count || p.total != h.total => {
                let e = PartError::Inconsistent {
                    index: h.index,
                    count: h.count,
                    total: h.total,
                    first_count: p.count,
                    first_total: p.total,
                };
                self.pending = Some(p);
                return Err(e);
            }
            Some(p) => p,
            None => {
                if h.total > self.limit {
                    return Err(PartError::TooLarge {
                        bytes: h.total,
                        limit: self.limit,
                    });
                }
                if h.count == 0 || u64::from(h.count) > h.total.max(1) {
                    return Err(PartError::BadCount {
                        count: h.count,
                        total: h.total,
                    });
                }
                Pending {
                    count: h.count,
                    total: h.total,
                    next: 0,
                    // Grows with the parts that arrive, not with what the header claims.
                    buf: Vec::with_capacity(body.len()),
                }
            }
        };
        let mut p = pending;
        let check = check_part(&p, &h, body);
        if let Err(e) = check {
            // A refused part leaves what was received before it (the session fails anyway).
            if h.index > 0 {
                self.pending = Some(p);
            }
            return Err(e);
        }
        if h.index + 1 == p.count {
            if p.buf.is_empty() {
                return Ok(Some(body.to_vec()));
            }
            p.buf.extend_from_slice(body);
            return Ok(Some(p.buf));
        }
        p.buf.extend_from_slice(body);
        p.next += 1;
        self.pending = Some(p);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use fedsilo_crypto::keys::IdentityKey;
    use fedsilo_crypto::psi::channel::{Channel, ChannelHello};
    use fedsilo_crypto::psi::{PsiContext, PsiError, PsiMsg, Role, Sealed};
    use rand::SeedableRng;

    fn parts(msg: &[u8], part_len: usize) -> Vec<Vec<u8>> {
        split(msg, part_len, MAX_MESSAGE).unwrap().collect()
    }

    fn join(parts: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, PartError> {
        let mut r = Reassembly::new(MAX_MESSAGE);
        let mut out = Vec::new();
        for p in parts {
            if let Some(m) = r.take(p)? {
                out.push(m);
            }
        }
        assert!(!r.in_progress());
        Ok(out)
    }

    #[test]
    fn messages_split_and_join_again_at_any_size() {
        let msg: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 9, 10, 11, 99, 100, 101, 9_999, 10_000] {
            for part_len in [1, 7, 10, 100, 4_096, 1 << 20] {
                let m = &msg[..len];
                let ps = parts(m, part_len);
                assert_eq!(ps.len(), len.div_ceil(part_len).max(1));
                assert!(ps.iter().all(|p| p.len() <= HEADER_BYTES + part_len));
                assert_eq!(join(&ps).unwrap(), vec![m.to_vec()], "{len} / {part_len}");
            }
        }
        // Several messages in a row, each in its parts.
        let mut all = parts(&msg[..50], 8);
        all.extend(parts(&msg[50..51], 8));
        all.extend(parts(&msg[100..300], 64));
        assert_eq!(
            join(&all).unwrap(),
            vec![
                msg[..50].to_vec(),
                msg[50..51].to_vec(),
                msg[100..300].to_vec()
            ]
        );
    }

    #[test]
    fn a_missing_repeated_reordered_or_altered_part_is_refused_by_name() {
        let msg = vec![5u8; 100];
        let ps = parts(&msg, 30);
        assert_eq!(ps.len(), 4);
        // A part dropped, repeated, or two swapped.
        let drop: Vec<_> = [0, 2, 3].iter().map(|&i| ps[i].clone()).collect();
        assert_eq!(
            join(&drop),
            Err(PartError::OutOfOrder {
                expected: 1,
                got: 2
            })
        );
        let dup: Vec<_> = [0, 1, 1, 2, 3].iter().map(|&i| ps[i].clone()).collect();
        assert_eq!(
            join(&dup),
            Err(PartError::OutOfOrder {
                expected: 2,
                got: 1
            })
        );
        let swap: Vec<_> = [1, 0, 2, 3].iter().map(|&i| ps[i].clone()).collect();
        assert_eq!(
            join(&swap),
            Err(PartError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );
        // The last part lost, then the next message begins.
        let mut cut: Vec<_> = ps[..3].to_vec();
        cut.extend(parts(b"next", 30));
        assert_eq!(
            join(&cut),
            Err(PartError::OutOfOrder {
                expected: 3,
                got: 0
            })
        );
        // Headers that disagree, run past the length, stop short, or announce too much.
        let mut bad = ps.clone();
        bad[2][4] = 5; // count 5
        assert!(matches!(
            join(&bad),
            Err(PartError::Inconsistent {
                index: 2,
                count: 5,
                ..
            })
        ));
        let mut bad = ps.clone();
        bad[3].extend_from_slice(b"xx");
        assert_eq!(
            join(&bad),
            Err(PartError::Overlong {
                index: 3,
                count: 4,
                total: 100
            })
        );
        let mut bad = ps.clone();
        bad[3].truncate(HEADER_BYTES + 5);
        assert_eq!(
            join(&bad),
            Err(PartError::Short {
                got: 95,
                total: 100
            })
        );
        let mut bad = ps.clone();
        bad[1].truncate(HEADER_BYTES);
        assert_eq!(join(&bad), Err(PartError::Empty { index: 1, count: 4 }));
        assert_eq!(
            join(&[ps[0][..10].to_vec()]),
            Err(PartError::Truncated { len: 10 })
        );
        let mut huge = ps[0].clone();
        huge[8..16].copy_from_slice(&(MAX_MESSAGE + 1).to_le_bytes());
        assert_eq!(
            join(&[huge]),
            Err(PartError::TooLarge {
                bytes: MAX_MESSAGE + 1,
                limit: MAX_MESSAGE
            })
        );
        let mut many = ps[0].clone();
        many[4..8].copy_from_slice(&101u32.to_le_bytes());
        assert_eq!(
            join(&[many]),
            Err(PartError::BadCount {
                count: 101,
                total: 100
            })
        );
        // The sender refuses a message beyond its bound.
        assert!(matches!(
            split(&msg, 30, 99).err(),
            Some(PartError::TooLarge {
                bytes: 100,
                limit: 99
            })
        ));
    }

    fn channels() -> (Channel, Channel) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(21);
        let a = Arc::new(IdentityKey::generate(&mut rng));
        let p = Arc::new(IdentityKey::generate(&mut rng));
        let ctx = PsiContext {
            job_id: "v".into(),
            session: 1,
        };
        let (ha, ma) = ChannelHello::new(
            ctx.clone(),
            Role::Active,
            &a,
            p.public_key(),
            [3; 32],
            &mut rng,
        );
        let (hp, mp) = ChannelHello::new(ctx, Role::Passive, &p, a.public_key(), [3; 32], &mut rng);
        let (PsiMsg::Hello(ma), PsiMsg::Hello(mp)) = (ma, mp) else {
            panic!("not hellos")
        };
        (ha.accept(&mp).unwrap(), hp.accept(&ma).unwrap())
    }

    fn sealed(m: PsiMsg) -> Sealed {
        match m {
            PsiMsg::Sealed(s) => s,
            PsiMsg::Hello(_) => panic!("a hello"),
        }
    }

    /// Each part is its own sealed message: the channel's in-order open refuses an altered,
    /// dropped or replayed part before reassembly sees it.
    #[test]
    fn sealed_parts_are_opened_in_order_and_a_tampered_one_fails() {
        let (mut a, mut p) = channels();
        let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let sealed_parts: Vec<Sealed> = parts(&msg, 300)
            .iter()
            .map(|part| sealed(a.seal(part)))
            .collect();
        assert_eq!(sealed_parts.len(), 4);
        let mut tampered = sealed_parts[2].clone();
        if let Some(b) = tampered.ciphertext.get_mut(HEADER_BYTES + 3) {
            *b ^= 0x40;
        }
        let mut r = Reassembly::new(MAX_MESSAGE);
        for s in &sealed_parts[..2] {
            assert_eq!(r.take(&p.open(s).unwrap()).unwrap(), None);
        }
        assert!(matches!(
            p.open(&sealed_parts[3]),
            Err(PsiError::WrongSequence {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            p.open(&sealed_parts[1]),
            Err(PsiError::WrongSequence { .. })
        ));
        assert!(matches!(
            p.open(&tampered),
            Err(PsiError::Undecryptable { .. })
        ));
        // The genuine parts still complete the message.
        assert_eq!(r.take(&p.open(&sealed_parts[2]).unwrap()).unwrap(), None);
        assert_eq!(
            r.take(&p.open(&sealed_parts[3]).unwrap()).unwrap(),
            Some(msg)
        );
    }
}
