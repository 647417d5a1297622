/**
 * The panel's data: the cluster list (active clusters, and failures and stops the
 * user did not ask for, for a while),
 * an admin's all-users view and its owner filter, the relay's config, the options
 * spec and the actions in flight. A `Poll` refreshes the list (backing off after errors,
 * standing by while the sidebar or the browser tab is hidden); every change is
 * announced on `changed`. Views read the model and call its actions; they never
 * fetch themselves. The transport is `GatewayAPI`.
 */

import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import { GatewayAPI, GatewayAPIError } from './api';
import {
  IClusterInfo,
  IDaskGatewayModel,
  IGatewayConfig,
  IOptionField,
  IScaleReply,
  LoadState
} from './tokens';

/**
 * The statuses the panel asks for: the active ones, failures (with their reason) and
 * stops (only those `explainedStop` keeps are shown).
 */
export const LISTED_STATUSES = [
  'PENDING',
  'RUNNING',
  'STOPPING',
  'FAILED',
  'STOPPED'
];

/**
 * Whether a stopped cluster is worth listing: the gateway stopped it for a reason of
 * its own (its owner's Hub server stopped or was culled, its owner lost access, idle
 * timeout, gateway shut down). A stop the user or an admin asked for ("requested by
 * ...") needs no explanation.
 */
export function explainedStop(cluster: IClusterInfo): boolean {
  const reason = (cluster.reason ?? '').trim();
  return (
    cluster.status === 'STOPPED' &&
    reason !== '' &&
    !reason.startsWith('requested by ')
  );
}

/** Whether a cluster has ended (failed or stopped): nothing left to act on. */
export function isFinished(cluster: IClusterInfo): boolean {
  return cluster.status === 'FAILED' || cluster.status === 'STOPPED';
}

/** What is being done to a cluster right now (shown on its card, blocks repeats). */
export type PendingAction = 'scaling' | 'adapting' | 'stopping';

export namespace GatewayModel {
  export interface IOptions {
    api: GatewayAPI;
    /** Seconds between refreshes while visible. */
    refreshInterval?: number;
    /** Longest interval, in seconds, after repeated errors. */
    maxRefreshInterval?: number;
    /** Admins: list every user's clusters (ignored for other users). */
    showAll?: boolean;
    /**
     * Seconds a finished cluster (failed, or stopped by the gateway for a reason the
     * user did not ask for) stays listed after it ended.
     */
    finishedVisibleFor?: number;
    /** The clock, in ms since the epoch (tests set it). */
    now?: () => number;
    /** Start polling right away (tests turn this off to drive `refresh`). */
    autoStart?: boolean;
  }
}

