//! Subcommands that run on this machine.

use crate::*;

pub(crate) fn coordinator_config(config: &Path) -> Result<ServiceConfig> {
    let cfg: CoordinatorConfig = read_toml(config)?;
    let base = config.parent().unwrap_or(Path::new("."));
    Ok(ServiceConfig {
        listen: cfg.listen,
        state_dir: resolve(base, &cfg.state_dir),
        roster: resolve(base, &cfg.roster),
        tls: tls_files(base, &cfg.tls),
        limits: cfg.limits,
        observer: None,
        seed: None,
        ops: cfg.ops.map(|o| ops_config(base, o)).transpose()?,
    })
}

/// Shortest dashboard token accepted (keygen writes 64 hex digits).
const MIN_TOKEN_CHARS: usize = 32;

fn ops_config(base: &Path, o: OpsSection) -> Result<fedsilo_coordinator::ops::OpsConfig> {
    let token = match o.token_file {
        None => None,
        Some(f) => {
            let path = resolve(base, &f);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("[ops] token_file: cannot read {}", path.display()))?;
            let token = text.trim().to_string();
            if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
                bail!(
                    "[ops] token_file {}: a token is one word of at least {MIN_TOKEN_CHARS} characters \
                     (fedsilo keygen writes 64 hex digits)",
                    path.display()
                );
            }
            Some(token)
        }
    };
    Ok(fedsilo_coordinator::ops::OpsConfig {
        listen: o.listen,
        token,
    })
}

pub(crate) fn coordinator_init(state_dir: &Path) -> Result<()> {
    use fedsilo_coordinator::state::{init, Initialised};
    match init(state_dir).context("coordinator init")? {
        Initialised::Created => eprintln!(
            "coordinator state created in {} (empty store, empty audit log)",
            state_dir.display()
        ),
        Initialised::Adopted { jobs, audit } => eprintln!(
            "coordinator state in {} adopted: {jobs} job(s), audit log {audit}",
            state_dir.display()
        ),
    }
    Ok(())
}

pub(crate) fn audit_verify(file: &Path, store: Option<&Path>) -> Result<()> {
    match store {
        None => {
            let s = fedsilo_coordinator::audit::verify(file)
                .with_context(|| format!("audit log {}", file.display()))?;
            outln!(
                "{}: {} entries, chain intact, head {} (tail not checked: pass --store to compare with the store's record)",
                file.display(),
                s.entries,
                s.head
            )
        }
        Some(store) => {
            let (s, recorded) = fedsilo_coordinator::state::verify_store_and_log(store, file)
                .with_context(|| {
                    format!("audit log {} against {}", file.display(), store.display())
                })?;
            outln!(
                "{}: {} entries, chain intact, head {}; the store {} recorded {recorded}: consistent",
                file.display(),
                s.entries,
                s.head,
                store.display()
            )
        }
    }
}

