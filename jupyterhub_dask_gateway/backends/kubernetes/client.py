"""A thin layer over kubernetes_asyncio: connect, and the calls the backend makes.

Everything comes back as plain JSON dicts (``_preload_content=False``): the
backend reads a handful of fields, and skipping the model classes keeps a busy
watch cheap. kubernetes_asyncio is worth its weight for what is hard to get
right alone: kubeconfig loading with every auth method (tokens, client
certificates, exec plugins such as ``aws eks get-token``, OIDC), in-cluster
service-account tokens that rotate, and TLS to the API server.
"""

from __future__ import annotations

import json
import os

from ...errors import BackendError

IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POD_EVENTS = "involvedObject.kind=Pod"  # the field selector of the events the backend reads


class KubeError(BackendError):
    """An error answer of the Kubernetes API (``status`` is its HTTP status, 0 if none)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def in_cluster() -> bool:
    """In a pod with a service-account token (whatever the environment says: a
    process the Hub starts gets little of the pod's environment)."""
    return os.path.exists(IN_CLUSTER_NAMESPACE_FILE)


async def connect(kubeconfig: str = "") -> tuple[object, str]:
    """A client ``Configuration`` and the namespace the credentials default to.

    In a pod (and no explicit ``kubeconfig``): the pod's service account. Else the
    kubeconfig file (``kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``).
    """
    from kubernetes_asyncio import client, config

    if not kubeconfig and in_cluster():
        # the API server's Service, by its DNS name, when the variables are missing
        os.environ.setdefault("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        os.environ.setdefault("KUBERNETES_SERVICE_PORT", "443")
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        with open(IN_CLUSTER_NAMESPACE_FILE) as f:
            namespace = f.read().strip()
        return configuration, namespace or "default"
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = os.path.expanduser(path or "~/.kube/config")
    if not os.path.exists(path):
        raise BackendError(
            f"No Kubernetes credentials: not running in a pod, and no kubeconfig at {path} "
            "(set c.KubeBackend.kubeconfig)"
        )
    configuration = client.Configuration()
    try:
        await config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
        _, active = config.list_kube_config_contexts(path)
    except Exception as exc:  # the loader raises ConfigException, ValueError, OSError...
        raise BackendError(f"Cannot load the kubeconfig {path}: {exc}") from None
    namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
    return configuration, namespace


def _message(status: int, body: bytes) -> str:
    try:
        data = json.loads(body)
        text = data.get("message") or data.get("reason") or ""
    except (ValueError, AttributeError):
        text = body[:300].decode("utf-8", "replace")
    return f"Kubernetes API answered {status}: {text}".rstrip(": ")


class KubeAPI:
    """The calls of the backend, on one ``ApiClient`` (one connection pool)."""

    def __init__(self, configuration, request_timeout: float = 30):
        import copy

        from kubernetes_asyncio import client

        # Watches hold a connection each for minutes (two per namespace); on a pool of
        # their own, however many namespaces, they never starve the calls (pool of 100).
        watch_configuration = copy.copy(configuration)
        watch_configuration.connection_pool_maxsize = 0  # aiohttp: no limit
        self.api_client = client.ApiClient(configuration)
        self.watch_client = client.ApiClient(watch_configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.authz = client.AuthorizationV1Api(self.api_client)
        self._watch_core = client.CoreV1Api(self.watch_client)
        self.timeout = request_timeout

    async def close(self) -> None:
        await self.api_client.close()
        await self.watch_client.close()

    async def _request(self, method, *args, **kwargs):
        """The raw response of one request; errors of any kind as ``KubeError``."""
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await method(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            raise KubeError(exc.status or 0, _message(exc.status or 0, exc.body or b"")) from None
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            # ClientError: a dropped keep-alive connection, a truncated answer...
            raise KubeError(0, f"Kubernetes API unreachable: {exc or type(exc).__name__}") from None

    async def _call(self, method, *args, **kwargs) -> dict:
        """One request; its JSON answer, or ``KubeError``."""
        import aiohttp

        kwargs.setdefault("_request_timeout", self.timeout)
        resp = await self._request(method, *args, **kwargs)
        try:
            body = await resp.read()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise KubeError(0, f"Kubernetes API answer cut short: {exc}") from None
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise KubeError(resp.status, _message(resp.status, body))
        try:
            return json.loads(body) if body else {}
        except ValueError:
            raise KubeError(resp.status, "Kubernetes API answered something not JSON") from None

    # --- pods and secrets -----------------------------------------------------------------
    async def list_pods(self, namespace: str, selector: str) -> dict:
        return await self._call(self.core.list_namespaced_pod, namespace, label_selector=selector)

    async def read_pod(self, namespace: str, name: str) -> dict:
        return await self._call(self.core.read_namespaced_pod, name, namespace)

    async def list_pod_events(self, namespace: str) -> dict:
        return await self._call(
            self.core.list_namespaced_event, namespace, field_selector=POD_EVENTS
        )

    async def create_pod(self, namespace: str, body: dict) -> dict:
        return await self._call(self.core.create_namespaced_pod, namespace, body)

    async def delete_pod(self, namespace: str, name: str, grace: int | None = None) -> None:
        """Delete a pod; one that is gone already is no error."""
        kwargs = {} if grace is None else {"grace_period_seconds": grace}
        try:
            await self._call(self.core.delete_namespaced_pod, name, namespace, **kwargs)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def delete_pods(self, namespace: str, selector: str) -> None:
        await self._call(
            self.core.delete_collection_namespaced_pod, namespace, label_selector=selector
        )

    async def create_secret(self, namespace: str, body: dict) -> dict:
        return await self._call(self.core.create_namespaced_secret, namespace, body)

    async def read_secret(self, namespace: str, name: str) -> dict:
        return await self._call(self.core.read_namespaced_secret, name, namespace)

    async def list_secrets(self, namespace: str, selector: str) -> dict:
        return await self._call(
            self.core.list_namespaced_secret, namespace, label_selector=selector
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                self.core.delete_namespaced_secret,
                name,
                namespace,
                propagation_policy="Background",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def pod_log(self, namespace: str, name: str, lines: int, limit_bytes: int) -> str:
        import aiohttp

        resp = await self._request(
            self.core.read_namespaced_pod_log,
            name,
            namespace,
            tail_lines=lines,
            limit_bytes=limit_bytes,
            _request_timeout=self.timeout,
        )
        try:
            body = await resp.content.read(limit_bytes)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise KubeError(0, f"Kubernetes API answer cut short: {exc}") from None
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            raise KubeError(resp.status, _message(resp.status, body))
        return body.decode("utf-8", "replace")

    # --- watches --------------------------------------------------------------------------
    def watch_pods(self, namespace: str, selector: str, resource_version: str, timeout: int):
        return self._watch(
            self._watch_core.list_namespaced_pod,
            namespace,
            resource_version,
            timeout,
            label_selector=selector,
        )

    def watch_pod_events(self, namespace: str, resource_version: str, timeout: int):
        return self._watch(
            self._watch_core.list_namespaced_event,
            namespace,
            resource_version,
            timeout,
            field_selector=POD_EVENTS,
        )

    async def _watch(self, method, namespace: str, resource_version: str, timeout: int, **kw):
        """The events of one watch request, decoded: ``{"type", "object"}`` dicts.

        Ends when the server closes the watch (after ``timeout`` seconds). An expired
        resource version arrives as an ``ERROR`` event with code 410, as Kubernetes sends
        it. Runs on the watch pool (see ``__init__``).
        """
        import aiohttp

        resp = await self._request(
            method,
            namespace,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=timeout + 30,
            **kw,
        )
        try:
            if not 200 <= resp.status <= 299:
                raise KubeError(resp.status, _message(resp.status, await resp.read()))
            while True:
                try:
                    line = await resp.content.readline()
                except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
                    raise KubeError(0, f"Kubernetes watch cut short: {exc}") from None
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()

    # --- permissions --------------------------------------------------------------------
    async def can(self, namespace: str, verb: str, resource: str) -> bool:
        """A SelfSubjectAccessReview: may these credentials ``verb`` ``resource`` here?"""
        group, _, sub = resource.partition("/")
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "resource": group,
                    **({"subresource": sub} if sub else {}),
                }
            },
        }
        answer = await self._call(self.authz.create_self_subject_access_review, body)
        return bool((answer.get("status") or {}).get("allowed"))
