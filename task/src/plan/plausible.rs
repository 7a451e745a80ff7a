//! Plausibility of a decoded sum, checked before the plan absorbs it.
//!
//! Secure aggregation guarantees that the coordinator gets the exact sum of what the
//! survivors sent; it cannot tell whether each of them sent an honest vector. Honest
//! participants clip every value of their vector to the step's declared range
//! (`Step::max_abs`) before encoding, so the sum of `n` survivors lies within `n × max_abs`
//! element by element; and where the step's vector holds counts, honest sums of counts are
//! non-negative integers that agree with each other as the layout implies (every row lands
//! in exactly one bin of each feature, every hold-out row in one score bin of each label).
//! [`Plan::check_sum`] names the first rule a sum breaks; such a sum cannot come from honest
//! participants, and the coordinator fails the round without applying it.
//!
//! What it does **not** catch: a dishonest vector that stays inside the rules — a
//! participant that reports counts or an update that are wrong but in range and consistent
//! is not detected (secure aggregation hides exactly the per-participant view that would
//! be needed). The checks bound the damage one participant can do to a sum; they do not
//! prove its honesty. Steps with differential-privacy noise are checked for range only
//! (the noise makes their counts non-integral by design).

use serde::{Deserialize, Serialize};

use fedsilo_ml::gbdt::GbdtInstruction;

use super::Plan;
use crate::instruction::{Instruction, Step, DELTA_CLIP, LOSS_CAP, MAG_BINS};

/// Why a decoded sum cannot be the sum of honest participants' vectors.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Implausible {
    /// The job has no step in progress.
    #[error("the job has no step in progress")]
    NoStep,
    #[error("the sum has {got} elements, the step expects {expected}")]
    Length { expected: usize, got: usize },
    #[error("element {index} of the sum is not finite ({value})")]
    NonFinite { index: usize, value: f64 },
    /// Outside `survivors × max_abs`: at least one contribution was not clipped to the
    /// declared range.
    #[error(
        "element {index} of the sum is {value}, outside ±{bound} ({survivors} survivors × the \
         declared range {max_abs})"
    )]
    OutOfRange {
        index: usize,
        value: f64,
        bound: f64,
        survivors: usize,
        max_abs: f64,
    },
    #[error("{what} (element {index}) is {value}: a count must be a non-negative integer")]
    NotACount {
        what: String,
        index: usize,
        value: f64,
    },
    #[error("{what} (element {index}) is {value}, below 0")]
    Negative {
        what: String,
        index: usize,
        value: f64,
    },
    #[error("{what} (element {index}) is {value}, above {limit}")]
    AboveLimit {
        what: String,
        index: usize,
        value: f64,
        limit: f64,
    },
    /// Two quantities the layout makes equal (or ordered) are not.
    #[error("{what}: {left} vs {right}")]
    Inconsistent { what: String, left: f64, right: f64 },
}

/// Relative slack for float rounding in decoding (2^-50 ≈ 9e-16).
const REL: f64 = 1.0 / 1_125_899_906_842_624.0;

struct Checker<'a> {
    sum: &'a [f64],
    /// Largest rounding error of one element of the sum from the fixed-point encoding.
    slack: f64,
}

impl Checker<'_> {
    fn at(&self, index: usize) -> Result<f64, Implausible> {
        self.sum.get(index).copied().ok_or(Implausible::Length {
            expected: index + 1,
            got: self.sum.len(),
        })
    }

    /// Tolerance for a value that is not an integer count (rounded when encoded).
    fn tol(&self, v: f64) -> f64 {
        self.slack + v.abs() * REL
    }

    /// A sum of integer counts: exact in fixed point, so only decoding rounding is allowed.
    fn count(&self, index: usize, what: impl FnOnce() -> String) -> Result<f64, Implausible> {
        let v = self.at(index)?;
        let r = v.round();
        if r < 0.0 || (v - r).abs() > v.abs() * REL + 1e-9 {
            return Err(Implausible::NotACount {
                what: what(),
                index,
                value: v,
            });
        }
        Ok(r)
    }

    fn non_negative(
        &self,
        index: usize,
        what: impl FnOnce() -> String,
    ) -> Result<f64, Implausible> {
        let v = self.at(index)?;
        if v < -self.tol(v) {
            return Err(Implausible::Negative {
                what: what(),
                index,
                value: v,
            });
        }
        Ok(v)
    }

    fn at_most(
        &self,
        index: usize,
        limit: f64,
        what: impl FnOnce() -> String,
    ) -> Result<(), Implausible> {
        let v = self.at(index)?;
        if v.abs() > limit + self.tol(limit) {
            return Err(Implausible::AboveLimit {
                what: what(),
                index,
                value: v,
                limit,
            });
        }
        Ok(())
    }

    /// Counts `[from, from + len)`, summed.
    fn count_total(
        &self,
        from: usize,
        len: usize,
        what: &dyn Fn(usize) -> String,
    ) -> Result<f64, Implausible> {
        let mut total = 0.0;
        for i in from..from + len {
            total += self.count(i, || what(i - from))?;
        }
        Ok(total)
    }
}