pub(crate) fn simulate(scenario: &Path, out: &Path, transport: TransportArg) -> Result<()> {
    let s = Scenario::load(scenario)?;
    let transport = match transport {
        TransportArg::Memory => Transport::Memory,
        TransportArg::Grpc => Transport::Grpc,
    };
    let expected: u64 = s
        .jobs
        .iter()
        .map(|j| 2 + j.spec.rounds + j.spec.rounds.div_ceil(j.spec.eval_every.max(1)))
        .sum();
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::new(expected);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} rounds  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    eprintln!(
        "simulating '{}': {} institutions, {} job(s){}, transport {}",
        s.name,
        s.institutions.count,
        s.jobs.len(),
        if s.psi.is_empty() {
            String::new()
        } else {
            format!(" and {} PSI job(s)", s.psi.len())
        },
        transport.name()
    );
    if !s.vertical_models.is_empty() {
        eprintln!(
            "then {} vertical model(s) on the PSI alignments: Paillier work, minutes at 2,048 bits \
             (`--log fedsilo_simulations=info` logs each as it starts and ends)",
            s.vertical_models.len()
        );
    }
    let mut progress = |r: &RoundSummary| {
        let total_ms: f64 = r.phase_ms.iter().map(|(_, ms)| ms).sum();
        let line = format!(
            "{} round {} ({}): {}/{} survived, {:.0} ms, {}",
            r.job_id,
            r.secagg_round,
            r.purpose,
            r.survivors.len(),
            r.participants.len(),
            total_ms,
            r.outcome
        );
        match &bar {
            Some(b) => {
                b.inc(1);
                b.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    };
    let (report, json, html) = run_scenario(&s, transport, out, &mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let failed: Vec<&fedsilo_simulations::report::JobOutcome> =
        report.jobs.iter().filter(|j| !j.finished).collect();
    for m in &report.models {
        // A model of a job that did not finish, or one never evaluated, has no result to show.
        let job_failed = failed
            .iter()
            .find(|j| m.name == j.name || m.name.starts_with(&format!("{}: ", j.name)));
        if let Some(j) = job_failed {
            outln!("{:<28} no result: job {}", m.name, j.state)?;
            continue;
        }
        if !m.final_metrics.auc.is_finite() {
            outln!("{:<28} no result: the model was never evaluated", m.name)?;
            continue;
        }
        let pooled = m
            .pooled_metrics
            .as_ref()
            .filter(|p| p.auc.is_finite())
            .map(|p| format!(" (pooled {:.3})", p.auc))
            .unwrap_or_default();
        outln!(
            "{:<28} AUC {:.3}{}  KS {:.3}  top-decile lift {:.2}",
            m.name,
            m.final_metrics.auc,
            pooled,
            m.final_metrics.ks,
            m.final_metrics.top_decile_lift
        )?;
    }
    for j in &report.psi {
        for x in &j.sessions {
            outln!(
                "{:<28} {} ∩ {}: {} ∩ {} = {} (true {}{}), {:.0} ms, {} + {} bytes relayed",
                j.name,
                x.active,
                x.passive,
                x.active_set_size,
                x.passive_set_size,
                x.intersection_size,
                x.true_intersection_size,
                if x.matches_truth {
                    ", exact"
                } else {
                    ", MISMATCH"
                },
                x.elapsed_ms,
                x.bytes_active_to_passive,
                x.bytes_passive_to_active
            )?;
        }
    }
    outln!(
        "{} rounds in {:.1} s; report: {} and {}",
        report.totals.rounds,
        report.totals.wall_seconds,
        html.display(),
        json.display()
    )?;
    let wrong: Vec<String> = report
        .psi
        .iter()
        .flat_map(|j| j.sessions.iter().map(move |x| (j, x)))
        .filter(|(_, x)| x.outcome == "ok" && !x.matches_truth)
        .map(|(j, x)| format!("'{}' {} ∩ {}", j.name, x.active, x.passive))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "PSI result differs from the true intersection: {}",
            wrong.join("; ")
        );
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|j| format!("'{}' ({})", j.name, j.state))
            .collect();
        bail!(
            "{} of {} job(s) did not finish: {}",
            failed.len(),
            report.jobs.len(),
            list.join("; ")
        );
    }
    Ok(())
}