export class GatewayModel implements IDaskGatewayModel, IDisposable {
  constructor(options: GatewayModel.IOptions) {
    this._api = options.api;
    this._interval = (options.refreshInterval ?? 5) * 1000;
    this._max = (options.maxRefreshInterval ?? 60) * 1000;
    this._showAll = options.showAll ?? false;
    this._finishedVisibleFor = (options.finishedVisibleFor ?? 3600) * 1000;
    this._now = options.now ?? Date.now;
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this._load(),
      frequency: { interval: this._interval, backoff: true, max: this._max },
      name: 'jupyterhub-dask-gateway:clusters',
      // a hidden sidebar needs no data; 'when-hidden' also pauses in a hidden tab
      standby: () => !this._visible || 'when-hidden'
    });
  }

  get api(): GatewayAPI {
    return this._api;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get clusters(): ReadonlyArray<IClusterInfo> {
    return this._clusters;
  }

  get config(): IGatewayConfig | null {
    return this._config;
  }

  get state(): LoadState {
    return this._state;
  }

  /** The last refresh's error, while `state` is 'error'. */
  get error(): GatewayAPIError | null {
    return this._error;
  }

  get options(): IOptionField[] | null {
    return this._options;
  }

  get optionsError(): GatewayAPIError | null {
    return this._optionsError;
  }

  get selected(): string | null {
    return this._selected;
  }

  set selected(name: string | null) {
    if (name !== this._selected) {
      this._selected = name;
      this._changed.emit();
    }
  }

  /** Whether the sidebar shows; the poll stands by while it does not. */
  get visible(): boolean {
    return this._visible;
  }

  set visible(visible: boolean) {
    if (visible === this._visible) {
      return;
    }
    this._visible = visible;
    if (visible) {
      void this.refresh();
    }
  }

  get showAll(): boolean {
    return this._showAll;
  }

  set showAll(value: boolean) {
    if (value !== this._showAll) {
      this._showAll = value;
      this._ownerFilter = null;
      this._changed.emit();
      void this.refresh();
    }
  }

  /** Whether the gateway treats this user as an admin (known after the first load). */
  get isAdmin(): boolean {
    return this._config?.admin === true;
  }

  /** Whether the list holds every user's clusters: an admin who asked for them. */
  get allUsers(): boolean {
    return this._showAll && this.isAdmin;
  }

  /** In the all-users view: show only this owner's clusters (null: everyone's). */
  get ownerFilter(): string | null {
    return this._ownerFilter;
  }

  set ownerFilter(owner: string | null) {
    if (owner !== this._ownerFilter) {
      this._ownerFilter = owner;
      this._changed.emit();
    }
  }

  /** The owners of the listed clusters, sorted (for the filter). */
  get owners(): string[] {
    const owners = new Set<string>();
    for (const c of this._clusters) {
      if (c.owner) {
        owners.add(c.owner);
      }
    }
    return [...owners].sort();
  }

  /** The clusters the panel shows: the list, narrowed by the owner filter. */
  get shownClusters(): ReadonlyArray<IClusterInfo> {
    const owner = this.allUsers ? this._ownerFilter : null;
    return owner === null
      ? this._clusters
      : this._clusters.filter(c => c.owner === owner);
  }

  /** Change the refresh interval and backoff limit (seconds). */
  setFrequency(interval: number, max: number): void {
    this._interval = interval * 1000;
    this._max = Math.max(max * 1000, this._interval);
    this._poll.frequency = {
      interval: this._interval,
      backoff: true,
      max: this._max
    };
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  pending(name: string): PendingAction | undefined {
    return this._pending.get(name);
  }

  cluster(name: string): IClusterInfo | undefined {
    return this._clusters.find(c => c.name === name);
  }

  /** Refresh now; resolves after the new data (or error) is in. */
  async refresh(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    try {
      await this._poll.refresh();
      await this._poll.tick;
    } catch (error) {
      // a poll disposed meanwhile rejects its tick; nothing is waiting for data then
      if (!this.isDisposed) {
        throw error;
      }
    }
  }

  /** Load the options spec (once, unless forced). */
  async loadOptions(force = false): Promise<IOptionField[] | null> {
    if (this._options && !force) {
      return this._options;
    }
    try {
      this._options = await this._api.options();
      this._optionsError = null;
    } catch (error) {
      this._options = null;
      this._optionsError = asAPIError(error);
    }
    this._changed.emit();
    return this._options;
  }

  /** Ask for a new cluster; resolves with its name once the gateway accepted it. */
  async create(options: Record<string, unknown>): Promise<string> {
    const name = await this._api.createCluster(options);
    this._selected = name;
    await this.refresh();
    return name;
  }

  scale(name: string, count: number): Promise<IScaleReply> {
    return this._act(name, 'scaling', () => this._api.scale(name, count));
  }

  adapt(
    name: string,
    minimum: number | null,
    maximum: number | null
  ): Promise<IScaleReply> {
    return this._act(name, 'adapting', () =>
      this._api.adapt(name, minimum, maximum)
    );
  }

  async stop(name: string): Promise<void> {
    await this._act(name, 'stopping', () => this._api.stop(name));
    if (this._selected === name) {
      this._selected = null;
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    Signal.clearData(this);
  }

  private async _act<T>(
    name: string,
    action: PendingAction,
    call: () => Promise<T>
  ): Promise<T> {
    this._pending.set(name, action);
    this._changed.emit();
    try {
      return await call();
    } finally {
      this._pending.delete(name);
      // the list shows the effect; refresh also emits `changed`
      await this.refresh();
    }
  }

  private async _load(): Promise<void> {
    try {
      if (!this._config || !this._config.configured) {
        this._config = await this._api.config();
        if (!this._config.configured) {
          throw new GatewayAPIError(
            'server',
            503,
            this._config.problem ?? 'The Dask Gateway is not configured.'
          );
        }
      }
      const listed = await this._api.listClusters(
        this.allUsers,
        LISTED_STATUSES
      );
      // failures and unrequested stops stay a while, so that their reason can be
      // read, then go; stops the user or an admin asked for go at once
      const since = this._now() - this._finishedVisibleFor;
      this._clusters = sortClusters(
        listed.filter(c => {
          if (c.status === 'STOPPED' && !explainedStop(c)) {
            return false;
          }
          return !isFinished(c) || (c.stop_time ?? c.start_time ?? 0) >= since;
        })
      );
      this._state = 'ready';
      this._error = null;
      if (this._selected && !this.cluster(this._selected)) {
        this._selected = null;
      }
    } catch (error) {
      this._state = 'error';
      this._error = asAPIError(error);
      this._changed.emit();
      // rethrown so that the poll backs off
      throw this._error;
    }
    this._changed.emit();
  }

  private _api: GatewayAPI;
  private _changed = new Signal<this, void>(this);
  private _clusters: IClusterInfo[] = [];
  private _config: IGatewayConfig | null = null;
  private _error: GatewayAPIError | null = null;
  private _finishedVisibleFor: number;
  private _interval: number;
  private _max: number;
  private _now: () => number;
  private _options: IOptionField[] | null = null;
  private _optionsError: GatewayAPIError | null = null;
  private _ownerFilter: string | null = null;
  private _pending = new Map<string, PendingAction>();
  private _poll: Poll;
  private _selected: string | null = null;
  private _showAll: boolean;
  private _state: LoadState = 'loading';
  private _visible = false;
}

const STATUS_ORDER = ['RUNNING', 'PENDING', 'STOPPING', 'FAILED', 'STOPPED'];

/** Running first, then pending, ...; newest first within a status. */
export function sortClusters(clusters: IClusterInfo[]): IClusterInfo[] {
  return [...clusters].sort(
    (a, b) =>
      STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status) ||
      (b.start_time ?? 0) - (a.start_time ?? 0)
  );
}

export function asAPIError(error: unknown): GatewayAPIError {
  if (error instanceof GatewayAPIError) {
    return error;
  }
  return new GatewayAPIError('server', 0, String(error));
}
