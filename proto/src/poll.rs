//! `PollReply` with its messages kept encoded, so a message meant for many participants (a
//! round's `RoundStart`) is encoded once and shared.
//!
//! On the wire this is exactly `message PollReply { repeated ToParticipant messages = 1; }`
//! of `fedsilo.proto`: an embedded message and a `bytes` field share the length-delimited
//! wire type, so a [`EncodedToParticipant`] is written as the bytes it already holds, and a
//! foreign client sees an ordinary `PollReply`. `build.rs` maps the proto type here
//! (`extern_path`), so the generated services use it as [`crate::pb::PollReply`].
//!
//! A coordinator queues every message as an [`EncodedToParticipant`] (a [`Bytes`]: cloning
//! it for another queue copies nothing); a participant decodes each one with
//! [`EncodedToParticipant::decode`] and converts it like any other wire message.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::pb;

/// Field number of `PollReply.messages`.
const MESSAGES: u32 = 1;

/// One `ToParticipant`, protobuf-encoded; cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedToParticipant(Bytes);

impl EncodedToParticipant {
    /// Encodes `m` (once; every clone shares the bytes).
    pub fn new(m: &pb::ToParticipant) -> Self {
        EncodedToParticipant(Bytes::from(m.encode_to_vec()))
    }

    /// The message, decoded (a participant does this for every message it polls).
    pub fn decode(&self) -> Result<pb::ToParticipant, DecodeError> {
        pb::ToParticipant::decode(self.0.clone())
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<pb::ToParticipant> for EncodedToParticipant {
    fn from(m: pb::ToParticipant) -> Self {
        EncodedToParticipant::new(&m)
    }
}

impl From<fedsilo_task::job::ToParticipant> for EncodedToParticipant {
    fn from(m: fedsilo_task::job::ToParticipant) -> Self {
        EncodedToParticipant::new(&pb::ToParticipant::from(m))
    }
}

/// `fedsilo.v1.PollReply`: the messages waiting for the caller, at most a poll's worth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReply {
    pub messages: Vec<EncodedToParticipant>,
}

impl Message for PollReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for m in &self.messages {
            prost::encoding::bytes::encode(MESSAGES, &m.0, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == MESSAGES {
            let mut bytes = Bytes::new();
            prost::encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
            self.messages.push(EncodedToParticipant(bytes));
            Ok(())
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.messages
            .iter()
            .map(|m| prost::encoding::bytes::encoded_len(MESSAGES, &m.0))
            .sum()
    }

    fn clear(&mut self) {
        self.messages.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What prost generates for `PollReply` from `fedsilo.proto`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct GeneratedPollReply {
        #[prost(message, repeated, tag = "1")]
        messages: Vec<pb::ToParticipant>,
    }

    fn messages() -> Vec<pb::ToParticipant> {
        use pb::to_participant::Body;
        vec![
            pb::ToParticipant {
                body: Some(Body::RoundEnd(pb::RoundEnd {
                    ctx: Some(pb::RoundContext {
                        job_id: "j".into(),
                        round: 3,
                    }),
                    ok: true,
                    detail: "ok".into(),
                })),
            },
            pb::ToParticipant { body: None },
            pb::ToParticipant {
                body: Some(Body::JobEnd(pb::JobEnd {
                    job_id: "j".into(),
                    state: pb::JobState::Finished as i32,
                    detail: "é".repeat(200),
                })),
            },
        ]
    }

    #[test]
    fn the_wire_is_the_generated_message() {
        let ms = messages();
        let generated = GeneratedPollReply {
            messages: ms.clone(),
        };
        let shared = PollReply {
            messages: ms.iter().map(EncodedToParticipant::new).collect(),
        };
        let bytes = shared.encode_to_vec();
        assert_eq!(bytes, generated.encode_to_vec());
        assert_eq!(shared.encoded_len(), bytes.len());
        // Each side reads the other's bytes.
        let back = PollReply::decode(generated.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, shared);
        let decoded: Vec<_> = back.messages.iter().map(|m| m.decode().unwrap()).collect();
        assert_eq!(decoded, ms);
        assert_eq!(
            GeneratedPollReply::decode(bytes.as_slice()).unwrap(),
            generated
        );
    }

    #[test]
    fn a_message_that_does_not_decode_is_an_error_for_that_message_only() {
        let mut wire = PollReply {
            messages: messages()
                .iter()
                .take(1)
                .map(EncodedToParticipant::new)
                .collect(),
        }
        .encode_to_vec();
        // A second message: field 1 of ToParticipant (round_start) claiming 9 bytes, 1 given.
        wire.extend_from_slice(&[0x0a, 3, 0x0a, 9, 0]);
        let reply = PollReply::decode(wire.as_slice()).unwrap();
        assert_eq!(reply.messages.len(), 2);
        assert!(reply.messages[0].decode().is_ok());
        assert!(reply.messages[1].decode().is_err());
    }
}
