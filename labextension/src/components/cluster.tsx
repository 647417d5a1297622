/**
 * A cluster's card: status, workers, cores, memory, age, owner and the reason it
 * failed or was stopped,
 * the action buttons (each runs a command: dashboard, lab panes, insert code, logs,
 * scale, stop) and the scale/adapt controls. Cards
 * render what the model holds; nothing here fetches.
 */

import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { TranslationBundle } from '@jupyterlab/translation';

import { formatAge, formatBytes, formatCores, shortName } from '../format';
import { PendingAction, isFinished } from '../model';
import { CommandIDs, IClusterInfo } from '../tokens';

export interface IClusterCardProps {
  cluster: IClusterInfo;
  selected: boolean;
  pending?: PendingAction;
  /** The signed-in user, to mark clusters of others (shared, or an admin's view). */
  user: string | null;
  /** Show the owner even of the user's own clusters (the all-users view). */
  showOwner?: boolean;
  commands: CommandRegistry;
  trans: TranslationBundle;
  /** Whether dask-labextension is there to show the dashboard in JupyterLab. */
  daskLab: boolean;
  onSelect: (name: string) => void;
}

/** The status as the user reads it ('PENDING' → 'Starting', ...). */
export function statusLabel(status: string, trans: TranslationBundle): string {
  switch (status) {
    case 'RUNNING':
      return trans.__('Running');
    case 'PENDING':
      return trans.__('Starting');
    case 'STOPPING':
      return trans.__('Stopping');
    case 'STOPPED':
      return trans.__('Stopped');
    case 'FAILED':
      return trans.__('Failed');
    default:
      return status;
  }
}

function pendingLabel(
  pending: PendingAction,
  trans: TranslationBundle
): string {
  switch (pending) {
    case 'scaling':
      return trans.__('Scaling…');
    case 'adapting':
      return trans.__('Adapting…');
    case 'stopping':
      return trans.__('Stopping…');
  }
}

function workersText(cluster: IClusterInfo, trans: TranslationBundle): string {
  if (cluster.workers === null) {
    return '–';
  }
  const target = cluster.target_workers;
  if (cluster.adaptive) {
    return trans.__(
      '%1 (adaptive %2–%3)',
      cluster.workers,
      cluster.adaptive.minimum ?? 0,
      cluster.adaptive.maximum ?? '∞'
    );
  }
  if (target !== null && target !== cluster.workers) {
    return trans.__('%1 of %2', cluster.workers, target);
  }
  return String(cluster.workers);
}

export function ClusterCard(props: IClusterCardProps): JSX.Element {
  const { cluster, selected, pending, user, commands, trans, daskLab } = props;
  const [showScale, setShowScale] = React.useState(false);
  const running = cluster.status === 'RUNNING';
  const active = running || cluster.status === 'PENDING';
  // a failed or stopped cluster has no dashboard left to open, nothing to scale or stop
  const finished = isFinished(cluster);
  const dashboard = !finished && !!cluster.dashboard_url;
  const args = { name: cluster.name };
  const run =
    (id: string, extra: Record<string, any> = {}) =>
    (event: React.MouseEvent) => {
      // the card's own click selects it; buttons only act
      event.stopPropagation();
      void commands.execute(id, { ...args, ...extra }).catch(() => {
        /* the command already told the user */
      });
    };
  const className =
    'jp-DaskGateway-cluster' + (selected ? ' jp-mod-selected' : '');
  return (
    <li
      className={className}
      data-cluster-name={cluster.name}
      aria-selected={selected}
      aria-label={trans.__('Cluster %1', cluster.name)}
      onClick={() => props.onSelect(cluster.name)}
    >
      <div className="jp-DaskGateway-cluster-header">
        <span className="jp-DaskGateway-cluster-name" title={cluster.name}>
          {shortName(cluster.name)}
        </span>
        <span
          className="jp-DaskGateway-status"
          data-status={cluster.status}
          title={cluster.status}
        >
          {pending
            ? pendingLabel(pending, trans)
            : statusLabel(cluster.status, trans)}
        </span>
      </div>
      {cluster.owner &&
        (props.showOwner || (user && cluster.owner !== user)) && (
          <div className="jp-DaskGateway-owner">
            {trans.__('Owner: %1', cluster.owner)}
          </div>
        )}
      <dl className="jp-DaskGateway-stats">
        <Stat label={trans.__('Workers')} value={workersText(cluster, trans)} />
        <Stat label={trans.__('Cores')} value={formatCores(cluster.cores)} />
        <Stat label={trans.__('Memory')} value={formatBytes(cluster.memory)} />
        <Stat label={trans.__('Age')} value={formatAge(cluster.age, trans)} />
      </dl>
      {cluster.reason && (
        <div
          className={
            'jp-DaskGateway-reason' +
            (cluster.status === 'FAILED'
              ? ' jp-mod-failed'
              : cluster.status === 'STOPPED'
                ? ' jp-mod-stopped'
                : '')
          }
        >
          {cluster.status === 'FAILED' && (
            <span className="jp-DaskGateway-reason-label">
              {trans.__('Failed:')}{' '}
            </span>
          )}
          {cluster.status === 'STOPPED' && (
            <span className="jp-DaskGateway-reason-label">
              {trans.__('Stopped:')}{' '}
            </span>
          )}
          <span className="jp-DaskGateway-reason-text">{cluster.reason}</span>
        </div>
      )}
      <div className="jp-DaskGateway-actions">
        <button
          className="jp-DaskGateway-button"
          disabled={!dashboard}
          title={trans.__('Open the dashboard in a new browser tab')}
          onClick={run(CommandIDs.openDashboard)}
        >
          {trans.__('Dashboard')}
        </button>
        {daskLab && (
          <button
            className="jp-DaskGateway-button"
            disabled={!dashboard}
            title={trans.__("Show the dashboard's panes in JupyterLab")}
            onClick={run(CommandIDs.showInDaskLab)}
          >
            {trans.__('Lab panes')}
          </button>
        )}
        <button
          className="jp-DaskGateway-button"
          disabled={!active}
          title={trans.__('Insert code that connects to this cluster')}
          onClick={run(CommandIDs.insertCode)}
        >
          {trans.__('Insert code')}
        </button>
        <button
          className="jp-DaskGateway-button"
          title={trans.__("Show the cluster's events and logs")}
          onClick={run(CommandIDs.showLogs)}
        >
          {trans.__('Logs')}
        </button>
        <button
          className="jp-DaskGateway-button"
          disabled={!running || !!pending}
          aria-expanded={showScale}
          onClick={event => {
            event.stopPropagation();
            setShowScale(!showScale);
          }}
        >
          {trans.__('Scale…')}
        </button>
        <button
          className="jp-DaskGateway-button jp-mod-warn"
          disabled={!active || pending === 'stopping'}
          onClick={run(CommandIDs.stop)}
        >
          {trans.__('Stop')}
        </button>
      </div>
      {showScale && running && (
        <ScaleControls
          cluster={cluster}
          disabled={!!pending}
          trans={trans}
          onScale={count =>
            commands.execute(CommandIDs.scale, { ...args, count })
          }
          onAdapt={(minimum, maximum) =>
            commands.execute(CommandIDs.adapt, { ...args, minimum, maximum })
          }
        />
      )}
    </li>
  );
}

