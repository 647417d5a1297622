"""Helpers shared by the Slurm and PBS backend unit tests."""

from jupyterhub_dask_gateway.backends import load_backend_class
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


def check_registration(short_name, backend_class, config_class):
    """The short name loads the backend, which uses its own ClusterConfig; every config
    trait of both (inherited ones too) has help."""
    assert load_backend_class(short_name) is backend_class
    assert backend_class().cluster_config_class is config_class
    for cls in (backend_class, config_class):
        for name, trait in cls.class_traits(config=True).items():
            assert trait.help and trait.help.strip(), f"{cls.__name__}.{name} has no help"
