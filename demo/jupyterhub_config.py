"""Demo Hub: dummy passwords, each user's server and clusters as their own account.

Run by ``scripts/demo.sh`` as root, from the state directory (the working directory).
"""

import os
import sys

import jupyterhub_dask_gateway

c = get_config()  # noqa: F821  (provided by traitlets when it runs this file)

c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "demo"
c.Authenticator.allowed_users = {"alice", "bob", "admin"}
c.Authenticator.admin_users = {"admin"}
# Each single-user server runs as the user's own account (alice, bob, admin exist on the
# machine: demo.sh creates them), from this environment, which every account can execute.
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.JupyterHub.load_groups = {"team": {"users": ["alice", "bob"]}}

# The gateway: one call, plus gateway settings in the same file.
jupyterhub_dask_gateway.configure_jupyterhub(
    c,
    url="http://127.0.0.1:8765",
    proxy_address="127.0.0.1:8786",
    state_dir=os.path.join(os.getcwd(), "gateway"),
    max_clusters_per_user=3,
)
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.scheduler_memory = "1 G"
c.ClusterConfig.idle_timeout = 3600

from jupyterhub_dask_gateway.options import Float, Integer, Options  # noqa: E402

c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2, label="Worker cores"),
    Float("worker_memory", 1, min=0.5, max=4, label="Worker memory (GiB)"),
    handler=lambda o: {
        "worker_cores": o.worker_cores,
        "worker_memory": int(o.worker_memory * 2**30),
    },
)