function Stat(props: { label: string; value: string }): JSX.Element {
  return (
    <div>
      <dt className="jp-DaskGateway-stat-label">{props.label}</dt>
      <dd className="jp-DaskGateway-stat-value">{props.value}</dd>
    </div>
  );
}

/** A non-negative whole number from an input, or undefined. */
export function parseCount(text: string): number | undefined {
  const trimmed = text.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : undefined;
}

export interface IScaleControlsProps {
  cluster: IClusterInfo;
  disabled: boolean;
  trans: TranslationBundle;
  onScale: (count: number) => Promise<unknown>;
  onAdapt: (minimum: number, maximum: number) => Promise<unknown>;
}

/** Fixed size, or adaptive between a minimum and a maximum. */
export function ScaleControls(props: IScaleControlsProps): JSX.Element {
  const { cluster, disabled, trans } = props;
  const [count, setCount] = React.useState(
    String(cluster.target_workers ?? cluster.workers ?? 0)
  );
  const [minimum, setMinimum] = React.useState(
    String(cluster.adaptive?.minimum ?? 0)
  );
  const [maximum, setMaximum] = React.useState(
    String(cluster.adaptive?.maximum ?? Math.max(1, cluster.workers ?? 1))
  );
  const [error, setError] = React.useState<string | null>(null);

  const n = parseCount(count);
  const lo = parseCount(minimum);
  const hi = parseCount(maximum);
  const countError =
    n === undefined ? trans.__('Workers must be a whole number ≥ 0') : null;
  const adaptError =
    lo === undefined || hi === undefined
      ? trans.__('Minimum and maximum must be whole numbers ≥ 0')
      : lo > hi
        ? trans.__('The minimum must not exceed the maximum')
        : null;

  const stop = (event: React.SyntheticEvent) => event.stopPropagation();
  const act = (call: () => Promise<unknown>) => {
    setError(null);
    call().catch(e => setError((e as Error).message ?? String(e)));
  };
  return (
    <div
      className="jp-DaskGateway-scale"
      onClick={stop}
      role="group"
      aria-label={trans.__('Scale cluster')}
    >
      <label htmlFor={`scale-${cluster.name}`}>{trans.__('Workers')}</label>
      <input
        id={`scale-${cluster.name}`}
        type="number"
        min={0}
        value={count}
        className={countError ? 'jp-mod-invalid' : ''}
        aria-label={trans.__('Number of workers')}
        onChange={e => setCount(e.currentTarget.value)}
      />
      <span />
      <button
        className="jp-DaskGateway-button"
        disabled={disabled || n === undefined}
        onClick={() => act(() => props.onScale(n!))}
      >
        {trans.__('Scale')}
      </button>
      <label>{trans.__('Adaptive')}</label>
      <input
        type="number"
        min={0}
        value={minimum}
        className={adaptError ? 'jp-mod-invalid' : ''}
        aria-label={trans.__('Minimum workers')}
        onChange={e => setMinimum(e.currentTarget.value)}
      />
      <input
        type="number"
        min={0}
        value={maximum}
        className={adaptError ? 'jp-mod-invalid' : ''}
        aria-label={trans.__('Maximum workers')}
        onChange={e => setMaximum(e.currentTarget.value)}
      />
      <button
        className="jp-DaskGateway-button"
        disabled={disabled || adaptError !== null}
        onClick={() => act(() => props.onAdapt(lo!, hi!))}
      >
        {trans.__('Adapt')}
      </button>
      {(countError || adaptError || error) && (
        <span className="jp-DaskGateway-validation" role="alert">
          {error ?? countError ?? adaptError}
        </span>
      )}
    </div>
  );
}
