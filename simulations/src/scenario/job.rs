//! Reading a scenario's `[[jobs]]` table strictly as a name plus a [`JobSpec`].
//!
//! `#[serde(flatten)]` would accept any key (flatten defeats `deny_unknown_fields`), so the
//! table is read through a map adapter instead: every key is first checked against
//! [`ENTRY_KEYS`] inside the key's own deserialisation, exactly where a derived
//! `deny_unknown_fields` refuses it, so the error carries the key's file, line and column and
//! `fedsilo_config` names the nearest valid key. The scenario's own keys (`name`, and
//! `min_participants` / `phase_timeout_ms` whose defaults differ) are taken out; every other
//! key and its value go to `JobSpec`'s derived `Deserialize`, which reads nested tables
//! (`learning`, `model`, `dp`) with their own strictness and paths (`jobs[0].learning`).

use fedsilo_task::JobSpec;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::JobEntry;

/// Every key a job table may hold: `name`, then the [`JobSpec`] keys the scenario does not
/// decide itself (not `job_id`, `seed`, `max_participants`).
pub(crate) const ENTRY_KEYS: &[&str] = &[
    "name",
    "dataset",
    "task",
    "model",
    "features",
    "labels",
    "rounds",
    "min_participants",
    "threshold",
    "neighbours",
    "learning",
    "dp",
    "eval_every",
    "hist_bins",
    "phase_timeout_ms",
    "absence_patience_ms",
];

/// The scenario's default phase timeout (a `JobSpec` alone defaults to 30 s).
pub(crate) const DEFAULT_PHASE_TIMEOUT_MS: u64 = 10_000;

impl<'de> Deserialize<'de> for JobEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = JobEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a job table (name, dataset, rounds, ...)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<JobEntry, A::Error> {
        let mut own = Own::default();
        let mut spec =
            JobSpec::deserialize(MapAccessDeserializer::new(Entry { map, own: &mut own }))?;
        let name = own.name.ok_or_else(|| de::Error::missing_field("name"))?;
        spec.job_id = name.clone();
        spec.phase_timeout_ms = own.phase_timeout_ms.unwrap_or(DEFAULT_PHASE_TIMEOUT_MS);
        Ok(JobEntry {
            name,
            spec,
            min_participants: own.min_participants,
        })
    }
}

/// The keys the scenario reads itself.
#[derive(Default)]
struct Own {
    name: Option<String>,
    min_participants: Option<usize>,
    phase_timeout_ms: Option<u64>,
}