pub(crate) fn keygen(
    out: &Path,
    institutions: &[String],
    hosts: &[String],
    listen: &str,
    key_type: fedsilo_proto::pki::KeyType,
    force: bool,
    ops_listen: Option<std::net::SocketAddr>,
) -> Result<()> {
    use rand::{RngCore, SeedableRng};
    let configs = [
        "coordinator.toml".to_string(),
        "operator.toml".to_string(),
        "dashboard.token".to_string(),
    ]
    .into_iter()
    .chain(institutions.iter().map(|n| format!("participant-{n}.toml")))
    .map(|f| out.join(f));
    if !force {
        let mut files = fedsilo_proto::pki::federation_files(out, institutions);
        files.extend(configs);
        if let Some(f) = files.iter().find(|f| f.symlink_metadata().is_ok()) {
            bail!(
                "{} already holds a federation ({} exists): keygen would replace its CA, every key and the configs. \
                 Pass --force to overwrite it, or choose another --out",
                out.display(),
                f.display()
            );
        }
    }
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let options = fedsilo_proto::pki::FederationOptions {
        key_type,
        overwrite: force,
    };
    fedsilo_proto::pki::generate_federation_with(out, institutions, hosts, options, &mut rng)
        .with_context(|| format!("generating the federation in {}", out.display()))?;
    let mut token = [0u8; 32];
    rng.fill_bytes(&mut token);
    let token = hex::encode(token);
    write_private(&out.join("dashboard.token"), &format!("{token}\n"))?;
    let ops = match ops_listen {
        Some(addr) => format!(
            "\n# The operations listener: dashboard at https://<host>:{port}/#token=<dashboard.token>,\n# /metrics (operator certificate or Authorization: Bearer <token>), /healthz.\n[ops]\nlisten = \"{addr}\"\ntoken_file = \"dashboard.token\"\n",
            port = addr.port()
        ),
        None => "\n# The operations listener (dashboard, /metrics, /healthz): uncomment to serve it.\n# [ops]\n# listen = \"127.0.0.1:9443\"\n# token_file = \"dashboard.token\"\n".to_string(),
    };
    let coord = format!(
        "listen = \"{listen}\"\nstate_dir = \"coordinator-state\"\nroster = \"roster.toml\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"coordinator.pem\"\nkey = \"coordinator.key\"\n{ops}"
    );
    std::fs::write(out.join("coordinator.toml"), coord)?;
    let url = format!(
        "https://localhost:{}",
        listen.rsplit(':').next().unwrap_or("50051")
    );
    let op = format!(
        "coordinator = \"{url}\"\ntls_domain = \"localhost\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"operator.pem\"\nkey = \"operator.key\"\n"
    );
    std::fs::write(out.join("operator.toml"), op)?;
    for name in institutions {
        let p = format!(
            "name = \"{name}\"\ncoordinator = \"{url}\"\ntls_domain = \"localhost\"\nidentity = \"{name}.identity\"\nroster = \"roster.toml\"\nholdout_fraction = 0.2\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\n# Local data: edit the paths (relative to this file). Instead of csv: parquet = \"credit.parquet\"\n# or source = {{ postgres = \"postgresql://user@host/db\", query = \"select * from customers\" }}.\n[[datasets]]\nname = \"credit\"\ncsv = \"credit.csv\"\nschema = \"credit_data.schema.toml\"\n"
        );
        std::fs::write(out.join(format!("participant-{name}.toml")), p)?;
    }
    outln!(
        "federation for {} institution(s) written to {} ({key_type} certificates): ca.pem, coordinator.*, operator.*, <name>.pem/.key/.identity, roster.toml and example configs\ndashboard token (in {}, for browsers and scrapers): {token}\nnext: fedsilo coordinator init --config {}",
        institutions.len(),
        out.display(),
        out.join("dashboard.token").display(),
        out.join("coordinator.toml").display()
    )
}

/// Writes a secret readable by its owner only (on Unix).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(crate) fn score(
    model: &Path,
    data: &Path,
    schema: &Path,
    out: &Path,
    top: Option<usize>,
    top_fraction: Option<f64>,
    format: Option<ScoreFormat>,
) -> Result<()> {
    use fedsilo_participant::score::{score_file, Keep, OutputFormat, ScoreOptions};
    let artifact = read_model(model)?;
    let schema = Schema::from_toml_file(schema)?;
    let keep = match (top, top_fraction) {
        (Some(n), _) => Keep::Top(n),
        (None, Some(f)) => Keep::Fraction(f),
        (None, None) => Keep::All,
    };
    let mut opts = ScoreOptions::new(keep, schema.n_feature_columns());
    opts.format = format.map(|f| match f {
        ScoreFormat::Csv => OutputFormat::Csv,
        ScoreFormat::Parquet => OutputFormat::Parquet,
    });
    let written = score_file(&artifact.model, data, &schema, out, &opts)
        .with_context(|| format!("scoring {}", data.display()))?;
    for w in written {
        if w.rows == w.scored {
            outln!(
                "{}: {} customers ranked in {}",
                w.label,
                w.rows,
                w.path.display()
            )?;
        } else {
            outln!(
                "{}: top {} of {} customers ranked in {}",
                w.label,
                w.rows,
                w.scored,
                w.path.display()
            )?;
        }
    }
    Ok(())
}

