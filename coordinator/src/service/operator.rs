//! The `Operator` service: launch, inspect, cancel and resume jobs; fetch models.

use fedsilo_proto::pb;
use fedsilo_proto::pb::operator_server::Operator;
use fedsilo_task::JobSpec;
use tonic::{Request, Response, Status};

use super::actor::Command;
use super::{check_job_id, engine_status, status_pb, Handle, RpcResult, MAX_DECLINE_REASON_BYTES};

#[tonic::async_trait]
impl Operator for Handle {
    async fn launch_job(&self, req: Request<pb::LaunchJobRequest>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        // Any arm of the request: the typed `spec`, `spec_json` or a PSI job.
        let launched = fedsilo_proto::convert::launch_request(req.into_inner())
            .map_err(|e| Status::invalid_argument(fedsilo_config::display_chain(&e)))?;
        let spec: JobSpec = match launched {
            fedsilo_proto::convert::Launched::Training(s) => *s,
            fedsilo_proto::convert::Launched::Psi(spec) => {
                check_job_id("psi.job_id", &spec.job_id)?;
                spec.validate()
                    .map_err(|e| Status::invalid_argument(format!("psi: {e}")))?;
                tracing::info!(operator = %who, dataset = %spec.dataset, "launching PSI job");
                let status = self
                    .ask(|reply| Command::LaunchPsi { spec, reply })
                    .await?
                    .map_err(engine_status)?;
                return Ok(Response::new(status_pb(status)));
            }
            fedsilo_proto::convert::Launched::Vertical(spec) => {
                check_job_id("vertical.job_id", &spec.job_id)?;
                spec.validate()
                    .map_err(|e| Status::invalid_argument(format!("vertical: {e}")))?;
                tracing::info!(operator = %who, kind = spec.kind.name(), psi = %spec.psi_job, "launching vertical job");
                let status = self
                    .ask(|reply| Command::LaunchVertical { spec, reply })
                    .await?
                    .map_err(engine_status)?;
                return Ok(Response::new(status_pb(status)));
            }
        };
        spec.validate()
            .map_err(|e| Status::invalid_argument(fedsilo_config::display_chain(&e)))?;
        tracing::info!(operator = %who, dataset = %spec.dataset, "launching job");
        let status = self
            .ask(|reply| Command::Launch {
                spec: Box::new(spec),
                reply,
            })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> RpcResult<pb::JobStatus> {
        self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        let mut list = self
            .ask(|reply| Command::Status {
                job: Some(job.clone()),
                reply,
            })
            .await?;
        list.pop()
            .map(|s| Response::new(status_pb(s)))
            .ok_or_else(|| Status::not_found(format!("unknown job '{job}'")))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> RpcResult<pb::JobList> {
        self.operator(&req)?;
        let list = self
            .ask(|reply| Command::Status { job: None, reply })
            .await?;
        Ok(Response::new(pb::JobList {
            jobs: list.into_iter().map(status_pb).collect(),
        }))
    }

    async fn get_model(&self, req: Request<pb::JobRef>) -> RpcResult<pb::ModelReply> {
        self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        let model = self
            .ask(|reply| Command::Model {
                job: job.clone(),
                reply,
            })
            .await?
            .ok_or_else(|| Status::not_found(format!("job '{job}' has no model yet")))?;
        Ok(Response::new(pb::ModelReply { model_json: model }))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        let req = req.into_inner();
        check_job_id("job_id", &req.job_id)?;
        let mut reason = format!("cancelled by {who}");
        let note = req.reason.trim();
        if !note.is_empty() {
            let mut cut = note.len().min(MAX_DECLINE_REASON_BYTES);
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.push_str(": ");
            reason.push_str(&note[..cut]);
        }
        let status = self
            .ask(|reply| Command::Cancel {
                job: req.job_id,
                reason,
                reply,
            })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }

    async fn resume_job(&self, req: Request<pb::JobRef>) -> RpcResult<pb::JobStatus> {
        let who = self.operator(&req)?;
        let job = req.into_inner().job_id;
        check_job_id("job_id", &job)?;
        tracing::info!(operator = %who, job = %job, "resuming job");
        let status = self
            .ask(|reply| Command::Resume { job, reply })
            .await?
            .map_err(engine_status)?;
        Ok(Response::new(status_pb(status)))
    }
}