fn equal(what: impl FnOnce() -> String, left: f64, right: f64) -> Result<(), Implausible> {
    // Both sides are sums of exact integer counts.
    if (left - right).abs() > left.abs().max(right.abs()) * REL * 4.0 {
        return Err(Implausible::Inconsistent {
            what: what(),
            left,
            right,
        });
    }
    Ok(())
}

impl Plan {
    /// Checks the decoded SUM over `survivors` participants of `step` (the plan's current
    /// step, as [`Plan::next_step`] gave it to the round) before it is absorbed; `quantum` is
    /// the resolution of one encoded value (2^-frac_bits). See the [module
    /// documentation](self) for what is and is not detected. Never changes the plan.
    pub fn check_sum(
        &self,
        step: &Step,
        sum: &[f64],
        survivors: usize,
        quantum: f64,
    ) -> Result<(), Implausible> {
        if self.is_done() || step.index != self.step_index() {
            return Err(Implausible::NoStep);
        }
        if sum.len() != step.len {
            return Err(Implausible::Length {
                expected: step.len,
                got: sum.len(),
            });
        }
        if let Some((index, &value)) = sum.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Implausible::NonFinite { index, value });
        }
        let n = survivors.max(1) as f64;
        let quantum = if quantum.is_finite() && quantum > 0.0 {
            quantum
        } else {
            0.0
        };
        // Each honest value is at most max_abs, encoded as round(max_abs / quantum) units.
        let per_value = if quantum > 0.0 {
            (step.max_abs / quantum).round() * quantum
        } else {
            step.max_abs
        };
        let bound = n * per_value;
        for (index, &value) in sum.iter().enumerate() {
            if value.abs() > bound + bound * REL + quantum {
                return Err(Implausible::OutOfRange {
                    index,
                    value,
                    bound,
                    survivors,
                    max_abs: step.max_abs,
                });
            }
        }
        // Noised sums (differential privacy) are checked for range only: the noise makes
        // their counts non-integral and their layout rules approximate by design.
        if step.instruction.noise().is_some() {
            return Ok(());
        }
        let c = Checker {
            sum,
            slack: n * quantum,
        };
        let labels = &self.data().labels;
        let features = &self.data().features;
        let label = |i: usize| labels.get(i).map(String::as_str).unwrap_or("?").to_string();
        let feature = |j: usize| {
            features
                .get(j)
                .map(String::as_str)
                .unwrap_or("?")
                .to_string()
        };
        match &step.instruction {
            Instruction::Scale { .. } => {
                let l = labels.len();
                let rows = c.count(0, || "rows".into())?;
                for i in 0..l {
                    let pos = c.count(1 + i, || format!("positives of label '{}'", label(i)))?;
                    if pos > rows {
                        return Err(Implausible::Inconsistent {
                            what: format!("positives of label '{}' exceed the rows", label(i)),
                            left: pos,
                            right: rows,
                        });
                    }
                }
                for j in 0..features.len() {
                    let o = 1 + l + j * (1 + MAG_BINS);
                    let observed = c.count(o, || format!("observed values of '{}'", feature(j)))?;
                    if observed > rows {
                        return Err(Implausible::Inconsistent {
                            what: format!("observed values of '{}' exceed the rows", feature(j)),
                            left: observed,
                            right: rows,
                        });
                    }
                    let binned = c.count_total(o + 1, MAG_BINS, &|b| {
                        format!("magnitude bin {b} of '{}'", feature(j))
                    })?;
                    equal(
                        || {
                            format!(
                                "magnitude bins of '{}' must add up to its observed values",
                                feature(j)
                            )
                        },
                        binned,
                        observed,
                    )?;
                }
            }
            Instruction::Moments { .. } => {
                for j in 0..features.len() {
                    c.non_negative(2 * j + 1, || format!("Σ(x/s)² of '{}'", feature(j)))?;
                }
            }
            Instruction::Train { noise: None, .. } => {
                // [n_k·clip(Δ) per parameter…, n_k, loss]
                let dim = step.len.saturating_sub(2);
                let rows = c.count(dim, || "training rows".into())?;
                c.non_negative(dim + 1, || "training loss".into())?;
                c.at_most(dim + 1, rows * labels.len() as f64 * LOSS_CAP, || {
                    "training loss (rows × labels × the per-row cap)".into()
                })?;
                for i in 0..dim {
                    c.at_most(i, rows * DELTA_CLIP, || {
                        format!("update of parameter {i} (rows × the per-coordinate clip)")
                    })?;
                }
            }
            Instruction::Evaluate { bins, .. } => {
                let per = 2 * bins + 2;
                let mut first: Option<f64> = None;
                for li in 0..labels.len() {
                    let o = li * per;
                    let hist = c.count_total(o, 2 * bins, &|b| {
                        format!("score-histogram bin {b} of label '{}'", label(li))
                    })?;
                    let rows = c.count(o + 2 * bins + 1, || {
                        format!("hold-out rows of label '{}'", label(li))
                    })?;
                    equal(
                        || {
                            format!(
                                "score histogram of label '{}' must add up to its hold-out rows",
                                label(li)
                            )
                        },
                        hist,
                        rows,
                    )?;
                    c.non_negative(o + 2 * bins, || {
                        format!("hold-out loss of label '{}'", label(li))
                    })?;
                    c.at_most(o + 2 * bins, rows * LOSS_CAP, || {
                        format!(
                            "hold-out loss of label '{}' (rows × the per-row cap)",
                            label(li)
                        )
                    })?;
                    match first {
                        None => first = Some(rows),
                        Some(r0) => equal(
                            || {
                                format!(
                                    "hold-out rows of label '{}' and '{}' must be equal",
                                    label(0),
                                    label(li)
                                )
                            },
                            r0,
                            rows,
                        )?,
                    }
                }
            }
            Instruction::Gbdt { step: g, .. } => match g {
                GbdtInstruction::Stats { n_features } => {
                    let rows = c.count(0, || "rows".into())?;
                    let pos = c.count(1, || "positives".into())?;
                    if pos > rows {
                        return Err(Implausible::Inconsistent {
                            what: "positives exceed the rows".into(),
                            left: pos,
                            right: rows,
                        });
                    }
                    for j in 0..*n_features {
                        c.count(2 + 3 * j, || format!("observed values of '{}'", feature(j)))?;
                        c.non_negative(2 + 3 * j + 2, || format!("Σx² of '{}'", feature(j)))?;
                    }
                }
                GbdtInstruction::FineHistogram { ranges, fine_bins } => {
                    per_feature_histograms(&c, ranges.len(), fine_bins + 1, &feature)?;
                }
                GbdtInstruction::Level { .. }
                | GbdtInstruction::Leaves { .. }
                | GbdtInstruction::LevelDelta { .. }
                | GbdtInstruction::LeavesDelta { .. } => {
                    // [node][feature][bin][grad, hess] or [leaf][grad, hess]: hessians
                    // p(1-p) are non-negative.
                    for i in (1..step.len).step_by(2) {
                        c.non_negative(i, || "a hessian sum".into())?;
                    }
                }
            },
            Instruction::ScorecardHistogram { fine_bins, .. } => {
                per_feature_histograms(&c, features.len(), fine_bins + 1, &feature)?;
            }
            Instruction::ScorecardCounts { bins, .. } => {
                // [feature][bin (missing last)][good, bad]
                let mut o = 0;
                let mut first: Option<(f64, f64)> = None;
                for j in 0..bins.n_features() {
                    let (mut good, mut bad) = (0.0, 0.0);
                    for b in 0..bins.slots(j) {
                        good += c.count(o + 2 * b, || {
                            format!("good rows in bin {b} of '{}'", feature(j))
                        })?;
                        bad += c.count(o + 2 * b + 1, || {
                            format!("bad rows in bin {b} of '{}'", feature(j))
                        })?;
                    }
                    match first {
                        None => first = Some((good, bad)),
                        Some((g0, b0)) => {
                            equal(
                                || format!("good rows of '{}' and '{}'", feature(0), feature(j)),
                                g0,
                                good,
                            )?;
                            equal(
                                || format!("bad rows of '{}' and '{}'", feature(0), feature(j)),
                                b0,
                                bad,
                            )?;
                        }
                    }
                    o += 2 * bins.slots(j);
                }
            }
            // DP training (noisy by design): the range check above is all that applies.
            Instruction::Train { noise: Some(_), .. } => {}
        }
        Ok(())
    }
}

