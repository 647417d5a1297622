/**
 * The Logs view over a real ClusterLogsModel and a fake transport: loading events
 * and log tails, choosing a process and a length, errors per section, the failure
 * reason, and the view's components (events table with times, log text in a <pre>).
 */

import * as React from 'react';
import {
  act,
  fireEvent,
  render,
  screen,
  waitFor,
  within
} from '@testing-library/react';
import { nullTranslator } from '@jupyterlab/translation';

import { GatewayAPI } from '../api';
import { ClusterLogs, LogsControls, processLabel } from '../components/logs';
import { formatEventTime } from '../format';
import { ClusterLogsModel } from '../logs';
import { FakeRelay, cluster } from './fakeRelay';

const trans = nullTranslator.load('jupyterhub_dask_gateway');
const NAME = '0123456789abcdef0123456789abcdef';
const WORKER = 'fedcba9876543210fedcba9876543210';
const T0 = new Date(2026, 11, 2, 9, 30, 0).getTime();

function setup(relay: FakeRelay, info = cluster(NAME)) {
  return new ClusterLogsModel({
    api: new GatewayAPI(relay.settings()),
    name: NAME,
    info: () => info
  });
}

function running(): FakeRelay {
  const relay = new FakeRelay();
  relay.clusters = [cluster(NAME)];
  relay.events[NAME] = [
    { time: T0, kind: 'created', message: 'Created by alice', worker: null },
    { time: T0 + 2000, kind: 'started', message: 'Scheduler up', worker: null },
    {
      time: T0 + 3000,
      kind: 'worker_started',
      message: 'Worker started',
      worker: WORKER
    }
  ];
  relay.logs[NAME] = {
    scheduler: Array.from({ length: 150 }, (_, i) => `sched ${i}`).join('\n'),
    [WORKER]: 'worker line'
  };
  return relay;
}

describe('ClusterLogsModel', () => {
  it('loads events and the scheduler log, then follows the chosen process', async () => {
    const relay = running();
    const model = setup(relay);
    expect(model.state).toBe('loading');
    await model.refresh();
    expect(model.state).toBe('ready');
    expect(model.events.map(e => e.kind)).toEqual([
      'created',
      'started',
      'worker_started'
    ]);
    expect(model.processes).toEqual(['scheduler', WORKER]);
    expect(model.text.split('\n')).toHaveLength(100);
    expect(model.text.endsWith('sched 149')).toBe(true);

    let changes = 0;
    model.changed.connect(() => changes++);
    model.process = WORKER;
    await waitFor(() => expect(model.text).toBe('worker line'));
    model.tail = 500;
    await waitFor(() => expect(model.busy).toBe(false));
    expect(changes).toBeGreaterThan(0);
    expect(relay.paths()).toContain(
      `GET clusters/${NAME}/logs?process=${WORKER}&tail=500`
    );
    model.dispose();
  });

  it('keeps each section’s error apart', async () => {
    const relay = running();
    delete relay.logs[NAME];
    const model = setup(relay);
    await model.refresh();
    expect(model.state).toBe('ready');
    expect(model.events).toHaveLength(3);
    expect(model.logsError?.status).toBe(404);
    relay.failure = {
      status: 403,
      body: { error: 'Only the owner and admins may read the events' }
    };
    await model.refresh();
    expect(model.state).toBe('error');
    expect(model.eventsError?.message).toMatch(/owner and admins/);
    model.dispose();
  });

  it('drops the answer of an older refresh', async () => {
    const relay = running();
    const model = setup(relay);
    const first = model.refresh();
    model.process = WORKER; // starts a newer refresh
    await first;
    await waitFor(() => expect(model.busy).toBe(false));
    expect(model.text).toBe('worker line');
    model.dispose();
  });
});

