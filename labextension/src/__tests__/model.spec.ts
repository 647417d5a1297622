/**
 * GatewayModel against a fake transport: loading, error and recovery, ordering,
 * actions in flight, standby while hidden, and change signals.
 */

import { GatewayAPI } from '../api';
import { GatewayModel, explainedStop, sortClusters } from '../model';
import { FakeRelay, cluster } from './fakeRelay';

const LISTED = 'status=PENDING%2CRUNNING%2CSTOPPING%2CFAILED%2CSTOPPED';
const NOW = 1_700_000_000_000;

function makeModel(relay: FakeRelay, showAll = false): GatewayModel {
  const model = new GatewayModel({
    api: new GatewayAPI(relay.settings()),
    refreshInterval: 3600,
    autoStart: false,
    showAll,
    now: () => NOW
  });
  model.visible = true;
  return model;
}

describe('GatewayModel', () => {
  let relay: FakeRelay;
  let model: GatewayModel;

  beforeEach(() => {
    relay = new FakeRelay();
  });

  afterEach(() => {
    model?.dispose();
  });

  it('starts loading, then lists clusters running first and newest first', async () => {
    relay.clusters = [
      cluster('old', { start_time: 1 }),
      cluster('pending', { status: 'PENDING', start_time: 5 }),
      cluster('new', { start_time: 3 })
    ];
    model = makeModel(relay);
    expect(model.state).toBe('loading');
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.refresh();
    expect(model.state).toBe('ready');
    expect(model.clusters.map(c => c.name)).toEqual(['new', 'old', 'pending']);
    expect(model.config?.user).toBe('alice');
    expect(changes).toBeGreaterThan(0);
    // config is fetched once, the list each time
    await model.refresh();
    expect(relay.paths()).toEqual([
      'GET config',
      `GET clusters?${LISTED}`,
      `GET clusters?${LISTED}`
    ]);
  });

  it('keeps the last list on an error, and recovers', async () => {
    relay.clusters = [cluster('a')];
    model = makeModel(relay);
    await model.refresh();
    relay.failure = {
      status: 502,
      body: { error: 'Cannot reach the Dask Gateway' }
    };
    await model.refresh();
    expect(model.state).toBe('error');
    expect(model.error?.message).toBe('Cannot reach the Dask Gateway');
    expect(model.clusters).toHaveLength(1);
    relay.failure = null;
    await model.refresh();
    expect(model.state).toBe('ready');
    expect(model.error).toBeNull();
  });

  it('reports an unconfigured server without listing', async () => {
    relay.config = {
      ...relay.config,
      configured: false,
      problem: 'No Dask Gateway is configured'
    };
    model = makeModel(relay);
    await model.refresh();
    expect(model.state).toBe('error');
    expect(model.error?.message).toBe('No Dask Gateway is configured');
    expect(relay.paths()).toEqual(['GET config']);
  });

  it('stands by while hidden', async () => {
    model = makeModel(relay);
    model.visible = false;
    await model.refresh();
    expect(relay.calls).toHaveLength(0);
    expect(model.state).toBe('loading');
    model.visible = true;
    await new Promise(resolve => setTimeout(resolve, 50));
    expect(model.state).toBe('ready');
  });

  it('marks actions in flight and refreshes after them', async () => {
    relay.clusters = [cluster('a')];
    model = makeModel(relay);
    await model.refresh();
    const seen: (string | undefined)[] = [];
    model.changed.connect(() => seen.push(model.pending('a')));
    const reply = await model.scale('a', 5);
    expect(reply).toEqual({ ok: true, msg: null });
    expect(seen[0]).toBe('scaling');
    expect(model.pending('a')).toBeUndefined();
    expect(model.cluster('a')?.target_workers).toBe(5);

    await model.adapt('a', 1, 3);
    expect(model.cluster('a')?.adaptive).toEqual({ minimum: 1, maximum: 3 });

    model.selected = 'a';
    await model.stop('a');
    expect(model.cluster('a')?.status).toBe('STOPPING');
    expect(model.selected).toBeNull();
  });

  it('creates, selects and lists a new cluster', async () => {
    model = makeModel(relay);
    await model.refresh();
    const name = await model.create({ worker_cores: 2 });
    expect(name).toBe('new1');
    expect(model.selected).toBe('new1');
    expect(model.cluster('new1')?.options).toEqual({ worker_cores: 2 });
  });

  it('loads the options spec once unless forced', async () => {
    model = makeModel(relay);
    expect(await model.loadOptions()).toHaveLength(6);
    await model.loadOptions();
    expect(relay.paths().filter(p => p === 'GET options')).toHaveLength(1);
    relay.failure = { status: 403, body: { error: 'forbidden' } };
    expect(await model.loadOptions(true)).toBeNull();
    expect(model.optionsError?.message).toBe('forbidden');
  });

  it("asks admins' for everyone's clusters when showAll is on", async () => {
    relay.config.admin = true;
    relay.clusters = [
      cluster('a1', { owner: 'alice' }),
      cluster('b1', { owner: 'bob' }),
      cluster('b2', { owner: 'bob', status: 'PENDING' })
    ];
    model = makeModel(relay);
    await model.refresh();
    expect(model.isAdmin).toBe(true);
    expect(model.allUsers).toBe(false);
    expect(model.shownClusters.map(c => c.name)).toEqual(['a1']);
    model.showAll = true;
    await model.refresh();
    expect(relay.paths()).toContain(`GET clusters?all=1&${LISTED}`);
    expect(model.allUsers).toBe(true);
    expect(model.owners).toEqual(['alice', 'bob']);
    expect(model.shownClusters.map(c => c.name)).toEqual(['a1', 'b1', 'b2']);
    model.ownerFilter = 'bob';
    expect(model.shownClusters.map(c => c.name)).toEqual(['b1', 'b2']);
    // the filter belongs to the all-users view
    model.showAll = false;
    expect(model.ownerFilter).toBeNull();
  });

  it("never asks for everyone's clusters for a non-admin", async () => {
    relay.clusters = [cluster('a1'), cluster('b1', { owner: 'bob' })];
    model = makeModel(relay, true);
    await model.refresh();
    expect(model.state).toBe('ready');
    expect(model.allUsers).toBe(false);
    expect(relay.paths().some(p => p.includes('all=1'))).toBe(false);
    expect(model.shownClusters.map(c => c.name)).toEqual(['a1']);
  });

  it('lists failed clusters for an hour after they failed', async () => {
    relay.clusters = [
      cluster('recent', {
        status: 'FAILED',
        stop_time: NOW - 10 * 60_000,
        reason: 'Scheduler process exited with status 1'
      }),
      cluster('old', { status: 'FAILED', stop_time: NOW - 2 * 3600_000 }),
      cluster('gone', { status: 'STOPPED', stop_time: NOW })
    ];
    model = makeModel(relay);
    await model.refresh();
    expect(model.clusters.map(c => c.name)).toEqual(['recent']);
    expect(model.cluster('recent')?.reason).toMatch(/exited/);
  });

  it('lists clusters the gateway stopped on its own, for an hour, with the reason', async () => {
    const hub =
      'because the last server of its owner alice stopped (culled, or stopped by ' +
      'the user or an admin) more than 300 s ago';
    relay.clusters = [
      cluster('hub', {
        status: 'STOPPED',
        stop_time: NOW - 5 * 60_000,
        reason: hub
      }),
      cluster('access', {
        status: 'STOPPED',
        stop_time: NOW - 20 * 60_000,
        reason: 'because its owner alice lost access to the gateway'
      }),
      cluster('user', {
        status: 'STOPPED',
        stop_time: NOW - 60_000,
        reason: 'requested by alice'
      }),
      cluster('silent', { status: 'STOPPED', stop_time: NOW, reason: '' }),
      cluster('old', {
        status: 'STOPPED',
        stop_time: NOW - 2 * 3600_000,
        reason: 'idle timeout'
      }),
      cluster('running')
    ];
    model = makeModel(relay);
    await model.refresh();
    expect(model.clusters.map(c => c.name)).toEqual([
      'running',
      'hub',
      'access'
    ]);
    expect(model.cluster('hub')?.reason).toBe(hub);
    expect(model.cluster('user')).toBeUndefined();
  });

  it('takes the window for failed and stopped clusters as an option', async () => {
    relay.clusters = [
      cluster('f', { status: 'FAILED', stop_time: NOW - 20 * 60_000 }),
      cluster('s', {
        status: 'STOPPED',
        stop_time: NOW - 20 * 60_000,
        reason: 'idle timeout'
      }),
      cluster('s2', {
        status: 'STOPPED',
        stop_time: NOW - 5 * 60_000,
        reason: 'Gateway shut down'
      })
    ];
    model = new GatewayModel({
      api: new GatewayAPI(relay.settings()),
      refreshInterval: 3600,
      autoStart: false,
      finishedVisibleFor: 600,
      now: () => NOW
    });
    model.visible = true;
    await model.refresh();
    expect(model.clusters.map(c => c.name)).toEqual(['s2']);
  });
});

describe('explainedStop', () => {
  it('keeps stops the user did not ask for', () => {
    const stopped = (reason: string) =>
      explainedStop(cluster('c', { status: 'STOPPED', reason }));
    expect(stopped('idle timeout')).toBe(true);
    expect(stopped('Gateway shut down')).toBe(true);
    expect(stopped('requested by admin')).toBe(false);
    expect(stopped('')).toBe(false);
    expect(
      explainedStop(cluster('c', { status: 'FAILED', reason: 'boom' }))
    ).toBe(false);
  });
});

describe('sortClusters', () => {
  it('orders by status, then newest first', () => {
    const sorted = sortClusters([
      cluster('f', { status: 'FAILED', start_time: 9 }),
      cluster('r1', { start_time: 1 }),
      cluster('r2', { start_time: 2 }),
      cluster('p', { status: 'PENDING' })
    ]);
    expect(sorted.map(c => c.name)).toEqual(['r2', 'r1', 'p', 'f']);
  });
});
