"""The proxies in front of Dask clusters.

- :mod:`.tcp` is the public TCP proxy (its own process, ``python -m
  jupyterhub_dask_gateway.proxy``): TLS routed by SNI to schedulers, anything
  else to the gateway's HTTP API.
- :mod:`.sni` is the pure ClientHello parser the TCP proxy routes with.
- :mod:`.stats` holds the TCP proxy's counters and the header that carries them to
  the gateway (its metrics).
- :mod:`.dashboard` is the tornado handler the gateway mounts to reverse-proxy
  scheduler dashboards (HTTP and websockets).

Importing this package stays cheap: the dashboard handler (and its tornado web
machinery) is imported only by those who ask for it.
"""

from .sni import parse_sni
from .tcp import TCPProxy, run_proxy

__all__ = ["TCPProxy", "parse_sni", "run_proxy"]