/// `features` histograms of `width` counts each (missing last): each one counts every row
/// once, so their totals are equal.
fn per_feature_histograms(
    c: &Checker<'_>,
    features: usize,
    width: usize,
    name: &dyn Fn(usize) -> String,
) -> Result<(), Implausible> {
    let mut first: Option<f64> = None;
    for j in 0..features {
        let total = c.count_total(j * width, width, &|b| {
            format!("histogram bin {b} of '{}'", name(j))
        })?;
        match first {
            None => first = Some(total),
            Some(t0) => equal(
                || {
                    format!(
                        "histograms of '{}' and '{}' must count the same rows",
                        name(0),
                        name(j)
                    )
                },
                t0,
                total,
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JobSpec, Learning, ModelSpec, Task, DEFAULT_ABSENCE_PATIENCE_MS};

    fn plan() -> Plan {
        let spec = JobSpec {
            job_id: "t".into(),
            dataset: "d".into(),
            task: Task::Risk,
            model: ModelSpec::LogisticRegression,
            features: vec![],
            labels: vec![],
            rounds: 3,
            min_participants: 2,
            threshold: None,
            neighbours: None,
            learning: Learning::default(),
            dp: None,
            eval_every: 1,
            hist_bins: 10,
            seed: 1,
            phase_timeout_ms: 1000,
            max_participants: 100,
            absence_patience_ms: DEFAULT_ABSENCE_PATIENCE_MS,
        };
        Plan::new(spec, vec!["x".into(), "z".into()], vec!["y".into()]).unwrap()
    }

    /// A Scale sum of 2 participants: 10 rows, 3 positives, every value observed.
    fn scale_sum() -> Vec<f64> {
        let mut v = vec![0.0; 1 + 1 + 2 * (1 + MAG_BINS)];
        v[0] = 10.0;
        v[1] = 3.0;
        for j in 0..2 {
            let o = 2 + j * (1 + MAG_BINS);
            v[o] = 10.0;
            v[o + 1 + 7] = 6.0;
            v[o + 1 + 8] = 4.0;
        }
        v
    }

    const Q: f64 = 1.0 / 65536.0;

    #[test]
    fn an_honest_scale_sum_passes() {
        {
            let p = plan();
            p.check_sum(&p.next_step().unwrap(), &scale_sum(), 2, Q)
        }
        .unwrap();
    }

    #[test]
    fn a_sum_beyond_survivors_times_the_range_is_out_of_range() {
        let p = plan();
        let max_abs = p.next_step().unwrap().max_abs;
        let mut s = scale_sum();
        s[3] = 2.5 * max_abs;
        match p.check_sum(&p.next_step().unwrap(), &s, 2, Q) {
            Err(Implausible::OutOfRange {
                index: 3,
                survivors: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // The same value is in range for three survivors (and then fails as a count that
        // does not match its bins).
        assert!(!matches!(
            p.check_sum(&p.next_step().unwrap(), &s, 3, Q),
            Err(Implausible::OutOfRange { .. })
        ));
    }

    #[test]
    fn counts_must_be_non_negative_integers_and_add_up() {
        let p = plan();
        let mut s = scale_sum();
        s[1] = 3.5;
        assert!(matches!(
            p.check_sum(&p.next_step().unwrap(), &s, 2, Q),
            Err(Implausible::NotACount { index: 1, .. })
        ));
        let mut s = scale_sum();
        s[1] = -1.0;
        assert!(matches!(
            p.check_sum(&p.next_step().unwrap(), &s, 2, Q),
            Err(Implausible::NotACount { index: 1, .. })
        ));
        let mut s = scale_sum();
        s[1] = 11.0;
        assert!(matches!(
            p.check_sum(&p.next_step().unwrap(), &s, 2, Q),
            Err(Implausible::Inconsistent { .. })
        ));
        let mut s = scale_sum();
        s[2 + 1 + 7] += 1.0;
        let e = p.check_sum(&p.next_step().unwrap(), &s, 2, Q).unwrap_err();
        assert!(e.to_string().contains("magnitude bins of 'x'"), "{e}");
        assert!(matches!(
            p.check_sum(&p.next_step().unwrap(), &s[1..], 2, Q),
            Err(Implausible::Length { .. })
        ));
        let mut s = scale_sum();
        s[4] = f64::NAN;
        assert!(matches!(
            p.check_sum(&p.next_step().unwrap(), &s, 2, Q),
            Err(Implausible::NonFinite { index: 4, .. })
        ));
    }
}
