/**
 * The data of one cluster's Logs view: its events (oldest first), which of its
 * processes have logs, and the last lines of the chosen one. It loads on
 * `refresh()` (the view's Refresh button, opening the view, choosing another
 * process or length) and announces every change on `changed`. Views read it;
 * the transport is `GatewayAPI`.
 */

import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { GatewayAPI, GatewayAPIError } from './api';
import { asAPIError } from './model';
import { IClusterEvent, IClusterInfo, LoadState } from './tokens';

/** How many lines the view offers to show. */
export const TAIL_CHOICES = [100, 500, 1000];

export namespace ClusterLogsModel {
  export interface IOptions {
    api: GatewayAPI;
    /** The cluster's name. */
    name: string;
    /** The cluster's card data, when the panel lists it (status, reason, owner). */
    info?: () => IClusterInfo | undefined;
    /** Lines of log to show (1 to 1000). */
    tail?: number;
  }
}

export class ClusterLogsModel implements IDisposable {
  constructor(options: ClusterLogsModel.IOptions) {
    this._api = options.api;
    this.name = options.name;
    this._info = options.info ?? (() => undefined);
    this._tail = options.tail ?? TAIL_CHOICES[0];
  }

  readonly name: string;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The cluster as the panel last listed it, if it does. */
  get info(): IClusterInfo | undefined {
    return this._info();
  }

  /** 'loading' until the first refresh is in, then 'ready' or 'error'. */
  get state(): LoadState {
    return this._state;
  }

  /** Whether a refresh is under way. */
  get busy(): boolean {
    return this._busy;
  }

  get events(): ReadonlyArray<IClusterEvent> {
    return this._events;
  }

  get eventsError(): GatewayAPIError | null {
    return this._eventsError;
  }

  /** The process whose log shows: 'scheduler' or a worker's name. */
  get process(): string {
    return this._process;
  }

  set process(process: string) {
    if (process !== this._process) {
      this._process = process;
      this._text = '';
      void this.refresh();
    }
  }

  /** The processes that have logs (the scheduler first). */
  get processes(): ReadonlyArray<string> {
    return this._processes;
  }

  get tail(): number {
    return this._tail;
  }

  set tail(tail: number) {
    if (tail !== this._tail) {
      this._tail = tail;
      void this.refresh();
    }
  }

  /** The last `tail` lines of the process's log. */
  get text(): string {
    return this._text;
  }

  get logsError(): GatewayAPIError | null {
    return this._logsError;
  }

  /** When the data was last loaded (ms since the epoch), or null. */
  get loadedAt(): number | null {
    return this._loadedAt;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Load the events and the chosen log; resolves once both answered. */
  async refresh(): Promise<void> {
    if (this._disposed) {
      return;
    }
    // a newer refresh (another process chosen meanwhile) wins over an older one
    const seq = ++this._seq;
    const process = this._process;
    this._busy = true;
    this._changed.emit();
    const [events, logs] = await Promise.allSettled([
      this._api.events(this.name),
      this._api.logs(this.name, process, this._tail)
    ]);
    if (this._disposed || seq !== this._seq) {
      return;
    }
    if (events.status === 'fulfilled') {
      this._events = events.value;
      this._eventsError = null;
    } else {
      this._eventsError = asAPIError(events.reason);
    }
    if (logs.status === 'fulfilled') {
      this._text = logs.value.text;
      this._processes = logs.value.processes.length
        ? logs.value.processes
        : [process];
      this._logsError = null;
    } else {
      this._text = '';
      this._logsError = asAPIError(logs.reason);
    }
    this._state = this._eventsError && this._logsError ? 'error' : 'ready';
    this._loadedAt = Date.now();
    this._busy = false;
    this._changed.emit();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    Signal.clearData(this);
  }

  private _api: GatewayAPI;
  private _busy = false;
  private _changed = new Signal<this, void>(this);
  private _disposed = false;
  private _events: IClusterEvent[] = [];
  private _eventsError: GatewayAPIError | null = null;
  private _info: () => IClusterInfo | undefined;
  private _loadedAt: number | null = null;
  private _logsError: GatewayAPIError | null = null;
  private _process = 'scheduler';
  private _processes: string[] = ['scheduler'];
  private _seq = 0;
  private _state: LoadState = 'loading';
  private _tail: number;
  private _text = '';
}
