//! What one step asks of a participant.

use fedsilo_ml::gbdt::GbdtInstruction;
use fedsilo_ml::linear::LocalTrainConfig;
use fedsilo_ml::scorecard::ScorecardBins;
use serde::{Deserialize, Serialize};

use crate::model::TrainedModel;

/// Log-magnitude histogram: bin 0 holds |x| < 1e-6, bin i holds [10^(i-7), 10^(i-6)), the last
/// bin everything ≥ 1e12.
pub(crate) const MAG_BINS: usize = 20;
/// |x/scale| is clipped here in the moments step (robust to a few extreme outliers).
pub(crate) const MOMENT_CLIP: f64 = 1e3;
/// Each coordinate of a local update is clipped to ±DELTA_CLIP (non-DP jobs).
pub(crate) const DELTA_CLIP: f64 = 10.0;
/// Per-row log-loss is capped here (probabilities clamped to [1e-15, 1-1e-15]).
pub(crate) const LOSS_CAP: f64 = 35.0;

/// Upper edge of log-magnitude bin `bin` (see [`MAG_BINS`]).
pub(crate) fn mag_upper(bin: usize) -> f64 {
    10f64.powi(bin as i32 - 6)
}

/// Which columns and labels a step works on; carried by every instruction so a participant
/// needs no memory of earlier steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobData {
    pub dataset: String,
    pub features: Vec<String>,
    pub labels: Vec<String>,
}

/// Integer noise a participant adds to its encoded vector (distributed discrete Gaussian).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSpec {
    /// L2 clip (float domain): of the whole update (institution level), of one row's
    /// gradient (record-level training), of each standardised value (record-level moments;
    /// counts need none and carry 1).
    pub clip: f64,
    /// Standard deviation of the noise the SUM must carry, float domain (σ·sensitivity). Each
    /// of the n participants of the round adds discrete Gaussian noise of stddev/√n
    /// ([`NoiseSpec::share`]); participants that drop out take their share with them, so a
    /// round with dropouts carries a little less noise than planned.
    pub stddev: f64,
    /// Record-level training: each row takes part with this probability (Poisson sampling,
    /// drawn with the participant's own secret randomness) and the participant sends the sum
    /// of the sampled rows' clipped gradients. Absent: institution level (the whole clipped
    /// update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_rate: Option<f64>,
}

impl NoiseSpec {
    /// This participant's share of the noise in a round of `n` participants.
    pub fn share(&self, n: usize) -> f64 {
        self.stddev / (n.max(1) as f64).sqrt()
    }
}

/// What a step is for. Its [`name`](Purpose::name) is how the audit log, round summaries and
/// reports spell it (and how they serialise it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Purpose {
    /// Counts, magnitudes and moments (global standardisation).
    #[serde(rename = "stats")]
    Stats,
    /// A round of training (model update).
    #[serde(rename = "train")]
    Train,
    /// Federated evaluation on the hold-out sets.
    #[serde(rename = "eval")]
    Eval,
    /// Histograms of one level of a boosted tree.
    #[serde(rename = "tree-level")]
    TreeLevel,
    /// Binning: feature statistics or fine histograms for cut points.
    #[serde(rename = "bins")]
    Bins,
    /// Scorecard good/bad counts per bin (WOE/IV).
    #[serde(rename = "woe-counts")]
    WoeCounts,
    /// A private set intersection session (no sum: the coordinator relays sealed points and
    /// records the set and intersection sizes).
    #[serde(rename = "psi")]
    Psi,
    /// One iteration or tree of a vertical model's session, or its end (no sum: the
    /// coordinator relays sealed messages and records their number, size and hash).
    #[serde(rename = "vertical")]
    Vertical,
}

impl Purpose {
    /// Every purpose, in the order a job meets them.
    pub const ALL: [Purpose; 8] = [
        Purpose::Psi,
        Purpose::Vertical,
        Purpose::Stats,
        Purpose::Bins,
        Purpose::WoeCounts,
        Purpose::TreeLevel,
        Purpose::Train,
        Purpose::Eval,
    ];

    /// Whether a step of this purpose is a training release: one round of a gradient model,
    /// one tree level of boosting. The DP accountant counts these (a job's other noised
    /// releases are fixed in number and charged from the start).
    pub fn is_training(self) -> bool {
        matches!(self, Purpose::Train | Purpose::TreeLevel)
    }

