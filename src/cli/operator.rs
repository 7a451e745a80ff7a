//! `fedsilo job …`: the operator's client of the coordinator's Operator service.

use crate::*;

/// A connection to the coordinator whose transport failures (unreachable, reset, timed
/// out) name the coordinator's address.
#[derive(Clone, Debug)]
pub(crate) struct Coordinator {
    channel: tonic::transport::Channel,
    addr: std::sync::Arc<str>,
    request_timeout: Duration,
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Coordinator {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::Status;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, tonic::Status>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tonic::Status>> {
        let addr = self.addr.clone();
        let timeout = self.request_timeout;
        self.channel
            .poll_ready(cx)
            .map_err(|e| unreachable_status(&addr, timeout, &e))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let addr = self.addr.clone();
        let timeout = self.request_timeout;
        let fut = self.channel.call(req);
        Box::pin(async move {
            fut.await
                .map_err(|e| unreachable_status(&addr, timeout, &e))
        })
    }
}

/// `UNAVAILABLE` naming the coordinator's address and the whole error chain.
fn unreachable_status(
    addr: &str,
    timeout: Duration,
    e: &(dyn std::error::Error + 'static),
) -> tonic::Status {
    let detail = fedsilo_config::display_chain(e);
    tonic::Status::unavailable(format!(
        "coordinator at {addr} (request timeout {} ms): {detail}",
        timeout.as_millis()
    ))
}

pub(crate) async fn operator_client(config: &Path) -> Result<OperatorClient<Coordinator>> {
    let cfg: OperatorConfig = read_toml(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    let tls = client_tls_config(&tls_files(base, &cfg.tls), &cfg.tls_domain)?;
    let connect_timeout = cfg
        .connect_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(OPERATOR_CONNECT_TIMEOUT);
    let request_timeout = cfg
        .request_timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(OPERATOR_REQUEST_TIMEOUT);
    let endpoint = tonic::transport::Endpoint::from_shared(cfg.coordinator.clone())
        .with_context(|| format!("coordinator address '{}'", cfg.coordinator))?
        .tls_config(tls)?
        .connect_timeout(connect_timeout)
        .timeout(request_timeout);
    // `connect_timeout` bounds the TCP connection only: the TLS and HTTP/2 handshakes are
    // bounded here.
    let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Ok(r) => {
            r.with_context(|| format!("cannot reach the coordinator at {}", cfg.coordinator))?
        }
        Err(_) => bail!(
            "cannot reach the coordinator at {}: not connected within {} ms (connect_timeout_ms)",
            cfg.coordinator,
            connect_timeout.as_millis()
        ),
    };
    Ok(OperatorClient::new(Coordinator {
        channel,
        addr: cfg.coordinator.as_str().into(),
        request_timeout,
    }))
}

/// The job state of a status reply, as `fedsilo job status` prints it.
pub(crate) fn state_name(s: &pb::JobStatus) -> String {
    match fedsilo_proto::convert::job_state_from(s.state, "state") {
        Ok(state) => state.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Launches a job; the coordinator's refusal is the error.
pub(crate) async fn launch(
    client: &mut OperatorClient<Coordinator>,
    request: pb::LaunchJobRequest,
) -> Result<pb::JobStatus> {
    Ok(client
        .launch_job(request)
        .await
        .map_err(|s| anyhow::anyhow!("coordinator refused the job: {}", s.message()))?
        .into_inner())
}

/// One job's status.
pub(crate) async fn get_job(
    client: &mut OperatorClient<Coordinator>,
    job: &str,
) -> Result<pb::JobStatus> {
    Ok(client
        .get_job(pb::JobRef {
            job_id: job.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

pub(crate) fn is_terminal(s: &pb::JobStatus) -> bool {
    fedsilo_proto::convert::job_state_from(s.state, "state").is_ok_and(|st| st.is_terminal())
}

pub(crate) fn print_status(s: &pb::JobStatus) -> Result<()> {
    outln!(
        "{}  {}  round {}/{}  participants [{}]{}{}",
        s.job_id,
        state_name(s),
        s.round,
        s.total_rounds,
        s.participants.join(", "),
        if s.epsilon > 0.0 {
            format!(
                "  ε = {:.3}{}",
                s.epsilon,
                if s.epsilon_budget > 0.0 {
                    format!(" / {}", s.epsilon_budget)
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        },
        if s.detail.is_empty() {
            String::new()
        } else {
            format!("  ({})", s.detail)
        }
    )?;
    if let Some(p) = &s.privacy {
        let eps = |e: f64| {
            if e.is_finite() {
                format!("ε = {e:.3}")
            } else {
                "not protected".to_string()
            }
        };
        let level = match pb::DpLevel::try_from(p.level) {
            Ok(pb::DpLevel::Record) => "record",
            _ => "institution",
        };
        outln!(
            "  privacy ({level}-level DP, δ = {:e}, noise multiplier {:.3}): one customer's record: {}; one institution: {}",
            p.delta,
            p.noise_multiplier,
            eps(p.epsilon_record),
            eps(p.epsilon_institution)
        )?;
    }
    for m in &s.metrics {
        outln!(
            "  {} (round {}): AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}  ({:.0} positives, {:.0} negatives)",
            m.label,
            m.round,
            m.auc,
            m.ks,
            m.log_loss,
            m.top_decile_lift,
            m.positives,
            m.negatives
        )?;
    }
    Ok(())
}

pub(crate) async fn job(cmd: JobCmd) -> Result<()> {
    match cmd {
        JobCmd::Launch {
            config,
            spec,
            schema,
        } => {
            // `kind = "psi"` makes a PSI job; a training spec has no top-level `kind`.
            #[derive(serde::Deserialize)]
            struct KindProbe {
                #[serde(default)]
                kind: Option<String>,
            }
            let probe: KindProbe = read_toml(&spec)?;
            if matches!(
                probe.kind.as_deref(),
                Some("vertical_logistic" | "vertical_gbdt" | "vertical_score")
            ) {
                let v: fedsilo_task::vertical::VerticalJobSpec = read_toml(&spec)?;
                v.validate()
                    .with_context(|| format!("vertical job spec {}", spec.display()))?;
                let mut client = operator_client(&config).await?;
                let s = launch(&mut client, pb::LaunchJobRequest::from(&v)).await?;
                print_status(&s)?;
                return Ok(());
            }
            if probe.kind.is_some() {
                let psi: fedsilo_task::psi::PsiJobSpec = read_toml(&spec)?;
                psi.validate()
                    .with_context(|| format!("PSI job spec {}", spec.display()))?;
                let mut client = operator_client(&config).await?;
                let s = launch(&mut client, pb::LaunchJobRequest::from(&psi)).await?;
                print_status(&s)?;
                return Ok(());
            }
            let mut spec: JobSpec = read_toml(&spec)?;
            if spec.features.is_empty() || spec.labels.is_empty() || schema.is_some() {
                let Some(schema_path) = schema else {
                    bail!("the job spec lists no features or labels: pass --schema so they can be taken from the dataset's schema");
                };
                let schema = Schema::from_toml_file(&schema_path)?;
                if spec.features.is_empty() {
                    spec.features = schema.feature_columns();
                } else {
                    // Raw names (`state`) become every encoded column (`state=AK`, …);
                    // names the schema does not have are refused here, before launch.
                    spec.features = fedsilo_ml::table::expand_feature_names(
                        &spec.features,
                        &schema.feature_columns(),
                    )
                    .with_context(|| {
                        format!(
                            "checking the job's features against {}",
                            schema_path.display()
                        )
                    })?;
                }
                if let Some(l) = spec
                    .labels
                    .iter()
                    .find(|l| !schema.label_columns().contains(l))
                {
                    bail!(
                        "labels: '{l}' is not a label of {} (labels: {})",
                        schema_path.display(),
                        schema.label_columns().join(", ")
                    );
                }
                if spec.labels.is_empty() {
                    spec.labels = schema
                        .labels
                        .iter()
                        .take(1)
                        .map(|l| l.column.clone())
                        .collect();
                }
            }
            spec.validate()?;
            let mut client = operator_client(&config).await?;
            let s = launch(&mut client, pb::LaunchJobRequest::from(&spec)).await?;
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Status {
            config,
            job,
            follow,
        } => {
            let mut client = operator_client(&config).await?;
            loop {
                let s = get_job(&mut client, &job).await?;
                print_status(&s)?;
                if !follow || is_terminal(&s) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        JobCmd::List { config } => {
            let mut client = operator_client(&config).await?;
            let list = client
                .list_jobs(pb::ListJobsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            if list.jobs.is_empty() {
                outln!("no jobs")?;
            }
            for s in &list.jobs {
                print_status(s)?;
            }
            Ok(())
        }
        JobCmd::Cancel {
            config,
            job,
            reason,
        } => {
            let mut client = operator_client(&config).await?;
            let s = client
                .cancel_job(pb::CancelJobRequest {
                    job_id: job.clone(),
                    reason,
                })
                .await
                .map_err(|s| anyhow::anyhow!("cannot cancel job '{job}': {}", s.message()))?
                .into_inner();
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Resume { config, job } => {
            let mut client = operator_client(&config).await?;
            let s = client
                .resume_job(pb::JobRef {
                    job_id: job.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("cannot resume job '{job}': {}", s.message()))?
                .into_inner();
            print_status(&s)?;
            Ok(())
        }
        JobCmd::Model { config, job, out } => {
            let mut client = operator_client(&config).await?;
            let m = client
                .get_model(pb::JobRef { job_id: job })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            std::fs::write(&out, m.model_json)
                .with_context(|| format!("writing {}", out.display()))?;
            outln!("model written to {}", out.display())?;
            Ok(())
        }
    }
}
