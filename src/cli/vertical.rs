//! `fedsilo score` of a vertical model: a federated scoring job (`kind = "vertical_score"`)
//! launched on the coordinator, followed to its end, and the active party's ranked list
//! copied from its node's state directory.

use fedsilo_participant::vertical::score::ScoredRows;
use fedsilo_participant::vertical::VerticalModelFile;
use fedsilo_task::job::JobState;
use fedsilo_task::vertical::{VerticalJobSpec, VerticalKind};

use super::operator::{get_job, is_terminal, launch, operator_client, print_status};
use crate::*;

/// Whether `path` is a vertical job's model file (it names a role and a vertical kind).
pub(crate) fn is_vertical_model(path: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        role: Option<String>,
        kind: Option<String>,
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Probe>(&b).ok())
        .is_some_and(|p| p.role.is_some() && p.kind.is_some_and(|k| k.starts_with("vertical_")))
}

pub(crate) struct ScoreRequest<'a> {
    pub model: &'a Path,
    pub config: &'a Path,
    pub psi_job: &'a str,
    pub out: &'a Path,
    pub top: Option<usize>,
    pub top_fraction: Option<f64>,
    pub parquet: bool,
}

/// The state directory a model file at `<state_dir>/vertical/<job>.json` lives in.
fn state_dir_of(model: &Path) -> Result<PathBuf> {
    let dir = model
        .parent()
        .filter(|d| d.file_name() == Some("vertical".as_ref()));
    match dir.and_then(Path::parent) {
        Some(state) => Ok(state.to_path_buf()),
        None => bail!(
            "{}: a vertical model file is read where its node wrote it, \
             <state_dir>/vertical/<job>.json (the scores are written beside it)",
            model.display()
        ),
    }
}

pub(crate) async fn score(r: ScoreRequest<'_>) -> Result<()> {
    if r.parquet {
        bail!("a vertical model's ranked list is written as CSV only (--format csv)");
    }
    let text = std::fs::read(r.model).with_context(|| format!("reading {}", r.model.display()))?;
    let model: VerticalModelFile = serde_json::from_slice(&text)
        .with_context(|| format!("vertical model file {}", r.model.display()))?;
    if model.role != "active" {
        bail!(
            "{} is the {} party's part of vertical job '{}': only the active party learns the \
             scores; run this with the active party's model file ('{}' holds it)",
            r.model.display(),
            model.role,
            model.job_id,
            model.peer
        );
    }
    let state = state_dir_of(r.model)?;
    let spec = VerticalJobSpec {
        kind: VerticalKind::VerticalScore,
        job_id: String::new(),
        psi_job: r.psi_job.to_string(),
        model_job: model.job_id.clone(),
        active: String::new(),
        passive: Vec::new(),
        key_bits: None,
        test_key: false,
        label: String::new(),
        holdout_fraction: None,
        iterations: None,
        l2: None,
        pos_weight: None,
        optimizer: None,
        gbdt: None,
    };
    spec.validate().context("the scoring job")?;
    let mut client = operator_client(r.config).await?;
    let launched = launch(&mut client, pb::LaunchJobRequest::from(&spec)).await?;
    print_status(&launched)?;
    let job = launched.job_id.clone();
    let mut last = String::new();
    let status = loop {
        let s = get_job(&mut client, &job).await?;
        let line = format!("{} {}", s.state, s.detail);
        if line != last {
            print_status(&s)?;
            last = line;
        }
        if is_terminal(&s) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let state_now = fedsilo_proto::convert::job_state_from(status.state, "state")?;
    if state_now != JobState::Finished {
        bail!("scoring job '{job}' ended {state_now}: {}", status.detail);
    }
    let written = ScoredRows::path(&state, &job);
    let text = std::fs::read_to_string(&written).with_context(|| {
        format!(
            "scoring job '{job}' finished, but its ranked list is not at {} (is --model the \
             file of the node that took part?)",
            written.display()
        )
    })?;
    let rows = text.lines().count().saturating_sub(1);
    let keep = match (r.top, r.top_fraction) {
        (Some(n), _) => n.min(rows),
        (None, Some(f)) => ((rows as f64) * f).ceil() as usize,
        (None, None) => rows,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines().take(keep + 1) {
        out.push_str(line);
        out.push('\n');
    }
    if let Some(dir) = r.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(r.out, out).with_context(|| format!("writing {}", r.out.display()))?;
    outln!(
        "{keep} of {rows} customers ranked in {} (scoring job '{job}', model '{}')",
        r.out.display(),
        model.job_id
    )?;
    Ok(())
}
