/**
 * Shared names and shapes of the Dask Gateway panel: the relay's JSON (what
 * the server extension (`jupyterhub_dask_gateway.server_extension`) sends), command ids, and the token other extensions can
 * require to read the cluster list. No behaviour lives here.
 */

import { ISignal } from '@lumino/signaling';
import { Token } from '@lumino/coreutils';

/** The plugin id, which is also the settings id. */
export const PLUGIN_ID = 'jupyterhub-dask-gateway:plugin';

/** Translation domain (the Python distribution's name, as language packs expect). */
export const TRANSLATION_DOMAIN = 'jupyterhub_dask_gateway';

/** Public status names of the gateway (docs/protocol.md, "Status names"). */
export type ClusterStatus =
  'PENDING' | 'RUNNING' | 'STOPPING' | 'STOPPED' | 'FAILED';

/** One cluster as the relay sends it; counts are null when the gateway does not report them. */
export interface IClusterInfo {
  name: string;
  owner: string | null;
  status: ClusterStatus;
  /** Milliseconds since the epoch. */
  start_time: number | null;
  stop_time: number | null;
  /** Seconds since start, measured by the Jupyter server. */
  age: number | null;
  options: Record<string, unknown>;
  /** Public URL of the dashboard (through the Hub's proxy), or null until it runs. */
  dashboard_url: string | null;
  workers: number | null;
  target_workers: number | null;
  threads: number | null;
  cores: number | null;
  /** Bytes. */
  memory: number | null;
  adaptive: { minimum: number | null; maximum: number | null } | null;
  shared_groups: string[];
  reason: string;
}

/** The spec of one cluster option (docs/protocol.md, "The cluster options spec"). */
export type OptionSpec =
  | { type: 'int' | 'float'; min?: number | null; max?: number | null }
  | { type: 'string' }
  | { type: 'bool' }
  | { type: 'select'; options: string[] }
  | { type: 'mapping' };

export interface IOptionField {
  field: string;
  label: string | null;
  default: unknown;
  spec: OptionSpec;
}

/** `GET dask-gateway/config`: what the panel needs before its first list. */
export interface IGatewayConfig {
  configured: boolean;
  problem: string | null;
  address: string | null;
  public_address: string | null;
  proxy_address: string | null;
  auth_type: string;
  under_hub: boolean;
  /** The gateway's name for this user (falls back to the Jupyter user). */
  user: string | null;
  /** Whether the gateway treats this user as an admin (may list everyone's clusters). */
  admin: boolean;
  version: string;
  gateway_version?: string | null;
  gateway_error?: string;
}

/** Kinds of events in a cluster's history (docs/protocol.md, "Events and logs"). */
export type ClusterEventKind =
  | 'created'
  | 'started'
  | 'scaled'
  | 'adapted'
  | 'worker_started'
  | 'worker_running'
  | 'worker_stopped'
  | 'worker_failed'
  | 'worker_deferred'
  | 'retrying'
  | 'stop_requested'
  | 'failed'
  | 'stopped';

/** One step of a cluster's life, as `GET clusters/<name>/events` lists them (oldest first). */
export interface IClusterEvent {
  /** Milliseconds since the epoch. */
  time: number | null;
  kind: ClusterEventKind | string;
  message: string;
  /** The worker it concerns, or null for the cluster itself. */
  worker: string | null;
}

/** `GET clusters/<name>/logs?process=...&tail=N`: the last lines of one process's log. */
export interface IClusterLogs {
  process: string;
  text: string;
  /** The processes that have logs: the scheduler, then current and recent workers. */
  processes: string[];
}

/** Scale and adapt replies: `ok` is false when a limit changed the request. */
export interface IScaleReply {
  ok: boolean;
  msg: string | null;
}

/** Where the model is: first load, showing data, or failing (with the last data kept). */
export type LoadState = 'loading' | 'ready' | 'error';

/** The read side of the model, for other extensions. */
export interface IDaskGatewayModel {
  readonly clusters: ReadonlyArray<IClusterInfo>;
  readonly config: IGatewayConfig | null;
  readonly state: LoadState;
  readonly changed: ISignal<IDaskGatewayModel, void>;
  refresh(): Promise<void>;
}

export const IDaskGatewayModel = new Token<IDaskGatewayModel>(
  'jupyterhub-dask-gateway:IDaskGatewayModel',
  'The clusters of the JupyterHub Dask Gateway this user can see.'
);

/** Every action of the panel is one of these commands (and in the palette). */
export namespace CommandIDs {
  export const open = 'dask-gateway:open';
  export const refresh = 'dask-gateway:refresh';
  export const newCluster = 'dask-gateway:new-cluster';
  export const createCluster = 'dask-gateway:create-cluster';
  export const scale = 'dask-gateway:scale-cluster';
  export const adapt = 'dask-gateway:adapt-cluster';
  export const stop = 'dask-gateway:stop-cluster';
  export const openDashboard = 'dask-gateway:open-dashboard';
  export const showInDaskLab = 'dask-gateway:show-in-dask-labextension';
  export const insertCode = 'dask-gateway:insert-code';
  export const showLogs = 'dask-gateway:show-logs';
  export const toggleAllUsers = 'dask-gateway:toggle-all-users';
}

/** dask-labextension's commands we drive when it is installed (it exports no token). */
export namespace DaskLabCommandIDs {
  export const populateDashboardUrl = 'dask:populate-dashboard-url';
  export const launchLayout = 'dask:launch-layout';
}

/** dask-labextension's settings id. */
export const DASK_LAB_PLUGIN_ID = 'dask-labextension:plugin';

/** The id of dask-labextension's sidebar (which holds its dashboard URL box). */
export const DASK_LAB_SIDEBAR_ID = 'dask-dashboard-launcher';
