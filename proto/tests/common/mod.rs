//! Hand-built sample messages shared by the wire tests.
#![allow(dead_code)]

use fedsilo_crypto::encoding::{FixedPoint, Modulus, RingVec};
use fedsilo_crypto::msg::{
    AdvertiseKeys, ClientMsg, ConsistencyRequest, ConsistencySignature, EncryptedShare,
    MaskedInput, MaskedInputRequest, RevealedShare, RoundConfig, RoundContext, ServerMsg,
    ShareKeys, ShareKeysRequest, ShareKind, UnmaskRequest, UnmaskShares,
};
use fedsilo_crypto::shamir::Share;
use fedsilo_ml::linear::{LinearParams, LocalTrainConfig};
use fedsilo_task::job::{RoundStart, ToCoordinator, ToParticipant};
use fedsilo_task::{Instruction, JobData, ModelParams, NoiseSpec, Standardizer, TrainedModel};

pub fn ctx() -> RoundContext {
    RoundContext {
        job_id: "credit-risk-2024".into(),
        round: 7,
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)))
        .collect()
}

fn arr(seed: u8) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&bytes(32, seed));
    a
}

pub fn advertise(from: u32) -> AdvertiseKeys {
    AdvertiseKeys {
        ctx: ctx(),
        from,
        c_pk: arr(1 + from as u8),
        s_pk: arr(2 + from as u8),
        self_mask_commitment: arr(3 + from as u8),
        signature: bytes(64, 4),
    }
}

pub fn encrypted(from: u32, to: u32) -> EncryptedShare {
    EncryptedShare {
        from,
        to,
        ciphertext: bytes(88, (from * 10 + to) as u8),
    }
}

pub fn masked_u32(len: usize) -> MaskedInput {
    MaskedInput {
        ctx: ctx(),
        from: 2,
        masked: RingVec::U32(
            (0..len as u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect(),
        ),
        signature: bytes(64, 5),
    }
}

pub fn masked_u64(len: usize) -> MaskedInput {
    MaskedInput {
        ctx: ctx(),
        from: 3,
        masked: RingVec::U64(
            (0..len as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect(),
        ),
        signature: bytes(64, 6),
    }
}

pub fn unmask_shares() -> UnmaskShares {
    UnmaskShares {
        ctx: ctx(),
        from: 1,
        shares: vec![
            RevealedShare {
                owner: 0,
                kind: ShareKind::SelfMask,
                share: Share {
                    x: 2,
                    y: bytes(32, 9),
                },
            },
            RevealedShare {
                owner: 4,
                kind: ShareKind::MaskKey,
                share: Share {
                    x: 255,
                    y: bytes(32, 10),
                },
            },
        ],
        signature: bytes(64, 11),
    }
}

/// Every `ClientMsg` variant (masked input in both moduli).
pub fn client_msgs() -> Vec<ClientMsg> {
    vec![
        ClientMsg::AdvertiseKeys(advertise(1)),
        ClientMsg::ShareKeys(ShareKeys {
            ctx: ctx(),
            from: 1,
            shares: vec![encrypted(1, 0), encrypted(1, 2), encrypted(1, 3)],
            signature: bytes(64, 12),
        }),
        ClientMsg::MaskedInput(masked_u32(17)),
        ClientMsg::MaskedInput(masked_u64(5)),
        ClientMsg::MaskedInput(masked_u32(0)),
        ClientMsg::ConsistencySignature(ConsistencySignature {
            ctx: ctx(),
            from: 4,
            signature: bytes(64, 77),
        }),
        ClientMsg::UnmaskShares(unmask_shares()),
    ]
}

/// Every `ServerMsg` variant.
pub fn server_msgs() -> Vec<ServerMsg> {
    vec![
        ServerMsg::ShareKeys(ShareKeysRequest {
            ctx: ctx(),
            keys: vec![advertise(0), advertise(1), advertise(2)],
        }),
        ServerMsg::MaskedInput(MaskedInputRequest {
            ctx: ctx(),
            shares: vec![encrypted(0, 1), encrypted(2, 1)],
        }),
        ServerMsg::ConsistencyCheck(ConsistencyRequest {
            ctx: ctx(),
            survivors: vec![0, 1, 3],
        }),
        ServerMsg::Unmask(UnmaskRequest {
            ctx: ctx(),
            survivors: vec![0, 1, 3],
            signatures: vec![(0, bytes(64, 1)), (1, bytes(64, 2)), (3, bytes(64, 3))],
        }),
    ]
}

pub fn round_start() -> RoundStart {
    RoundStart {
        config: RoundConfig {
            ctx: ctx(),
            participants: vec![0, 1, 2, 3, 4],
            neighbours: 4,
            threshold: 3,
            vector_len: 1_000,
            modulus: Modulus::Pow64,
            graph_seed: arr(42),
        },
        encoding: FixedPoint::new(Modulus::Pow64, 24, 10.0, 5).expect("valid encoding"),
        instruction: train_instruction(),
        phase_timeout_ms: 30_000,
    }
}

/// A training step of a two-feature logistic regression.
pub fn train_instruction() -> Instruction {
    let features: Vec<String> = vec!["income".into(), "age".into()];
    let labels: Vec<String> = vec!["default".into()];
    Instruction::Train {
        data: JobData {
            dataset: "credit".into(),
            features: features.clone(),
            labels: labels.clone(),
        },
        model: TrainedModel {
            features,
            labels,
            standardizer: Standardizer {
                mean: vec![50_000.0, 40.0],
                std: vec![20_000.0, 12.0],
                missing_rate: vec![0.0, 0.1],
            },
            params: ModelParams::LogisticRegression {
                per_label: vec![LinearParams {
                    coef: vec![0.25, -0.5],
                    intercept: -1.0,
                }],
            },
        },
        local: LocalTrainConfig {
            epochs: 2,
            learning_rate: 0.05,
            batch_size: 64,
            l2: 1e-4,
            pos_weight: 1.0,
            prox_mu: 0.0,
        },
        seed: 9,
        noise: Some(NoiseSpec {
            clip: 1.0,
            stddev: 0.5,
            sampling_rate: None,
        }),
    }
}

pub fn to_participant_all() -> Vec<ToParticipant> {
    let mut v = vec![ToParticipant::RoundStart(round_start().into())];
    v.extend(server_msgs().into_iter().map(ToParticipant::SecAgg));
    v.push(ToParticipant::RoundEnd {
        ctx: ctx(),
        ok: true,
        detail: "aggregated 5 of 5".into(),
    });
    v.push(ToParticipant::RoundEnd {
        ctx: ctx(),
        ok: false,
        detail: String::new(),
    });
    v.push(ToParticipant::JobEnd {
        job_id: "credit-risk-2024".into(),
        state: fedsilo_task::job::JobState::Finished,
        detail: "10 rounds, ε = 2.9".into(),
    });
    v
}

pub fn to_coordinator_all() -> Vec<ToCoordinator> {
    let mut v: Vec<ToCoordinator> = client_msgs()
        .into_iter()
        .map(ToCoordinator::SecAgg)
        .collect();
    v.push(ToCoordinator::Decline {
        ctx: ctx(),
        reason: "dataset credit is missing column income".into(),
    });
    v
}