    /// The name the audit log and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Stats => "stats",
            Purpose::Train => "train",
            Purpose::Eval => "eval",
            Purpose::TreeLevel => "tree-level",
            Purpose::Bins => "bins",
            Purpose::WoeCounts => "woe-counts",
            Purpose::Psi => "psi",
            Purpose::Vertical => "vertical",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown purpose name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown step purpose '{0}' (expected one of psi, vertical, stats, bins, woe-counts, tree-level, train, eval)"
)]
pub struct UnknownPurpose(pub String);

impl std::str::FromStr for Purpose {
    type Err = UnknownPurpose;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPurpose(s.to_string()))
    }
}

/// What one participant must compute for one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instruction {
    Scale {
        data: JobData,
        /// Record-level DP jobs: the counts are noised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<NoiseSpec>,
    },
    Moments {
        data: JobData,
        scales: Vec<f64>,
        /// Record-level DP jobs: each standardised value is clipped to ±`clip` (instead of
        /// ±[`MOMENT_CLIP`]) and the sums are noised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<NoiseSpec>,
    },
    Train {
        data: JobData,
        model: TrainedModel,
        local: LocalTrainConfig,
        seed: u64,
        /// Present when the job runs with differential privacy.
        noise: Option<NoiseSpec>,
    },
    Evaluate {
        data: JobData,
        model: TrainedModel,
        bins: usize,
    },
    /// A step of federated gradient boosting on raw features.
    Gbdt {
        data: JobData,
        step: GbdtInstruction,
        /// Record-level DP jobs: the fine histogram is a noised count release, and a tree
        /// level is Poisson-sampled (`sampling_rate`), its gradients clipped to `clip`, and
        /// noised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<NoiseSpec>,
    },
    /// Scorecard binning: per feature, counts over `fine_bins` equal-width bins of its range
    /// (plus missing), from which the plan reads quantile cut points.
    ScorecardHistogram {
        data: JobData,
        ranges: Vec<(f32, f32)>,
        fine_bins: usize,
        /// Record-level DP jobs: the counts are noised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<NoiseSpec>,
    },
    /// Scorecard WOE: good/bad row counts per feature and bin.
    ScorecardCounts {
        data: JobData,
        bins: ScorecardBins,
        /// Record-level DP jobs: the counts are noised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<NoiseSpec>,
    },
}

impl Instruction {
    /// What the step is for: how round summaries, the audit log and reports name it.
    pub fn purpose(&self) -> Purpose {
        match self {
            Instruction::Scale { .. } | Instruction::Moments { .. } => Purpose::Stats,
            Instruction::Train { .. } => Purpose::Train,
            Instruction::Evaluate { .. } => Purpose::Eval,
            Instruction::Gbdt { step, .. } => match step {
                GbdtInstruction::Level { .. }
                | GbdtInstruction::Leaves { .. }
                | GbdtInstruction::LevelDelta { .. }
                | GbdtInstruction::LeavesDelta { .. } => Purpose::TreeLevel,
                GbdtInstruction::Stats { .. } | GbdtInstruction::FineHistogram { .. } => {
                    Purpose::Bins
                }
            },
            Instruction::ScorecardHistogram { .. } => Purpose::Bins,
            Instruction::ScorecardCounts { .. } => Purpose::WoeCounts,
        }
    }

    /// Noise the participant must add after encoding (None for non-DP steps).
    pub fn noise(&self) -> Option<&NoiseSpec> {
        match self {
            Instruction::Train { noise, .. }
            | Instruction::Scale { noise, .. }
            | Instruction::Moments { noise, .. }
            | Instruction::ScorecardHistogram { noise, .. }
            | Instruction::ScorecardCounts { noise, .. }
            | Instruction::Gbdt { noise, .. } => noise.as_ref(),
            Instruction::Evaluate { .. } => None,
        }
    }

    pub fn data(&self) -> &JobData {
        match self {
            Instruction::Scale { data, .. }
            | Instruction::Moments { data, .. }
            | Instruction::Train { data, .. }
            | Instruction::Evaluate { data, .. }
            | Instruction::Gbdt { data, .. }
            | Instruction::ScorecardHistogram { data, .. }
            | Instruction::ScorecardCounts { data, .. } => data,
        }
    }
}

/// One step as the plan hands it to the round driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub index: u64,
    pub instruction: Instruction,
    /// The same step as a delta on the state of the previous step (a boosting level sent as
    /// the new splits instead of the whole model so far): what the round driver sends when
    /// every participant it invites is known to hold that state; `instruction` otherwise.
    /// Both give the same vector.
    pub delta: Option<Instruction>,
    /// Length of every participant's vector.
    pub len: usize,
    /// Largest magnitude of any element of one participant's vector (encoding bound).
    pub max_abs: f64,
}
