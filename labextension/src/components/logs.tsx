/**
 * The Logs view's React parts: the toolbar's process and length choosers, and the
 * body (the cluster's status and the reason it failed or was stopped, its events
 * with their times, the chosen process's last log lines in a `<pre>`). They render
 * what the `ClusterLogsModel` holds and re-render on its `changed` signal; nothing
 * here fetches.
 */

import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';
import { HTMLSelect } from '@jupyterlab/ui-components';

import { statusLabel } from './cluster';
import { errorMessage } from './panel';
import { formatEventTime, shortName } from '../format';
import { ClusterLogsModel, TAIL_CHOICES } from '../logs';
import { IClusterEvent } from '../tokens';

/** Re-render whenever the model changes. */
function useModel(model: ClusterLogsModel): void {
  const [, setVersion] = React.useState(0);
  React.useEffect(() => {
    const onChange = () => setVersion(v => v + 1);
    model.changed.connect(onChange);
    return () => {
      model.changed.disconnect(onChange);
    };
  }, [model]);
}

/** 'scheduler' → 'Scheduler'; a worker's name → 'Worker 0123456789ab…'. */
export function processLabel(
  process: string,
  trans: TranslationBundle
): string {
  return process === 'scheduler'
    ? trans.__('Scheduler')
    : trans.__('Worker %1', shortName(process));
}

export interface ILogsControlsProps {
  model: ClusterLogsModel;
  trans: TranslationBundle;
}

/** The toolbar's choosers: which process's log, and how many lines. */
export function LogsControls(props: ILogsControlsProps): JSX.Element {
  const { model, trans } = props;
  useModel(model);
  const processes = model.processes.includes(model.process)
    ? model.processes
    : [model.process, ...model.processes];
  return (
    <div className="jp-DaskGateway-logs-controls">
      <label>
        <span>{trans.__('Process')}</span>
        <HTMLSelect
          aria-label={trans.__('Process')}
          value={model.process}
          onChange={e => (model.process = e.currentTarget.value)}
        >
          {processes.map(p => (
            <option key={p} value={p} title={p}>
              {processLabel(p, trans)}
            </option>
          ))}
        </HTMLSelect>
      </label>
      <label>
        <span>{trans.__('Lines')}</span>
        <HTMLSelect
          aria-label={trans.__('Lines')}
          value={String(model.tail)}
          onChange={e => (model.tail = Number(e.currentTarget.value))}
        >
          {TAIL_CHOICES.map(n => (
            <option key={n} value={String(n)}>
              {trans.__('Last %1', n)}
            </option>
          ))}
        </HTMLSelect>
      </label>
    </div>
  );
}

export interface IClusterLogsProps {
  model: ClusterLogsModel;
  trans: TranslationBundle;
  /** The clock (ms since the epoch), for showing times of today without a date. */
  now?: () => number;
}

/** The body: status and reason, the events table, the log text. */
export function ClusterLogs(props: IClusterLogsProps): JSX.Element {
  const { model, trans } = props;
  const now = (props.now ?? Date.now)();
  useModel(model);
  const info = model.info;
  const id = `jp-DaskGateway-logs-${model.name}`;

  return (
    <div className="jp-DaskGateway-logs" aria-busy={model.busy}>
      <header className="jp-DaskGateway-logs-header">
        <h2 className="jp-DaskGateway-logs-title" title={model.name}>
          {trans.__('Cluster %1', model.name)}
        </h2>
        {info && (
          <div className="jp-DaskGateway-logs-meta">
            <span className="jp-DaskGateway-status" data-status={info.status}>
              {statusLabel(info.status, trans)}
            </span>
            {info.owner && <span>{trans.__('Owner: %1', info.owner)}</span>}
          </div>
        )}
        {info?.status === 'FAILED' && info.reason && (
          <div className="jp-DaskGateway-reason jp-mod-failed" role="note">
            <span className="jp-DaskGateway-reason-label">
              {trans.__('Failed:')}
            </span>{' '}
            <span className="jp-DaskGateway-reason-text">{info.reason}</span>
          </div>
        )}
        {info?.status === 'STOPPED' && info.reason && (
          <div className="jp-DaskGateway-reason jp-mod-stopped" role="note">
            <span className="jp-DaskGateway-reason-label">
              {trans.__('Stopped:')}
            </span>{' '}
            <span className="jp-DaskGateway-reason-text">{info.reason}</span>
          </div>
        )}
      </header>

      <section
        className="jp-DaskGateway-logs-section"
        aria-labelledby={`${id}-events`}
      >
        <h3 id={`${id}-events`} className="jp-DaskGateway-section-title">
          {trans.__('Events')}
        </h3>
        {model.eventsError ? (
          <div className="jp-DaskGateway-error" role="alert">
            {trans.__(
              'Cannot load the events: %1',
              errorMessage(model.eventsError, trans)
            )}
          </div>
        ) : model.state === 'loading' ? (
          <div className="jp-DaskGateway-state">{trans.__('Loading…')}</div>
        ) : model.events.length === 0 ? (
          <div className="jp-DaskGateway-state">{trans.__('No events.')}</div>
        ) : (
          <EventsTable events={model.events} now={now} trans={trans} />
        )}
      </section>

      <section
        className="jp-DaskGateway-logs-section"
        aria-labelledby={`${id}-log`}
      >
        <h3 id={`${id}-log`} className="jp-DaskGateway-section-title">
          {trans.__(
            'Log of %1 (last %2 lines)',
            processLabel(model.process, trans),
            model.tail
          )}
        </h3>
        {model.logsError ? (
          <div className="jp-DaskGateway-error" role="alert">
            {trans.__(
              'Cannot load the log: %1',
              errorMessage(model.logsError, trans)
            )}
          </div>
        ) : model.state === 'loading' ? (
          <div className="jp-DaskGateway-state">{trans.__('Loading…')}</div>
        ) : model.text ? (
          <pre
            className="jp-DaskGateway-log"
            tabIndex={0}
            aria-label={trans.__(
              'Log of %1',
              processLabel(model.process, trans)
            )}
          >
            {model.text}
          </pre>
        ) : (
          <div className="jp-DaskGateway-state">
            {trans.__('This process has written no log lines.')}
          </div>
        )}
      </section>
    </div>
  );
}

function EventsTable(props: {
  events: ReadonlyArray<IClusterEvent>;
  now: number;
  trans: TranslationBundle;
}): JSX.Element {
  const { events, now, trans } = props;
  return (
    <table className="jp-DaskGateway-events">
      <thead>
        <tr>
          <th scope="col">{trans.__('Time')}</th>
          <th scope="col">{trans.__('Event')}</th>
          <th scope="col">{trans.__('Worker')}</th>
          <th scope="col">{trans.__('Message')}</th>
        </tr>
      </thead>
      <tbody>
        {events.map((event, i) => (
          <tr key={i} data-kind={event.kind}>
            <td className="jp-DaskGateway-event-time">
              {event.time !== null && (
                <time
                  dateTime={new Date(event.time).toISOString()}
                  title={new Date(event.time).toString()}
                >
                  {formatEventTime(event.time, now)}
                </time>
              )}
            </td>
            <td className="jp-DaskGateway-event-kind">{event.kind}</td>
            <td
              className="jp-DaskGateway-event-worker"
              title={event.worker ?? ''}
            >
              {event.worker ? shortName(event.worker) : ''}
            </td>
            <td className="jp-DaskGateway-event-message">{event.message}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
