"""Helpers shared by the Slurm and PBS backend unit tests."""

from jupyterhub_dask_gateway.backends.jobqueue import JobRequest


def job_request(config_class, role="worker", **config):
    """A JobRequest for cluster ``c1`` of alice, staged in /srv/staging/c1."""
    cfg = config_class(**config).to_dict()
    return JobRequest(
        role=role,
        job_name=f"dask-{role}-c1",
        username="alice",
        staging_dir="/srv/staging/c1",
        log_path=f"/srv/staging/c1/{role}.log",
        cores=cfg[f"{role}_cores"],
        memory=cfg[f"{role}_memory"],
        config=cfg,
    )
