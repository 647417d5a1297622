"""A spawner subclass with its own ``environment`` section, as KubeSpawner is (the tests
do not install kubespawner and its Kubernetes client for one traitlets behaviour)."""

from jupyterhub.spawner import LocalProcessSpawner


class KubeSpawner(LocalProcessSpawner):
    pass
