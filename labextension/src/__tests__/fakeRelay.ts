/**
 * A stand-in for the server extension's relay at the transport level: a `fetch`
 * that answers `<base>dask-gateway/...` like the server extension (`jupyterhub_dask_gateway.server_extension`) does, with
 * state tests can inspect and failures they can switch on. Everything above the
 * transport (requestAPI, GatewayAPI, the model, the components) runs for real.
 */

import { ServerConnection } from '@jupyterlab/services';

import {
  IClusterEvent,
  IClusterInfo,
  IGatewayConfig,
  IOptionField
} from '../tokens';

export const BASE_URL = 'http://localhost:8888/user/alice/';

export interface IRecordedCall {
  method: string;
  path: string;
  body: any;
}

export function cluster(
  name: string,
  extra: Partial<IClusterInfo> = {}
): IClusterInfo {
  return {
    name,
    owner: 'alice',
    status: 'RUNNING',
    start_time: 1_700_000_000_000,
    stop_time: null,
    age: 125,
    options: {},
    dashboard_url: `/services/dask-gateway/clusters/${name}/status`,
    workers: 2,
    target_workers: 2,
    threads: 4,
    cores: 2,
    memory: 2 * 2 ** 30,
    adaptive: null,
    shared_groups: [],
    reason: '',
    ...extra
  };
}

export const OPTIONS: IOptionField[] = [
  {
    field: 'worker_cores',
    label: 'Worker cores',
    default: 1,
    spec: { type: 'int', min: 1, max: 4 }
  },
  {
    field: 'worker_memory',
    label: 'Worker memory (GiB)',
    default: 2,
    spec: { type: 'float', min: 0.5, max: 8 }
  },
  {
    field: 'image',
    label: 'Image',
    default: 'daskgateway/dask',
    spec: { type: 'string' }
  },
  { field: 'gpu', label: 'GPU', default: false, spec: { type: 'bool' } },
  {
    field: 'size',
    label: 'Size',
    default: 'small',
    spec: { type: 'select', options: ['small', 'large'] }
  },
  {
    field: 'environment',
    label: 'Environment',
    default: { A: '1' },
    spec: { type: 'mapping' }
  }
];

export class FakeRelay {
  clusters: IClusterInfo[] = [];
  /** Each cluster's history. */
  events: Record<string, IClusterEvent[]> = {};
  /** Log text by cluster name, then process. */
  logs: Record<string, Record<string, string>> = {};
  options: IOptionField[] = OPTIONS;
  calls: IRecordedCall[] = [];
  config: IGatewayConfig = {
    configured: true,
    problem: null,
    address: 'http://127.0.0.1:8000/services/dask-gateway',
    public_address: '/services/dask-gateway',
    proxy_address: null,
    auth_type: 'jupyterhub',
    under_hub: true,
    user: 'alice',
    admin: false,
    version: '0.1.0'
  };
  /** When set, every call except config answers with this. */
  failure: { status: number; body: any } | null = null;
  /** When true, fetch rejects like a dead server. */
  down = false;
  /** When true, the relay route does not exist (extension not installed). */
  missing = false;

  settings(): ServerConnection.ISettings {
    return ServerConnection.makeSettings({
      baseUrl: BASE_URL,
      fetch: (request: RequestInfo) => this.fetch(request as Request)
    });
  }

  paths(): string[] {
    return this.calls.map(c => `${c.method} ${c.path}`);
  }

  async fetch(request: Request): Promise<Response> {
    if (this.down) {
      throw new TypeError('Failed to fetch');
    }
    const url = new URL(request.url);
    // ServerConnection appends a cache-busting timestamp to GETs; drop it
    const search = url.search.replace(/[?&]\d{10,}$/, '');
    const path = url.pathname.replace('/user/alice/dask-gateway/', '') + search;
    const text = await request.text();
    const body = text ? JSON.parse(text) : undefined;
    this.calls.push({ method: request.method, path, body });
    if (this.missing) {
      return new Response('<html>404: Not Found</html>', {
        status: 404,
        statusText: 'Not Found'
      });
    }
    if (this.failure && !path.startsWith('config')) {
      return json(this.failure.status, this.failure.body);
    }
    return this.route(request.method, path, body);
  }

  private route(method: string, path: string, body: any): Response {
    const match =
      /^clusters\/([^/?]+)(\/(scale|adapt|events|logs))?(\?(.*))?$/.exec(path);
    if (path.startsWith('config')) {
      return json(200, this.config);
    }
    if (method === 'GET' && path === 'options') {
      return json(200, { cluster_options: this.options });
    }
    if (method === 'GET' && path.startsWith('clusters') && !match) {
      // like the gateway: everyone's for admins only; a status filter
      const query = new URLSearchParams(path.split('?')[1] ?? '');
      const all = query.get('all') === '1';
      if (all && !this.config.admin) {
        return json(403, {
          error: "Only admins may list every user's clusters"
        });
      }
      const statuses = query.get('status')?.split(',');
      return json(200, {
        clusters: this.clusters.filter(
          c =>
            (all || c.owner === null || c.owner === this.config.user) &&
            (!statuses || statuses.includes(c.status))
        )
      });
    }
    if (method === 'POST' && path === 'clusters') {
      const name = `new${this.clusters.length + 1}`;
      this.clusters.push(
        cluster(name, {
          status: 'PENDING',
          workers: 0,
          target_workers: 0,
          options: body.cluster_options
        })
      );
      return json(201, { name });
    }
    if (match) {
      const name = decodeURIComponent(match[1]);
      const found = this.clusters.find(c => c.name === name);
      if (!found) {
        return json(404, { error: `Cluster ${name} not found` });
      }
      if (method === 'DELETE') {
        found.status = 'STOPPING';
        return new Response(null, { status: 204 });
      }
      if (match[3] === 'scale') {
        found.target_workers = body.count;
        found.workers = body.count;
        return json(200, { ok: true, msg: null });
      }
      if (match[3] === 'events') {
        return json(200, { events: this.events[name] ?? [] });
      }
      if (match[3] === 'logs') {
        const query = new URLSearchParams(match[5] ?? '');
        const process = query.get('process') ?? 'scheduler';
        const tail = Number(query.get('tail') ?? '100');
        const logs = this.logs[name] ?? {};
        if (!(process in logs)) {
          return json(404, {
            error: `Cluster ${name} has no process '${process}'`
          });
        }
        return json(200, {
          process,
          text: logs[process].split('\n').slice(-tail).join('\n'),
          processes: Object.keys(logs)
        });
      }
      if (match[3] === 'adapt') {
        found.adaptive = { minimum: body.minimum, maximum: body.maximum };
        return json(200, { ok: true, msg: null });
      }
      return json(200, found);
    }
    return json(404, { error: `no route ${method} ${path}` });
  }
}

function json(status: number, data: unknown): Response {
  return new Response(JSON.stringify(data), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}