describe('ClusterLogs', () => {
  it('shows events with their times and the log in a <pre>', async () => {
    const relay = running();
    const model = setup(relay);
    render(<ClusterLogs model={model} trans={trans} now={() => T0} />);
    expect(screen.getAllByText('Loading…')).toHaveLength(2);
    await act(() => model.refresh());

    const events = screen.getByRole('region', { name: 'Events' });
    const rows = within(events).getAllByRole('row');
    expect(rows).toHaveLength(4); // header + 3
    expect(within(rows[1]).getByText('created')).toBeTruthy();
    expect(within(rows[1]).getByText('Created by alice')).toBeTruthy();
    const time = rows[1].querySelector('time')!;
    expect(time.getAttribute('dateTime')).toBe(new Date(T0).toISOString());
    expect(time.textContent).toBe(formatEventTime(T0, T0));
    expect(within(rows[3]).getByText('fedcba987654…')).toBeTruthy();

    const log = screen.getByLabelText('Log of Scheduler');
    expect(log.tagName).toBe('PRE');
    expect(log.textContent).toContain('sched 149');
    expect(
      screen.getByRole('region', { name: 'Log of Scheduler (last 100 lines)' })
    ).toBeTruthy();
    model.dispose();
  });

  it('says why the gateway stopped a cluster', async () => {
    const relay = new FakeRelay();
    const stopped = cluster(NAME, {
      status: 'STOPPED',
      reason: 'because its owner alice lost access to the gateway',
      workers: 0
    });
    relay.clusters = [stopped];
    relay.events[NAME] = [
      { time: T0, kind: 'created', message: 'Created', worker: null }
    ];
    relay.logs[NAME] = { scheduler: '' };
    const model = setup(relay, stopped);
    render(<ClusterLogs model={model} trans={trans} />);
    await act(() => model.refresh());
    expect(screen.getByText('Stopped')).toBeTruthy();
    expect(screen.getByRole('note').textContent).toBe(
      'Stopped: because its owner alice lost access to the gateway'
    );
    model.dispose();
  });

  it("shows a failed cluster's reason and says when a log is empty", async () => {
    const relay = new FakeRelay();
    const failed = cluster(NAME, {
      status: 'FAILED',
      reason: 'Could not start /nonexistent/python',
      workers: 0
    });
    relay.clusters = [failed];
    relay.events[NAME] = [
      { time: T0, kind: 'created', message: 'Created', worker: null },
      {
        time: T0 + 1000,
        kind: 'failed',
        message: 'Could not start /nonexistent/python',
        worker: null
      }
    ];
    relay.logs[NAME] = { scheduler: '' };
    const model = setup(relay, failed);
    render(<ClusterLogs model={model} trans={trans} />);
    await act(() => model.refresh());
    expect(screen.getByText('Failed')).toBeTruthy();
    expect(screen.getByRole('note').textContent).toBe(
      'Failed: Could not start /nonexistent/python'
    );
    expect(screen.getByText('failed').closest('tr')?.dataset.kind).toBe(
      'failed'
    );
    expect(
      screen.getByText('This process has written no log lines.')
    ).toBeTruthy();
    model.dispose();
  });

  it('explains errors per section', async () => {
    const relay = running();
    relay.failure = { status: 404, body: { error: 'Cluster x not found' } };
    const model = setup(relay);
    render(<ClusterLogs model={model} trans={trans} />);
    await act(() => model.refresh());
    const alerts = screen.getAllByRole('alert').map(a => a.textContent);
    expect(alerts).toEqual([
      'Cannot load the events: Cluster x not found',
      'Cannot load the log: Cluster x not found'
    ]);
    model.dispose();
  });
});

describe('LogsControls', () => {
  it('chooses the process and the number of lines', async () => {
    const relay = running();
    const model = setup(relay);
    render(<LogsControls model={model} trans={trans} />);
    await act(() => model.refresh());
    const process = screen.getByLabelText('Process') as HTMLSelectElement;
    expect([...process.options].map(o => o.textContent)).toEqual([
      'Scheduler',
      'Worker fedcba987654…'
    ]);
    fireEvent.change(process, { target: { value: WORKER } });
    await waitFor(() => expect(model.text).toBe('worker line'));
    fireEvent.change(screen.getByLabelText('Lines'), {
      target: { value: '1000' }
    });
    expect(model.tail).toBe(1000);
    await waitFor(() => expect(model.busy).toBe(false));
    expect(processLabel('scheduler', trans)).toBe('Scheduler');
    model.dispose();
  });
});
