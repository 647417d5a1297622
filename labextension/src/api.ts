/**
 * The panel's transport: one `requestAPI` to the server extension's relay under
 * `<baseUrl>dask-gateway/`, raising a typed `GatewayAPIError`, and the typed calls
 * built on it. It knows URLs and JSON, not polling or view state (see `model.ts`).
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  IClusterEvent,
  IClusterInfo,
  IClusterLogs,
  IGatewayConfig,
  IOptionField,
  IScaleReply
} from './tokens';

/**
 * Why a relay call failed.
 *
 * - `network`: the Jupyter server did not answer at all;
 * - `not-installed`: the server has no relay (the server extension is not enabled);
 * - `server`: the relay answered with an error; `message` is its explanation
 *   (gateway unreachable, not configured, forbidden, invalid options, ...).
 */
export type ErrorKind = 'network' | 'not-installed' | 'server';

export class GatewayAPIError extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'GatewayAPIError';
  }
}

/**
 * Call the relay and decode its JSON reply.
 *
 * @param endpoint - path under `dask-gateway/`, e.g. `clusters` or `clusters/x/scale`
 * @param init - fetch options (method, body)
 * @param settings - server connection settings (the app's, so tests can swap fetch)
 * @returns the decoded JSON, or `undefined` for an empty reply (204)
 * @throws {GatewayAPIError} on any failure
 */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'dask-gateway', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new GatewayAPIError('network', 0, String(error));
  }
  const text = await response.text();
  let data: any = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (response.ok) {
    return data as T;
  }
  // The relay always explains itself in {"error": ...}; a 404 without that is the
  // server's own "no such page", i.e. the extension is not there.
  const message: string | undefined =
    data && typeof data.error === 'string' ? data.error : undefined;
  if (response.status === 404 && message === undefined) {
    throw new GatewayAPIError('not-installed', 404, response.statusText);
  }
  const fallback =
    data && typeof data.message === 'string'
      ? data.message
      : response.statusText || `HTTP ${response.status}`;
  throw new GatewayAPIError('server', response.status, message ?? fallback);
}

function jsonBody(method: string, body: unknown): RequestInit {
  return { method, body: JSON.stringify(body) };
}

function quote(name: string): string {
  return encodeURIComponent(name);
}

/** The relay's operations, bound to one server's connection settings. */
export class GatewayAPI {
  constructor(
    readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  config(check = false): Promise<IGatewayConfig> {
    return this._call(check ? 'config?check=1' : 'config');
  }

  /**
   * The clusters the user may see.
   *
   * @param all - an admin's view of every user's clusters
   * @param statuses - which statuses to list (default: the gateway's, the active ones)
   */
  async listClusters(
    all = false,
    statuses?: ReadonlyArray<string>
  ): Promise<IClusterInfo[]> {
    const query = new URLSearchParams();
    if (all) {
      query.set('all', '1');
    }
    if (statuses?.length) {
      query.set('status', statuses.join(','));
    }
    const search = query.toString();
    const reply = await this._call<{ clusters: IClusterInfo[] }>(
      search ? `clusters?${search}` : 'clusters'
    );
    return reply.clusters;
  }

  /** The cluster's history, oldest first (its owner and admins only). */
  async events(name: string): Promise<IClusterEvent[]> {
    const reply = await this._call<{ events: IClusterEvent[] }>(
      `clusters/${quote(name)}/events`
    );
    return reply.events;
  }

  /** The last `tail` lines of the scheduler's (or a worker's) log. */
  logs(name: string, process = 'scheduler', tail = 100): Promise<IClusterLogs> {
    const query = new URLSearchParams({ process, tail: String(tail) });
    return this._call(`clusters/${quote(name)}/logs?${query}`);
  }

  getCluster(name: string): Promise<IClusterInfo> {
    return this._call(`clusters/${quote(name)}`);
  }

  async options(): Promise<IOptionField[]> {
    const reply = await this._call<{ cluster_options: IOptionField[] }>(
      'options'
    );
    return reply.cluster_options;
  }

  async createCluster(options: Record<string, unknown>): Promise<string> {
    const reply = await this._call<{ name: string }>(
      'clusters',
      jsonBody('POST', { cluster_options: options })
    );
    return reply.name;
  }

  scale(name: string, count: number): Promise<IScaleReply> {
    return this._call(
      `clusters/${quote(name)}/scale`,
      jsonBody('POST', { count })
    );
  }

  adapt(
    name: string,
    minimum: number | null,
    maximum: number | null
  ): Promise<IScaleReply> {
    return this._call(
      `clusters/${quote(name)}/adapt`,
      jsonBody('POST', { minimum, maximum, active: true })
    );
  }

  async stop(name: string): Promise<void> {
    await this._call(`clusters/${quote(name)}`, { method: 'DELETE' });
  }

  private _call<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
    return requestAPI<T>(endpoint, init, this.serverSettings);
  }
}