pub(crate) fn model_export(
    model: &Path,
    format: ExportFormat,
    schema_path: &Path,
    table: Option<&str>,
    out: Option<&Path>,
) -> Result<()> {
    use fedsilo_participant::export::{pmml, sql};
    let artifact = read_model(model)?;
    let schema = Schema::from_toml_file(schema_path)?;
    let text = match format {
        ExportFormat::Sql => sql::export(
            &artifact.model,
            &schema,
            &sql::SqlOptions {
                table: table.unwrap_or("customers").to_string(),
                id_column: None,
            },
        ),
        ExportFormat::Pmml => pmml::export(&artifact.model, &schema),
    }
    .with_context(|| format!("exporting {}", model.display()))?;
    match out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{} written to {}",
                if format == ExportFormat::Sql {
                    "SQL query"
                } else {
                    "PMML 4.4 document"
                },
                path.display()
            );
            Ok(())
        }
        None => print_all(&text),
    }
}

/// An exported model file (`fedsilo job model` or a simulation), errors naming the file.
pub(crate) fn read_model(path: &Path) -> Result<ModelArtifact> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ModelArtifact::from_json(&text).with_context(|| format!("model {}", path.display()))
}

pub(crate) fn model_show(model: &Path, csv: Option<&Path>) -> Result<()> {
    use std::fmt::Write as _;
    let a = read_model(model)?;
    let mut o = String::new();
    let _ = writeln!(o, "model {} ({})", model.display(), a.format);
    let _ = writeln!(
        o,
        "job {}  task {:?}  kind {}  rounds {}  {}",
        a.job_id,
        a.task,
        a.model_kind,
        a.rounds,
        if a.complete {
            "complete"
        } else {
            "INCOMPLETE (snapshot)"
        }
    );
    let _ = writeln!(o, "round sha256 {}", a.round_sha256);
    let _ = writeln!(o, "model sha256 {}", a.model_sha256);
    let _ = writeln!(
        o,
        "features ({}): {}",
        a.model.features.len(),
        a.model.features.join(", ")
    );
    for (label, m) in a.model.labels.iter().zip(&a.metrics) {
        let _ = writeln!(
            o,
            "{label}: hold-out AUC {:.4}  KS {:.4}  log-loss {:.4}  top-decile lift {:.2}",
            m.auc, m.ks, m.log_loss, m.top_decile_lift
        );
    }
    if let Some(p) = &a.privacy {
        let eps = |e: Option<f64>| match e {
            Some(e) => format!("ε = {e:.3}"),
            None => "no guarantee".to_string(),
        };
        let _ = writeln!(
            o,
            "differential privacy ({}-level, δ = {:e}, noise multiplier {:.3}, clip {}{}, {} noisy rounds): one customer's record: {}; one institution: {}",
            p.level.name(),
            p.delta,
            p.noise_multiplier,
            p.clip,
            p.sampling_rate
                .map(|q| format!(", sampling rate {q}"))
                .unwrap_or_default(),
            p.dp_rounds,
            eps(p.epsilon_record),
            eps(p.epsilon_institution)
        );
    }
    match &a.model.params {
        fedsilo_task::ModelParams::Scorecard { card } => o.push_str(&card.to_table()),
        _ => {
            for (label, coefs) in a.model.labels.iter().zip(&a.coefficients) {
                let _ = writeln!(o, "coefficients for {label} (standardised features):");
                for (name, c) in coefs {
                    let _ = writeln!(o, "  {name:<32} {c:>10.5}");
                }
            }
        }
    }
    if let Some(path) = csv {
        if a.scorecard.is_empty() {
            bail!(
                "{}: --csv writes a scorecard table, but this is a {} model",
                model.display(),
                a.model_kind
            );
        }
        let mut out = String::from("feature,bin,woe,points\n");
        for r in &a.scorecard {
            out.push_str(&format!(
                "{},\"{}\",{:.6},{:.1}\n",
                r.feature, r.bin, r.woe, r.points
            ));
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(o, "scorecard table written to {}", path.display());
    }
    print_all(&o)
}