/// The job table as `JobSpec` sees it: checked keys, the scenario's own keys taken out.
struct Entry<'a, A> {
    map: A,
    own: &'a mut Own,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entry<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key_seed(EntryKey)? else {
                return Ok(None);
            };
            match key {
                "name" => self.own.name = Some(self.map.next_value()?),
                "min_participants" => self.own.min_participants = Some(self.map.next_value()?),
                "phase_timeout_ms" => self.own.phase_timeout_ms = Some(self.map.next_value()?),
                spec_key => {
                    let key: de::value::StrDeserializer<'_, A::Error> =
                        spec_key.into_deserializer();
                    return seed.deserialize(key).map(Some);
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A key of a job table, refused unless it is one of [`ENTRY_KEYS`].
struct EntryKey;

impl<'de> DeserializeSeed<'de> for EntryKey {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a job key")
    }

    fn visit_str<Err: de::Error>(self, key: &str) -> Result<&'static str, Err> {
        ENTRY_KEYS
            .iter()
            .find(|k| **k == key)
            .copied()
            .ok_or_else(|| Err::unknown_field(key, ENTRY_KEYS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn scenario(jobs: &str) -> Result<Scenario, fedsilo_config::ConfigError> {
        let text = format!(
            "name = \"t\"\n[institutions]\ncount = 3\n[[datasets]]\nname = \"d\"\n\
             synthetic = {{ rows_per_institution = 50 }}\n{jobs}"
        );
        fedsilo_config::from_toml_str(&text, "s.toml")
    }

    #[test]
    fn a_job_table_is_a_name_and_a_job_spec_with_the_scenarios_defaults() {
        let s = scenario(
            "[[jobs]]\nname = \"risk\"\ndataset = \"d\"\nrounds = 3\n\
             [jobs.learning]\nlocal_epochs = 4\n",
        )
        .unwrap();
        let j = &s.jobs[0];
        assert_eq!(j.name, "risk");
        assert_eq!(j.spec.job_id, "risk");
        assert_eq!(j.spec.dataset, "d");
        assert_eq!(j.spec.rounds, 3);
        assert_eq!(j.spec.learning.local_epochs, 4);
        assert_eq!(j.spec.phase_timeout_ms, DEFAULT_PHASE_TIMEOUT_MS);
        assert_eq!(j.spec.eval_every, 5);
        assert_eq!(j.spec.hist_bins, 1000);
        assert_eq!(j.min_participants, None);
        let s = scenario(
            "[[jobs]]\nname = \"risk\"\ndataset = \"d\"\nrounds = 3\nmin_participants = 3\n\
             phase_timeout_ms = 2500\nmodel = { kind = \"mlp\", hidden = [4] }\n",
        )
        .unwrap();
        let j = &s.jobs[0];
        assert_eq!(j.min_participants, Some(3));
        assert_eq!(j.spec.phase_timeout_ms, 2500);
        assert_eq!(
            j.spec.model,
            fedsilo_task::ModelSpec::Mlp { hidden: vec![4] }
        );
    }

    #[test]
    fn a_typo_in_a_job_table_is_refused_naming_the_key_the_nearest_one_and_the_line() {
        let jobs = "[[jobs]]\nname = \"risk\"\ndataset = \"d\"\nrounds = 3\nphase_timout_ms = 5\n";
        let e = scenario(jobs).unwrap_err();
        assert_eq!(e.unknown_key(), Some("phase_timout_ms"), "{e}");
        assert_eq!(e.suggestion(), Some("phase_timeout_ms"), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("s.toml:11:1: unknown field `phase_timout_ms`"),
            "{msg}"
        );
        assert!(msg.contains("in `jobs[0]`"), "{msg}");
        // The scenario decides these; a job table may not.
        for (key, line) in [("seed = 3", 11), ("job_id = \"x\"", 11)] {
            let e = scenario(&format!(
                "[[jobs]]\nname = \"a\"\ndataset = \"d\"\nrounds = 3\n{key}\n"
            ))
            .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("s.toml:{line}:1: unknown field")),
                "{e}"
            );
        }
        // Nested tables keep their own strictness and their path.
        let e = scenario("[[jobs]]\nname = \"a\"\ndataset = \"d\"\nrounds = 3\n[jobs.learning]\nlocal_epoch = 2\n")
            .unwrap_err();
        assert_eq!(e.suggestion(), Some("local_epochs"), "{e}");
        assert!(e.to_string().contains("in `jobs[0].learning`"), "{e}");
        let e = scenario("[[jobs]]\nname = \"a\"\ndataset = \"d\"\nrounds = 3\nmodel = { kind = \"gbdt\", trees = 3 }\n")
            .unwrap_err();
        assert_eq!(e.unknown_key(), Some("trees"), "{e}");
        // Required keys are still required.
        let e = scenario("[[jobs]]\ndataset = \"d\"\nrounds = 3\n").unwrap_err();
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        let e = scenario("[[jobs]]\nname = \"a\"\ndataset = \"d\"\n").unwrap_err();
        assert!(e.to_string().contains("missing field `rounds`"), "{e}");
    }

    /// A key added to `JobSpec` must be placed here: either readable from a scenario or
    /// decided by it.
    #[test]
    fn entry_keys_are_the_job_spec_keys_the_scenario_does_not_decide() {
        let s = scenario("[[jobs]]\nname = \"a\"\ndataset = \"d\"\nrounds = 3\n").unwrap();
        let spec = serde_json::to_value(&s.jobs[0].spec).unwrap();
        let mut spec_keys: Vec<&str> = spec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !["job_id", "seed", "max_participants"].contains(k))
            .collect();
        spec_keys.push("name");
        spec_keys.sort_unstable();
        let mut entry: Vec<&str> = ENTRY_KEYS.to_vec();
        entry.sort_unstable();
        assert_eq!(entry, spec_keys);
    }
}
